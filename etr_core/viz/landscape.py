"""Plotly figures of second-order steps on 2-D landscapes (appendix B, Figs. 7 and 8; Algorithm 1).

* :func:`local_steps_figure` -- level sets of ``f``, the quadratic model's level sets at the chosen
  point (dashed), the trust region (exact circle or ellipse) and the Newton / TR / GN / SFN steps.
* :func:`paths_figure` -- whole runs from one start with the (ellipsoidal) trust region drawn at each
  iterate (one NaN-separated polyline per method).
* :func:`run_history_figure` -- gradient norm, radius, rho and CG iterations per iteration.

Axes are equally scaled (``scaleanchor``) wherever geometry is drawn, so circles look round. Large
coordinate arrays are sent as float32 numpy arrays, which Plotly binary-encodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from etr_core._validation import check_int, check_positive
from etr_core.toy.ellipses import ellipse_boundary, stacked_ellipse_polylines
from etr_core.toy.functions import ToyFunction
from etr_core.toy.local_models import LocalStep, QuadraticModel
from etr_core.toy.second_order import RunHistory

__all__ = [
    "RHO_CLIP",
    "RUN_COLOURS",
    "STEP_COLOURS",
    "figure_payload_bytes",
    "function_level_sets",
    "local_steps_figure",
    "model_level_sets",
    "paths_figure",
    "region_name",
    "run_history_figure",
    "step_trace_name",
]

Box = tuple[float, float, float, float]

STEP_COLOURS = {
    "newton": "#d62728",
    "trust_region": "#2ca02c",
    "gauss_newton": "#9467bd",
    "saddle_free_newton": "#ff7f0e",
}
# TR colours match the live-training figures so a method looks the same on every page.
RUN_COLOURS = {
    "newton": "#d62728",
    "gd": "#7f7f7f",
    "tr_uniform": "#4C78A8",
    "tr_adagrad": "#F58518",
    "tr_rms": "#8E44AD",
}
MODEL_COLOUR = "#1f77b4"
RHO_CLIP = (-1.0, 2.0)
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
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        title=title,
        xaxis={"range": [box[0], box[1]], "title": "w₀", "constrain": "domain"},
        yaxis={
            "range": [box[2], box[3]],
            "title": "w₁",
            "scaleanchor": "x",
            "scaleratio": 1,
            "constrain": "domain",
        },
        legend={"orientation": "h", "yanchor": "top", "y": -0.08, "x": 0},
        plot_bgcolor="white",
    )


def local_steps_figure(
    fn: ToyFunction,
    w: np.ndarray | Sequence[float],
    steps: Mapping[str, LocalStep],
    *,
    box: Box | None = None,
    region: tuple[float, np.ndarray | None] | None = None,
    models: Mapping[str, LocalStep] | None = None,
    height: int = 560,
    title: str | None = None,
) -> go.Figure:
    """Fig. 7 / Fig. 8 at the point ``w``: level sets of ``fn``, the dashed level sets of the models of the
    steps in ``models`` (dashed), the trust region ``region = (radius, m or None)`` around ``w``, and one
    arrow per defined step (undefined steps are listed in the legend as "(undefined)")."""
    box = fn.view if box is None else box
    w = np.asarray(w, dtype=np.float64).reshape(2)
    fig = go.Figure()
    fig.add_trace(function_level_sets(fn, box))
    for key, st in (models or {}).items():
        colour = MODEL_COLOUR if key in ("newton", "trust_region") else STEP_COLOURS.get(key, MODEL_COLOUR)
        fig.add_trace(model_level_sets(st.model, box, f"model of {st.label} (B = {st.model.label})", colour))
    if region is not None:
        radius, m = region
        xy = _region_xy(w, check_positive("radius", radius), m)
        fig.add_trace(
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="lines",
                name=region_name(m),
                line={"color": STEP_COLOURS["trust_region"], "width": 2, "dash": "dash"},
            )
        )
    for trace in _critical_point_traces(fn, box):
        fig.add_trace(trace)
    for key, st in steps.items():
        colour = STEP_COLOURS.get(key, "#333333")
        if st.step is None:
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=f"{st.label} step (undefined)",
                    marker={"color": colour},
                )
            )
            continue
        end = st.target
        fig.add_trace(
            go.Scatter(
                x=[w[0], end[0]],
                y=[w[1], end[1]],
                mode="lines+markers",
                name=step_trace_name(st),
                line={"color": colour, "width": 3},
                marker={
                    "symbol": ["circle", "arrow"],
                    "size": [4, 15],
                    "angleref": "previous",
                    "color": colour,
                },
                hovertemplate=f"{st.label}: w + s = (%{{x:.4g}}, %{{y:.4g}})<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[w[0]],
            y=[w[1]],
            mode="markers",
            name="current point w",
            marker={"size": 12, "color": "black", "symbol": "circle-open", "line": {"width": 3}},
        )
    )
    _geometry_layout(fig, box, height, title)
    return fig


def _shown(n: int, max_regions: int) -> np.ndarray:
    every = max(1, math.ceil(n / max_regions))
    return np.arange(0, n, every)


def paths_figure(
    fn: ToyFunction,
    runs: Mapping[str, RunHistory],
    *,
    box: Box | None = None,
    show_regions: bool = True,
    max_regions: int = 40,
    height: int = 560,
    title: str | None = None,
) -> go.Figure:
    """Paths of several runs from one start over the level sets of ``fn``; with ``show_regions`` each
    TR run also draws its trust region ``||s||_{M_t} <= radius_t`` at (up to ``max_regions``, evenly
    spaced) iterates, as one polyline trace named ``"<label> trust regions"``."""
    max_regions = check_int("max_regions", max_regions, minimum=1)
    box = fn.view if box is None else box
    fig = go.Figure()
    fig.add_trace(function_level_sets(fn, box))
    for trace in _critical_point_traces(fn, box):
        fig.add_trace(trace)
    for key, run in runs.items():
        colour = RUN_COLOURS.get(key, "#333333")
        if show_regions and run.nit > 0 and np.all(np.isfinite(run.radius)):
            idx = _shown(run.nit, max_regions)
            shapes = np.zeros((len(idx), 2, 2))
            shapes[:, 0, 0], shapes[:, 1, 1] = run.m[idx, 0], run.m[idx, 1]
            x, y = stacked_ellipse_polylines(run.iterates[idx], shapes, run.radius[idx], n_points=64)
            fig.add_trace(
                go.Scatter(
                    x=_f32(x),
                    y=_f32(y),
                    mode="lines",
                    name=f"{run.label} trust regions",
                    legendgroup=key,
                    line={"color": colour, "width": 1, "dash": "dot"},
                    hoverinfo="skip",
                    connectgaps=False,
                )
            )
        pts = run.iterates
        fig.add_trace(
            go.Scatter(
                x=_f32(pts[:, 0]),
                y=_f32(pts[:, 1]),
                mode="lines+markers",
                name=run.label,
                legendgroup=key,
                line={"color": colour, "width": 2},
                marker={"size": 5, "color": colour},
                customdata=np.arange(len(pts)),
                hovertemplate=f"{run.label} iterate %{{customdata}}: (%{{x:.4g}}, %{{y:.4g}})<extra></extra>",
            )
        )
    if runs:
        start = next(iter(runs.values())).iterates[0]
        fig.add_trace(
            go.Scatter(
                x=[start[0]],
                y=[start[1]],
                mode="markers",
                name="start",
                marker={"size": 12, "color": "black", "symbol": "circle-open", "line": {"width": 3}},
            )
        )
    _geometry_layout(fig, box, height, title)
    return fig


_HISTORY_PANELS = (
    ("gradient norm ‖∇f(w_t)‖", "log"),
    ("radius Δ_t", "log"),
    ("ρ_t (clipped)", "linear"),
    ("CG iterations per step", "linear"),
)


def _history_layout(height: int) -> dict:
    """Four stacked panels sharing the x axis (a hand-made layout: ``make_subplots`` costs ~50 ms)."""
    gap = 0.05
    size = (1.0 - gap * (len(_HISTORY_PANELS) - 1)) / len(_HISTORY_PANELS)
    layout: dict = {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.03, "x": 0},
        "annotations": [],
    }
    for i, (title, scale) in enumerate(_HISTORY_PANELS):
        top = 1.0 - i * (size + gap)
        suffix = "" if i == 0 else str(i + 1)
        layout[f"yaxis{suffix}"] = {
            "domain": [max(top - size, 0.0), min(top, 1.0)],
            "type": scale,
            "anchor": f"x{suffix}",
            "exponentformat": "power",
        }
        layout[f"xaxis{suffix}"] = {
            "anchor": f"y{suffix}",
            "matches": "x" if i else None,
            "showticklabels": i == len(_HISTORY_PANELS) - 1,
        }
        layout["annotations"].append(
            {
                "text": title,
                "x": 0.5,
                "y": top,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
            }
        )
    layout["yaxis3"]["range"] = [RHO_CLIP[0] - 0.1, RHO_CLIP[1] + 0.1]
    layout[f"xaxis{len(_HISTORY_PANELS)}"]["title"] = {"text": "iteration t"}
    return layout


def run_history_figure(runs: Mapping[str, RunHistory], *, height: int = 620) -> go.Figure:
    """Per iteration: ``||grad f||`` (log), the radius ``Delta_t`` (log), ``rho_t`` (clipped to
    :data:`RHO_CLIP`, rejected steps as crosses) and CG iterations; Newton and GD appear in the first
    panel only."""
    traces = []
    for key, run in runs.items():
        colour = RUN_COLOURS.get(key, "#333333")
        it = np.arange(len(run.grad_norm))
        g = np.where(run.grad_norm > 0, run.grad_norm, np.nan)
        traces.append(
            go.Scatter(x=it, y=_f32(g), mode="lines", name=run.label, legendgroup=key, line={"color": colour})
        )
        if run.nit == 0 or not np.any(np.isfinite(run.radius)):
            continue
        k = np.arange(run.nit)
        rho = np.clip(
            np.nan_to_num(run.rho, nan=RHO_CLIP[0], neginf=RHO_CLIP[0], posinf=RHO_CLIP[1]), *RHO_CLIP
        )
        common = {"legendgroup": key, "showlegend": False}
        traces += [
            go.Scatter(
                x=k,
                y=_f32(run.radius),
                mode="lines",
                name=f"{run.label} radius",
                xaxis="x2",
                yaxis="y2",
                line={"color": colour, "shape": "hv"},
                **common,
            ),
            go.Scatter(
                x=k,
                y=_f32(rho),
                mode="markers",
                name=f"{run.label} rho",
                xaxis="x3",
                yaxis="y3",
                marker={"color": colour, "symbol": np.where(run.accepted, "circle", "x"), "size": 6},
                **common,
            ),
            go.Scatter(
                x=k,
                y=run.cg_iterations,
                mode="lines+markers",
                name=f"{run.label} CG",
                xaxis="x4",
                yaxis="y4",
                line={"color": colour, "shape": "hv"},
                marker={"size": 4},
                **common,
            ),
        ]
    return go.Figure(data=traces, layout=_history_layout(height))


def figure_payload_bytes(fig: go.Figure) -> int:
    """Size in bytes of the figure's JSON as sent to the browser."""
    return len(fig.to_json().encode("utf-8"))
