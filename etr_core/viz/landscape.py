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
from etr_core.toy.second_order import METHOD_LABELS, RunHistory
from etr_core.toy.step_detail import StepDetail
from etr_core.viz.geometry import click_grid
from etr_core.viz.history import RHO_CLIP, run_history_figure
from etr_core.viz.palette import OKABE_ITO, TOL_MUTED, method_colour

__all__ = [
    "RHO_CLIP",
    "RUN_COLOURS",
    "STEP_COLOURS",
    "add_click_grid",
    "add_playback",
    "add_step_overlay",
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


def local_steps_figure(
    fn: ToyFunction,
    w: np.ndarray | Sequence[float],
    steps: Mapping[str, LocalStep],
    *,
    box: Box | None = None,
    region: tuple[float, np.ndarray | None] | None = None,
    models: Mapping[str, LocalStep] | None = None,
    height: int = 680,
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
    max_regions: int = 15,
    height: int = 680,
    title: str | None = None,
    click_box: Box | None = None,
    step: StepDetail | None = None,
    animate: bool = True,
    max_frames: int = 40,
) -> go.Figure:
    """Paths of several runs from one start over the level sets of ``fn``; with ``show_regions`` each
    TR run also draws its trust region ``||s||_{M_t} <= radius_t`` at (up to ``max_regions``, evenly
    spaced, semi-transparent) iterates, as one polyline trace named ``"<label> trust regions"``.

    ``step`` overlays one iteration (the Step view): the model's level sets at ``w_t``, the region
    and the CG iterates. ``animate`` adds Play and an iteration slider (at most ``max_frames`` frames;
    frame ``k`` shows iterates ``0..k`` and each TR run's region at ``w_k``). ``click_box`` adds the
    invisible grid of clickable points (:func:`etr_core.viz.geometry.click_grid`)."""
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
                    opacity=0.5,
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
                line={"color": colour, "width": 2.5},
                marker={"size": 6, "color": colour},
                unselected={"marker": {"opacity": 1}},
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
    if step is not None:
        add_step_overlay(fig, step, box)
    if animate and runs:
        add_playback(fig, runs, max_frames)
    if click_box is not None:
        add_click_grid(fig, click_box)
    _geometry_layout(fig, box, height, title)
    return fig


def add_click_grid(fig: go.Figure, box: Box) -> None:
    """An invisible grid of clickable points over ``box`` (click-to-start), as the last trace."""
    gx, gy = click_grid(box, step=max(box[1] - box[0], box[3] - box[2]) / 60)
    fig.add_trace(go.Scatter(x=_f32(gx), y=_f32(gy), mode="markers", name="click to start here",
                             showlegend=False, marker={"size": 10, "opacity": 0},
                             selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}},
                             hovertemplate="start here: (%{x:.3g}, %{y:.3g})<extra></extra>"))


def add_step_overlay(fig: go.Figure, step: StepDetail, box: Box) -> None:
    """The Step view of iteration ``t``: model level sets at ``w_t``, the region, the CG iterates."""
    colour = STEP_COLOURS["trust_region"]
    fig.add_trace(model_level_sets(step.model, box, f"model at w_{step.iteration}"))
    xy = _region_xy(step.centre, step.radius, step.m)
    fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", name=f"region at w_{step.iteration}",
                             line={"color": colour, "width": 3, "dash": "dash"}, hoverinfo="skip"))
    cg = step.cg_points
    fig.add_trace(go.Scatter(
        x=cg[:, 0], y=cg[:, 1], mode="lines+markers", name=f"CG iterates of step {step.iteration}",
        line={"color": "black", "width": 2}, unselected={"marker": {"opacity": 1}},
        marker={"size": 9, "symbol": "diamond", "color": "black"},
        customdata=np.arange(len(cg)),
        hovertemplate="CG iterate %{customdata}: (%{x:.4g}, %{y:.4g})<extra></extra>"))


def add_playback(fig: go.Figure, runs: Mapping[str, RunHistory], max_frames: int = 40) -> None:
    """Play button and iteration slider: frame ``k`` shows each run's iterates ``0..k`` and each TR run's
    region at ``w_k``. Contour traces need ``redraw`` (plotly.js#1221), so frames redraw the figure."""
    n_max = max((r.nit for r in runs.values()), default=0)
    if n_max == 0:
        return
    paths = {key: i for i, trace in enumerate(fig.data) for key, run in runs.items()
             if trace.name == run.label}
    regions = {}
    for key, run in runs.items():
        if run.nit > 0 and np.all(np.isfinite(run.radius)):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=f"{run.label} region at t",
                                     showlegend=False, hoverinfo="skip",
                                     line={"color": RUN_COLOURS.get(key, "#333333"), "width": 2.5}))
            regions[key] = len(fig.data) - 1
    stride = max(1, math.ceil(n_max / (max_frames - 1)))
    frames = []
    for k in [*range(0, n_max, stride), n_max]:
        data, traces = [], []
        for key, run in runs.items():
            upto = min(k, run.nit)
            pts = run.iterates[: upto + 1]
            data.append(go.Scatter(x=_f32(pts[:, 0]), y=_f32(pts[:, 1])))
            traces.append(paths[key])
            if key in regions:
                xy = (_region_xy(run.iterates[upto], float(run.radius[upto]), run.m[upto], 64)
                      if upto < run.nit and k < n_max else np.empty((0, 2)))
                data.append(go.Scatter(x=_f32(xy[:, 0]), y=_f32(xy[:, 1])))
                traces.append(regions[key])
        frames.append(go.Frame(name=str(k), data=data, traces=traces))
    fig.frames = frames
    names = [f.name for f in frames]
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    play = {"mode": "immediate", "fromcurrent": True, "frame": {"duration": 300, "redraw": True},
            "transition": {"duration": 0}}
    fig.update_layout(
        sliders=[{"active": len(names) - 1, "currentvalue": {"prefix": "iteration t = "}, "pad": {"t": 45},
                  "steps": [{"method": "animate", "label": n, "args": [[n], anim]} for n in names]}],
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": 0, "xanchor": "left",
                      "yanchor": "top", "pad": {"t": 50, "r": 10}, "showactive": False,
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                  {"label": "❚❚ Pause", "method": "animate", "args": [[None], anim]}]}],
    )


def figure_payload_bytes(fig: go.Figure) -> int:
    """Size in bytes of the figure's JSON as sent to the browser."""
    return len(fig.to_json().encode("utf-8"))
