"""Plotly figures of second-order steps on 2-D landscapes (appendix B, Figs. 7 and 8; Algorithm 1).

* :func:`local_steps_figure` -- level sets of ``f``, the quadratic model's level sets at the chosen
  point (dashed), the trust region (exact circle or ellipse) and the Newton / TR / GN / SFN steps.
* :func:`paths_figure` -- whole runs from one start with the (ellipsoidal) trust region drawn at each
  iterate (one NaN-separated polyline per method).
* :func:`run_history_figure` -- gradient norm, radius, rho and CG iterations per iteration.

The traces they are built from (level sets, regions, markers, colours, layout) are in
:mod:`etr_core.viz.landscape_traces` and re-exported here.

Axes are equally scaled (``scaleanchor``) wherever geometry is drawn, so circles look round. Large
coordinate arrays are sent as float32 numpy arrays, which Plotly binary-encodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from etr_core._validation import check_int, check_positive
from etr_core.toy.ellipses import stacked_ellipse_polylines
from etr_core.toy.functions import ToyFunction
from etr_core.toy.local_models import LocalStep
from etr_core.toy.second_order import RunHistory
from etr_core.toy.step_detail import StepDetail
from etr_core.viz.geometry import click_grid
from etr_core.viz.history import RHO_CLIP, run_history_figure
from etr_core.viz.landscape_traces import (
    CRITICAL_MARKERS,
    MODEL_COLOUR,
    RUN_COLOURS,
    STEP_COLOURS,
    Box,
    _critical_point_traces,
    _f32,
    _geometry_layout,
    _region_xy,
    function_level_sets,
    model_level_sets,
    region_name,
    step_trace_name,
)

__all__ = [
    "CRITICAL_MARKERS",
    "MODEL_COLOUR",
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
