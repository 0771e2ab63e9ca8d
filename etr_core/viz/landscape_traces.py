"""Building blocks of the 2-D landscape figures (appendix B, Figs. 7 and 8; Algorithm 1): level sets of
``f`` and of a quadratic model, trust-region outlines, critical-point markers, the shared colours and
the equal-aspect layout. The figures themselves are in :mod:`etr_core.viz.landscape`."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from etr_core._validation import check_int
from etr_core.toy.ellipses import ellipse_boundary
from etr_core.toy.functions import ToyFunction
from etr_core.toy.local_models import LocalStep, QuadraticModel
from etr_core.toy.second_order import METHOD_LABELS
from etr_core.viz.palette import OKABE_ITO, TOL_MUTED, method_colour

__all__ = [
    "CRITICAL_MARKERS",
    "MODEL_COLOUR",
    "RUN_COLOURS",
    "STEP_COLOURS",
    "Box",
    "function_level_sets",
    "model_level_sets",
    "region_name",
    "step_trace_name",
]

Box = tuple[float, float, float, float]

# The shared colour-blind-safe palette: Newton and the TR methods keep their colour on every page.
STEP_COLOURS = {
    "newton": method_colour("Newton"),
    "trust_region": method_colour("TR_uni"),
    "gauss_newton": OKABE_ITO["reddish_purple"],
    "saddle_free_newton": OKABE_ITO["orange"],
}
RUN_COLOURS = {key: method_colour(label) for key, label in METHOD_LABELS.items()}
MODEL_COLOUR = TOL_MUTED["cyan"]
CRITICAL_MARKERS = {
    "minimum": ("star", "#111111"),
    "saddle": ("x", "#111111"),
    "maximum": ("triangle-up", "#111111"),
}


def _f32(a: np.ndarray) -> np.ndarray:
    """float32 for a smaller payload; values beyond float32's range (diverged runs) become gaps (NaN)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.abs(a) < np.finfo(np.float32).max, a, np.nan).astype(np.float32)


def step_trace_name(step: LocalStep) -> str:
    """Legend name of a step's arrow, e.g. ``"Newton step"``."""
    return f"{step.label} step"


def region_name(m: np.ndarray | None) -> str:
    """Legend name of the trust-region boundary."""
    return "trust region (sphere)" if m is None else "trust region (ellipse)"


def _grid(box: Box, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.linspace(box[0], box[1], n)
    ys = np.linspace(box[2], box[3], n)
    X, Y = np.meshgrid(xs, ys)
    return xs, ys, np.stack([X, Y], axis=-1)


def _levels(z: np.ndarray, n_levels: int) -> dict:
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return {"start": 0.0, "end": 1.0, "size": 1.0}
    lo, hi = (float(v) for v in np.quantile(finite, [0.01, 0.97]))
    if not hi > lo:
        hi = lo + 1.0
    return {"start": lo, "end": hi, "size": (hi - lo) / n_levels}


def function_level_sets(fn: ToyFunction, box: Box, n: int = 121, n_levels: int = 24) -> go.Contour:
    """Level sets of ``f`` over ``box`` as line contours (log10 of ``f - f_min`` for steep valleys)."""
    n = check_int("n", n, minimum=8, maximum=1000)
    xs, ys, W = _grid(box, n)
    with np.errstate(all="ignore"):
        z = np.asarray(fn.value(W), dtype=np.float64)
    name = "level sets of f"
    if fn.log_levels and fn.min_value is not None:
        z = np.log10(np.maximum(z - fn.min_value, 0.0) + 1e-3)
        name = "level sets of f (log scale)"
    return go.Contour(
        x=_f32(xs),
        y=_f32(ys),
        z=_f32(z),
        name=name,
        showscale=False,
        showlegend=True,
        contours={"coloring": "lines", **_levels(z, n_levels)},
        colorscale=[[0, "#bdbdbd"], [1, "#525252"]],
        line={"width": 1},
        hoverinfo="skip",
    )


def model_level_sets(
    model: QuadraticModel, box: Box, name: str, colour: str = MODEL_COLOUR, n: int = 81, n_levels: int = 10
) -> go.Contour:
    """Dashed level sets of a quadratic model ``m(w - w_t)`` (paper Fig. 7's blue dashed lines). The
    levels span the model's values within a quarter of the view's width of ``w_t``, so the rings show
    the model's shape where it is meant to be trusted instead of crowding the whole picture."""
    xs, ys, W = _grid(box, n)
    with np.errstate(all="ignore"):
        z = np.asarray(model.at_points(W), dtype=np.float64)
    near = np.linalg.norm(W - model.center, axis=-1) <= 0.25 * max(box[1] - box[0], box[3] - box[2])
    local = z[near & np.isfinite(z)]
    levels = _levels(local if local.size >= 4 else z, n_levels)
    return go.Contour(
        x=_f32(xs),
        y=_f32(ys),
        z=_f32(z),
        name=name,
        showscale=False,
        showlegend=True,
        contours={"coloring": "lines", **levels},
        colorscale=[[0, colour], [1, colour]],
        line={"width": 1, "dash": "dash"},
        hoverinfo="skip",
    )


def _region_xy(center: np.ndarray, radius: float, m: np.ndarray | None, n_points: int = 180) -> np.ndarray:
    A = np.eye(2) if m is None else np.diag(np.asarray(m, dtype=np.float64))
    return ellipse_boundary(A, radius, center, n_points=n_points)


def _critical_point_traces(fn: ToyFunction, box: Box) -> list[go.Scatter]:
    traces = []
    for kind, (symbol, colour) in CRITICAL_MARKERS.items():
        pts = [p for p in fn.points_of_kind(kind) if box[0] <= p[0] <= box[1] and box[2] <= p[1] <= box[3]]
        if pts:
            arr = np.array(pts)
            traces.append(
                go.Scatter(
                    x=arr[:, 0],
                    y=arr[:, 1],
                    mode="markers",
                    name=f"{kind} of f",
                    marker={
                        "symbol": symbol,
                        "size": 11,
                        "color": colour,
                        "line": {"width": 1, "color": "white"},
                    },
                )
            )
    return traces


def _geometry_layout(fig: go.Figure, box: Box, height: int, title: str | None) -> None:
    fig.update_layout(
        height=height,
        margin={"l": 50, "r": 10, "t": 40 if title else 10, "b": 50},
        font={"size": 15},
        title=title,
        xaxis={"range": [box[0], box[1]], "title": "w₀", "constrain": "domain"},
        yaxis={
            "range": [box[2], box[3]],
            "title": "w₁",
            "scaleanchor": "x",
            "scaleratio": 1,
            "constrain": "domain",
        },
        # above the plot: a legend below it collided with the x-axis title
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        plot_bgcolor="white",
    )
