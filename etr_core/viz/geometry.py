"""Plotly figures of the 2-D toy world: iterates with their implicit trust regions (paper Fig. 1 top,
Fig. 5 left) and log suboptimality over random starts (Fig. 1 bottom, Fig. 5 right).

Level sets of a quadratic are exact ellipses, drawn as one ``Scatter`` polyline (NaN-separated)
rather than a ``go.Contour``: a contour trace vanishes in the browser when animation frames update
other traces with ``redraw=False`` (plotly.js#1221). Frames therefore only touch the path and
trust-region traces, referenced by index; the level sets stay in the base figure. Coordinates are
sent as float32 numpy arrays (binary-encoded by Plotly) to keep the payload small.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from etr_core._validation import check_int
from etr_core.toy.ellipses import ellipse_boundary, stacked_ellipse_polylines
from etr_core.toy.first_order import METHOD_NAMES, Trajectory
from etr_core.toy.random_starts import SuboptimalityBand
from etr_core.viz.palette import method_colour, method_dash

__all__ = [
    "METHOD_COLOURS",
    "add_step_region",
    "as_figure",
    "click_grid",
    "default_bounds",
    "figure_payload_bytes",
    "level_set_polylines",
    "suboptimality_figure",
    "trajectory_figure",
    "trajectory_figure_spec",
    "trust_region_trace_name",
]

METHOD_COLOURS = {m: method_colour(m) for m in METHOD_NAMES}   # the shared palette
_FALLBACK_COLOUR = "#7f7f7f"
Bounds = tuple[float, float, float, float]
# Boundary points shared by all drawn trust regions of the static figure (fewer points per ellipse
# when many are drawn).
_BASE_ELLIPSE_POINT_BUDGET = 8000


def trust_region_trace_name(label: str) -> str:
    """Legend name of a method's implicit trust-region trace."""
    return f"{label}: trust regions"


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _typed(a: np.ndarray) -> dict:
    """A float32 array as Plotly's binary typed-array spec: encoded once here, so copying and
    serialising the figure on every rerun handles short strings instead of arrays."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode("ascii")}


def default_bounds(problem, trajectories: Sequence[Trajectory], margin: float = 1.25) -> Bounds:
    """A square box around ``w*`` that holds every starting point (``margin`` times the farthest)."""
    c = np.asarray(problem.minimiser, dtype=np.float64)
    half = 1.0
    for tr in trajectories:
        if len(tr.iterates):
            half = max(half, float(np.max(np.abs(tr.iterates[0] - c))) * margin)
    return (c[0] - half, c[0] + half, c[1] - half, c[1] + half)


def level_set_polylines(problem, bounds: Bounds, n_levels: int = 12, n_points: int = 96
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level sets ``f(w) = c`` of a quadratic (exact ellipses ``{d : d^T Q d = 2c}`` around ``w*``) as
    one NaN-separated polyline, with levels spread log-uniformly over the values ``f`` takes in
    ``bounds``. Returns ``(x, y, levels)``."""
    n_levels = check_int("n_levels", n_levels, minimum=1, maximum=200)
    x0, x1, y0, y1 = bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 41), np.linspace(y0, y1, 41))
    values = np.asarray(problem.value(np.stack([gx, gy], axis=-1)), dtype=np.float64) - problem.f_star
    values = values[values > 0]
    if values.size == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    lo, hi = np.quantile(values, [0.02, 0.9])
    hi = max(hi, lo * (1 + 1e-9))
    levels = np.geomspace(lo, hi, n_levels)
    Q = np.asarray(problem.hessian(), dtype=np.float64)
    k = len(levels)
    x, y = stacked_ellipse_polylines(np.repeat(problem.minimiser[None, :], k, axis=0),
                                     np.repeat(Q[None], k, axis=0), np.sqrt(2.0 * levels), n_points)
    return x, y, levels


def _shown_regions(trajectory: Trajectory, upto: int, every: int, current: bool,
                   trail: int | None = None) -> np.ndarray:
    """Indices of the trust regions drawn when iterates ``0..upto`` are visible: every ``every``-th
    one before ``upto`` (only the last ``trail`` of them if given) plus, with ``current``, the one at
    ``w_upto`` from which the next step is taken."""
    n = min(upto, trajectory.n_steps)
    idx = list(range(0, n, every))
    if trail is not None:
        idx = idx[len(idx) - trail:] if trail > 0 else []
    if current and upto < trajectory.n_steps:
        idx.append(upto)
    return np.asarray(idx, dtype=int)


def _region_polylines(trajectory: Trajectory, idx: np.ndarray, n_points: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    if len(idx) == 0:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32)
    x, y = stacked_ellipse_polylines(trajectory.centres[idx], trajectory.shapes[idx],
                                     trajectory.radii[idx], n_points)
    return _f32(x), _f32(y)


def _scatter(x: np.ndarray, y: np.ndarray, **kwargs) -> dict:
    if "customdata" in kwargs:
        kwargs["customdata"] = [[float(f"{v:.5g}") for v in row] for row in np.asarray(kwargs["customdata"])]
    return {"type": "scatter", "x": _typed(x), "y": _typed(y), **kwargs}


def trajectory_figure(problem, trajectories: Sequence[Trajectory], **kwargs) -> go.Figure:
    """:func:`trajectory_figure_spec` as a ``go.Figure`` (see there for the arguments)."""
    return as_figure(trajectory_figure_spec(problem, trajectories, **kwargs))


def as_figure(spec: dict) -> go.Figure:
    """A ``go.Figure`` around a spec built here. The specs are valid by construction; skipping
    Plotly's per-property validation keeps a rerun cheap (validating ~40 frames costs ~0.4 s)."""
    return go.Figure(spec, _validate=False)


def trajectory_figure_spec(
    problem,
    trajectories: Sequence[Trajectory],
    *,
    bounds: Bounds | None = None,
    show_trust_regions: bool = True,
    every: int | None = None,
    max_regions: int = 12,
    ellipse_points: int = 48,
    animate: bool = True,
    max_frames: int = 61,
    trail: int = 3,
    frame_point_budget: int = 20_000,
    height: int = 680,
    title: str | None = None,
    click_bounds: Bounds | None = None,
) -> dict:
    """Plotly figure dict: level sets of ``problem``, each method's iterates and, dashed, the
    implicit trust region of every ``every``-th step (Theorem 1; the paper draws every other one; by
    default ``every`` is chosen so that at most ``max_regions`` regions per method are drawn, and they
    are semi-transparent, so the paths stay visible).
    With ``animate`` the figure carries Plotly frames and a slider/Play button that replay the
    iterations in the browser: frame ``k`` shows iterates ``0..k``, the last ``trail`` drawn trust
    regions before ``k`` and the current one at ``w_k``; the last frame is the static picture. Frames
    are thinned (fewer boundary points per ellipse, then every few iterations) to carry at most
    ``frame_point_budget`` points in all. Coordinates travel as binary float32. With ``click_bounds``
    an invisible grid of clickable points covers that box (:func:`click_grid`), as the last trace.
    """
    max_regions = check_int("max_regions", max_regions, minimum=1)
    n_most = max((tr.n_steps for tr in trajectories), default=0)
    every = max(2, math.ceil(n_most / max_regions)) if every is None else every
    every = check_int("every", every, minimum=1)
    ellipse_points = check_int("ellipse_points", ellipse_points, minimum=8, maximum=1000)
    max_frames = check_int("max_frames", max_frames, minimum=2, maximum=1000)
    trail = check_int("trail", trail, minimum=0)
    frame_point_budget = check_int("frame_point_budget", frame_point_budget, minimum=1000)
    bounds = bounds or default_bounds(problem, trajectories)
    lx, ly, _levels = level_set_polylines(problem, bounds)
    data: list[dict] = [
        _scatter(lx, ly, mode="lines", name="level sets of f", hoverinfo="skip",
                 line={"color": "rgba(120,120,120,0.45)", "width": 1}),
        {"type": "scatter", "x": [float(problem.minimiser[0])], "y": [float(problem.minimiser[1])],
         "mode": "markers", "name": "w*", "marker": {"symbol": "star", "size": 13, "color": "black"},
         "hovertemplate": "w* = (%{x:.3g}, %{y:.3g})<extra></extra>"},
    ]
    n_regions = sum(len(range(0, tr.n_steps, every)) for tr in trajectories) if show_trust_regions else 0
    base_points = max(16, min(ellipse_points, _BASE_ELLIPSE_POINT_BUDGET // max(1, n_regions)))
    dynamic: list[tuple[int, Trajectory, str]] = []
    for tr in trajectories:
        colour = METHOD_COLOURS.get(tr.method, _FALLBACK_COLOUR)
        if show_trust_regions and tr.n_steps > 0:
            shown = _shown_regions(tr, tr.n_steps, every, current=False)
            ex, ey = _region_polylines(tr, shown, base_points)
            data.append(_scatter(ex, ey, mode="lines", name=trust_region_trace_name(tr.label),
                                 legendgroup=tr.method, hoverinfo="skip", opacity=0.55,
                                 line={"color": colour, "width": 1.2, "dash": "dash"}))
            dynamic.append((len(data) - 1, tr, "regions"))
        it = tr.iterates
        data.append(_scatter(
            it[:, 0], it[:, 1], mode="lines+markers", name=tr.label, legendgroup=tr.method,
            line={"color": colour, "width": 2.5, "dash": method_dash(tr.method)},
            marker={"size": 6, "color": colour}, unselected={"marker": {"opacity": 1}},
            customdata=np.stack([np.arange(len(it)), tr.values], axis=1).astype(np.float32),
            hovertemplate=f"{tr.label}<br>t = %{{customdata[0]:.0f}}<br>w = (%{{x:.3g}}, %{{y:.3g}})"
                          "<br>f = %{customdata[1]:.3g}<extra></extra>"))
        dynamic.append((len(data) - 1, tr, "path"))

    x0, x1, y0, y1 = bounds
    layout = {
        "height": height,
        "margin": {"l": 50, "r": 10, "t": 40 if title else 10, "b": 50},
        "font": {"size": 15},
        "xaxis": {"range": [x0, x1], "title": {"text": "w₁"}, "zeroline": False, "constrain": "domain"},
        "yaxis": {"range": [y0, y1], "title": {"text": "w₂"}, "zeroline": False, "scaleanchor": "x",
                  "scaleratio": 1, "constrain": "domain"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0},
        "uirevision": "geometry",
    }
    if title:
        layout["title"] = {"text": title}
    frames: list[dict] = []
    n_max = max((tr.n_steps for tr in trajectories), default=0)
    if animate and dynamic and n_max > 0:
        frames = _frames(dynamic, n_max, every, trail, ellipse_points, base_points, max_frames,
                         frame_point_budget)
        layout.update(_playback_controls([f["name"] for f in frames]))
    if click_bounds is not None:
        gx, gy = click_grid(click_bounds)
        data.append(_scatter(gx, gy, mode="markers", name="click to start here", showlegend=False,
                             hovertemplate="start here: (%{x:.2f}, %{y:.2f})<extra></extra>",
                             marker={"size": 10, "opacity": 0}, selected={"marker": {"opacity": 0}},
                             unselected={"marker": {"opacity": 0}}))
    return {"data": data, "layout": layout, "frames": frames}


def add_step_region(fig: go.Figure, trajectory: Trajectory, t: int) -> None:
    """The Step view of iteration ``t`` of ``trajectory``: its implicit trust region
    ``{w_t + s : s^T A_t s <= r_t^2}`` (Eq. 5, bold dashed), the step ``w_t -> w_t + s_t`` and ``w_t``.

    Three traces are appended (named ``"<label>: region at t = <t>"``, ``"... step t"``, ``"... w_t"``).
    Raises ValueError when ``t`` is not a step of the run or its region is not finite."""
    t = check_int("t", t, minimum=0, maximum=max(trajectory.n_steps - 1, 0))
    if trajectory.n_steps == 0:
        raise ValueError(f"{trajectory.label} has no steps to show")
    centre, step = trajectory.centres[t], trajectory.steps[t]
    xy = ellipse_boundary(trajectory.shapes[t], float(trajectory.radii[t]), centre, n_points=96)
    colour = METHOD_COLOURS.get(trajectory.method, _FALLBACK_COLOUR)
    name = f"{trajectory.label}: "
    fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", name=f"{name}region at t = {t}",
                             line={"color": "black", "width": 3, "dash": "dash"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[centre[0], centre[0] + step[0]], y=[centre[1], centre[1] + step[1]],
                             mode="lines+markers", name=f"{name}step {t}",
                             line={"color": colour, "width": 4},
                             marker={"size": [0, 14], "symbol": "arrow", "angleref": "previous",
                                     "color": colour}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[centre[0]], y=[centre[1]], mode="markers", name=f"{name}w_{t}",
                             marker={"size": 11, "color": "black", "symbol": "circle-open",
                                     "line": {"width": 3}}, hoverinfo="skip"))


def click_grid(bounds: Bounds, step: float = 0.1, max_points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Points of a regular grid over ``bounds`` (spacing ``step``, coarsened to at most ``max_points``),
    flattened: the invisible targets that let a click on the landscape report a position."""
    x0, x1, y0, y1 = bounds
    while ((x1 - x0) / step + 1) * ((y1 - y0) / step + 1) > max_points:
        step *= 2
    xs = np.round(np.arange(math.ceil(x0 / step), math.floor(x1 / step) + 1) * step, 10)
    ys = np.round(np.arange(math.ceil(y0 / step), math.floor(y1 / step) + 1) * step, 10)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def _frame_regions(tr: Trajectory, k: int, n_max: int, every: int, trail: int) -> np.ndarray:
    if k >= n_max:       # the last frame is the static picture
        return _shown_regions(tr, tr.n_steps, every, current=False)
    return _shown_regions(tr, min(k, tr.n_steps), every, current=k < tr.n_steps, trail=trail)


def _frame_points(dynamic: list[tuple[int, Trajectory, str]], ks: Sequence[int], n_max: int, every: int,
                  trail: int, ellipse_points: int) -> int:
    total = 0
    for _, tr, kind in dynamic:
        for k in ks[:-1]:
            upto = min(k, tr.n_steps)
            if kind == "path":
                total += upto + 1
            else:
                total += len(_frame_regions(tr, k, n_max, every, trail)) * (ellipse_points + 2)
    return total


def _frames(dynamic: list[tuple[int, Trajectory, str]], n_max: int, every: int, trail: int,
            ellipse_points: int, base_points: int, max_frames: int, budget: int) -> list[dict]:
    stride = max(1, math.ceil(n_max / (max_frames - 1)))
    points = min(ellipse_points, 40)
    while True:
        ks = [*range(0, n_max, stride), n_max]
        if _frame_points(dynamic, ks, n_max, every, trail, points) <= budget or len(ks) <= 3:
            break
        if points > 16:
            points = max(16, points - 8)
        else:
            stride += 1
    frames = []
    for k in ks:
        data, indices = [], []
        for index, tr, kind in dynamic:
            if kind == "path":
                pts = tr.iterates[: min(k, tr.n_steps) + 1]
                data.append(_scatter(pts[:, 0], pts[:, 1]))
            else:
                n_pts = base_points if k >= n_max else points
                ex, ey = _region_polylines(tr, _frame_regions(tr, k, n_max, every, trail), n_pts)
                data.append(_scatter(ex, ey))
            indices.append(index)
        frames.append({"name": str(k), "data": data, "traces": indices})
    return frames


def _playback_controls(names: Sequence[str]) -> dict:
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}, "transition": {"duration": 0}}
    play = {"mode": "immediate", "fromcurrent": True, "frame": {"duration": 250, "redraw": False},
            "transition": {"duration": 0}}
    return {
        "sliders": [{
            "active": len(names) - 1,
            "currentvalue": {"prefix": "iteration t = "},
            "pad": {"t": 45},
            "steps": [{"method": "animate", "label": name, "args": [[name], anim]} for name in names],
        }],
        "updatemenus": [{
            "type": "buttons", "direction": "left", "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
            "pad": {"t": 50, "r": 10}, "showactive": False,
            "buttons": [
                {"label": "▶ Play", "method": "animate", "args": [None, play]},
                {"label": "❚❚ Pause", "method": "animate", "args": [[None], anim]},
            ],
        }],
    }


def suboptimality_figure(bands: Mapping[str, SuboptimalityBand], *, height: int = 360,
                         title: str | None = None) -> go.Figure:
    """Mean ``log10(f - f*)`` per method with its 5-95 % band over random starts (Fig. 1 bottom)."""
    data: list[dict] = []
    n_runs = 0
    for method, band in bands.items():
        colour = METHOD_COLOURS.get(method, _FALLBACK_COLOUR)
        n_runs = max(n_runs, band.n_runs)
        ok = np.isfinite(band.low) & np.isfinite(band.high)
        if ok.any():
            it = band.iterations[ok]
            data.append(_scatter(
                np.concatenate([it, it[::-1]]), np.concatenate([band.high[ok], band.low[ok][::-1]]),
                fill="toself", fillcolor=_rgba(colour, 0.18), line={"width": 0}, mode="lines",
                name=f"{band.label}: 90% band", legendgroup=method, showlegend=False, hoverinfo="skip"))
        data.append(_scatter(band.iterations, band.mean, mode="lines", name=band.label, legendgroup=method,
                             line={"color": colour, "width": 2},
                             hovertemplate=f"{band.label}<br>t = %{{x:.0f}}<br>mean log10(f − f*) = "
                                           "%{y:.3g}<extra></extra>"))
    layout = {
        "height": height,
        "margin": {"l": 50, "r": 10, "t": 40 if title else 10, "b": 40},
        "xaxis": {"title": {"text": "iteration t"}},
        "yaxis": {"title": {"text": f"log10(f − f*): mean, 90% band ({n_runs} starts)"}},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0},
    }
    if title:
        layout["title"] = {"text": title}
    return as_figure({"data": data, "layout": layout})


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def figure_payload_bytes(fig: go.Figure) -> int:
    """Size in bytes of the figure's JSON as sent to the browser (frames included)."""
    return len(fig.to_json().encode("utf-8"))
