"""Plotly figures of a live training comparison (paper section 5, Figs. 3, 4, 9, 10).

Every builder takes the step / evaluation tables of :meth:`etr_core.live.LiveRun.snapshot` and an
x-axis name from :data:`X_AXES` (backpropagations as in Figs. 3-4, epochs as in Fig. 9, seconds as
in Fig. 10). Each method keeps one colour in every figure (:func:`method_color`); second-order TR
methods are drawn solid, first-order baselines dashed. Series are thinned to at most
``max_points`` points (evenly spaced, first and last kept) so the browser stays responsive, and
go into the figures as numpy arrays (compact base64 in the figure JSON, no per-element
validation), except in the main loss figure: there plain lists keep ``gd.data[i].x`` an ordinary
array in the browser, which page-level browser checks count to see the chart grow. A method that
ended early (``ends``: converged, stalled, diverged) gets a labelled cross at its last point in the
loss and radius figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from etr_core._validation import check_choice, check_int

__all__ = [
    "METHOD_COLORS",
    "RHO_CLIP",
    "X_AXES",
    "accuracy_figure",
    "cg_iterations_figure",
    "downsample",
    "is_cubic",
    "is_trust_region",
    "loss_figure",
    "method_color",
    "trust_region_figure",
]

# x-axis name -> (column in the records, axis title)
X_AXES: dict[str, tuple[str, str]] = {
    "backprops": ("backprops", "backprops (gradients + Hessian-vector products)"),
    "epochs": ("epoch", "epochs (examples seen / training-set size)"),
    "seconds": ("seconds", "seconds of training steps"),
}

METHOD_COLORS: dict[str, str] = {
    "TR_uni": "#4C78A8",
    "TR_ada": "#F58518",
    "TR_rms": "#E45756",
    "SGD": "#72B7B2",
    "Adagrad": "#54A24B",
    "RMSprop": "#B279A2",
    "Adam": "#9D755D",
}
_FALLBACK = ("#EECA3B", "#FF9DA6", "#BAB0AC", "#17BECF", "#8C564B")
RHO_CLIP = (-1.0, 2.0)


def method_color(method: str) -> str:
    """The colour of ``method`` in every live figure (stable for unknown names too)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK[sum(map(ord, method)) % len(_FALLBACK)]


def is_trust_region(method: str) -> bool:
    """``True`` for the second-order methods: trust regions (``TR_*``) and their cubic-regularisation
    counterparts (``ARC_*``, whose sigma takes the radius's place in the figures)."""
    return method.startswith(("TR", "ARC"))


def is_cubic(method: str) -> bool:
    """``True`` for adaptive cubic regularisation (``ARC_*``): its "radius" column holds sigma."""
    return method.startswith("ARC")


def _dash(method: str) -> str:
    return "solid" if is_trust_region(method) else "dash"


def downsample(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most ``max_points`` evenly spaced rows of ``frame``, always keeping the first and last."""
    max_points = check_int("max_points", max_points, minimum=2)
    n = len(frame)
    if n <= max_points:
        return frame
    index = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return frame.iloc[index]


def _x_column(x: str) -> tuple[str, str]:
    check_choice("x", x, X_AXES)
    return X_AXES[x]


def _methods(frames: Sequence[pd.DataFrame], methods: Sequence[str] | None) -> list[str]:
    if methods is not None:
        return list(methods)
    seen: list[str] = []
    for frame in frames:
        if not frame.empty and "method" in frame:
            seen.extend(frame["method"].tolist())
    return list(dict.fromkeys(seen))


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _xy(frame: pd.DataFrame, method: str, x_col: str, y_col: str, max_points: int,
        keep_neg_inf: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite (x, y) of one method, thinned; also the row positions kept (for per-point styling)."""
    if frame.empty or y_col not in frame or x_col not in frame:
        empty = np.empty(0)
        return empty, empty, np.empty(0, dtype=int)
    rows = np.flatnonzero(frame["method"].to_numpy() == method)
    x, y = _numeric(frame, x_col)[rows], _numeric(frame, y_col)[rows]
    if keep_neg_inf:
        y = np.where(np.isneginf(y), RHO_CLIP[0], y)
    ok = np.isfinite(x) & np.isfinite(y)
    rows, x, y = rows[ok], x[ok], y[ok]
    keep = _thin(len(x), max_points)
    return x[keep], y[keep], rows[keep]


def _end_marker(fig: go.Figure, method: str, status: str, x: np.ndarray, y: np.ndarray,
                **where: int) -> None:
    """A cross with the word ``status`` at the last point of a curve (nothing for an empty one)."""
    if not len(x):
        return
    fig.add_trace(go.Scatter(
        x=x[-1:].tolist(), y=y[-1:].tolist(), mode="markers+text", name=f"{method} {status}",
        legendgroup=method, showlegend=False, text=[status], textposition="top center",
        marker={"symbol": "x", "size": 11, "color": method_color(method), "line": {"width": 1}},
        textfont={"color": method_color(method)},
    ), **where)


def _waiting(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 14, "color": "#666"})
    return fig


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int) -> go.Figure:
    fig.update_layout(
        # title at the top of the margin, the (wrapping) legend between it and the plot
        title={"text": title, "y": 0.99, "yref": "container", "yanchor": "top", "x": 0.01},
        height=height, margin={"l": 60, "r": 20, "t": 105, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def loss_figure(
    steps: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    x: str = "backprops",
    log_y: bool = True,
    methods: Sequence[str] | None = None,
    loss_target: float | None = None,
    max_points: int = 1500,
    height: int = 430,
    ends: dict[str, str] | None = None,
) -> go.Figure:
    """Loss against backprops / epochs / seconds for every method (paper Figs. 3, 4, 9, 10).

    Per method two traces in the method's colour: the mini-batch loss of each step (thin, named
    ``"<method> (mini-batch)"``) and the loss over the whole training set at the evaluation points
    (bold with markers, ``"<method> (training set)"``), the quantity of the paper's log-loss plots.
    ``loss_target`` adds a dotted horizontal line.
    """
    x_col, x_title = _x_column(x)
    fig = go.Figure()
    names = _methods((steps, evals), methods)
    for method in names:
        color = method_color(method)
        bx, by, _ = _xy(steps, method, x_col, "loss", max_points)
        fig.add_trace(go.Scatter(
            x=bx.tolist(), y=by.tolist(), mode="lines", name=f"{method} (mini-batch)",
            legendgroup=method, line={"color": color, "width": 1, "dash": _dash(method)}, opacity=0.45,
        ))
        fx, fy, _ = _xy(evals, method, x_col, "train_loss", max_points)
        fig.add_trace(go.Scatter(
            x=fx.tolist(), y=fy.tolist(), mode="lines+markers",
            name=f"{method} (training set)", legendgroup=method,
            line={"color": color, "width": 2.5, "dash": _dash(method)}, marker={"size": 5},
        ))
        if (ends or {}).get(method):
            _end_marker(fig, method, ends[method], *((fx, fy) if len(fx) else (bx, by)))
    if loss_target is not None and math.isfinite(loss_target) and loss_target > 0:
        fig.add_hline(y=loss_target, line={"color": "#2CA02C", "dash": "dot"},
                      annotation_text=f"target loss {loss_target:g}", annotation_position="bottom right")
    _layout(fig, "Training loss", x_title, "loss (log scale)" if log_y else "loss", height)
    if log_y:
        fig.update_yaxes(type="log")
    if steps.empty and evals.empty:
        _waiting(fig, "Press Start: the curves appear here as the methods train.")
    return fig


def accuracy_figure(
    evals: pd.DataFrame,
    *,
    x: str = "backprops",
    methods: Sequence[str] | None = None,
    accuracy_target: float | None = None,
    max_points: int = 1500,
    height: int = 360,
) -> go.Figure:
    """Training-set (solid) and test-set (dotted) accuracy at the evaluation points; the optional
    ``accuracy_target`` is drawn as in Fig. 3 (the paper's 99%-accuracy line)."""
    x_col, x_title = _x_column(x)
    fig = go.Figure()
    for method in _methods((evals,), methods):
        color = method_color(method)
        for column, label, dash, width in (
            ("train_acc", "train", "solid", 2.5),
            ("test_acc", "test", "dot", 1.5),
        ):
            ax, ay, _ = _xy(evals, method, x_col, column, max_points)
            fig.add_trace(go.Scatter(
                x=ax, y=ay, mode="lines+markers",
                name=f"{method} ({label})", legendgroup=method,
                line={"color": color, "width": width, "dash": dash}, marker={"size": 4},
            ))
    if accuracy_target is not None and math.isfinite(accuracy_target):
        fig.add_hline(y=accuracy_target, line={"color": "#2CA02C", "dash": "dot"},
                      annotation_text=f"target {accuracy_target:.0%}", annotation_position="bottom right")
    _layout(fig, "Accuracy (train solid, test dotted)", x_title, "accuracy", height)
    fig.update_yaxes(range=[0, 1.02])
    if evals.empty:
        _waiting(fig, "No evaluation yet.")
    return fig


def trust_region_figure(
    steps: pd.DataFrame,
    *,
    x: str = "backprops",
    methods: Sequence[str] | None = None,
    eta1: float | None = None,
    eta2: float | None = None,
    max_points: int = 1500,
    height: int = 520,
    ends: dict[str, str] | None = None,
) -> go.Figure:
    """Trust-region radius Δ_t (log scale) and reduction ratio ρ_t per step for the TR methods
    (Algorithm 1, lines 5-7); for ARC methods the line is sigma, legend "<method> sigma (ARC)". ρ is
    clipped to :data:`RHO_CLIP` for display (a non-finite ρ, i.e. a rejected step with a non-finite
    trial loss, sits at the lower bound); rejected steps are drawn as open circles; ``eta1``/``eta2``
    add the acceptance and growth thresholds; ``ends`` marks methods that ended early (a labelled
    cross at the last radius)."""
    x_col, x_title = _x_column(x)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    tr_methods = [m for m in _methods((steps,), methods) if is_trust_region(m)]
    for method in tr_methods:
        color = method_color(method)
        rx, ry, _ = _xy(steps, method, x_col, "radius", max_points)
        fig.add_trace(go.Scatter(
            x=rx, y=ry, mode="lines",
            name=f"{method} sigma (ARC)" if is_cubic(method) else f"{method} radius",
            legendgroup=method, line={"color": color, "width": 2},
        ), row=1, col=1)
        if (ends or {}).get(method):
            _end_marker(fig, method, ends[method], rx, ry, row=1, col=1)
        # -inf is the ratio of a rejected non-finite trial: show it at the bottom, not drop it
        qx, qy, rows = _xy(steps, method, x_col, "rho", max_points, keep_neg_inf=True)
        qy = np.clip(qy, *RHO_CLIP)
        accepted = steps["accepted"].to_numpy()[rows] if "accepted" in steps else np.ones(len(rows), bool)
        symbols = ["circle" if a is True or a == 1 else "circle-open" for a in accepted]
        fig.add_trace(go.Scatter(
            x=qx, y=qy, mode="markers", name=f"{method} ρ",
            legendgroup=method,
            marker={"color": color, "size": 5, "symbol": symbols},
        ), row=2, col=1)
    for value, label in ((eta1, "η₁"), (eta2, "η₂")):
        if value is not None and math.isfinite(value):
            fig.add_hline(y=value, line={"color": "#888", "dash": "dot"}, row=2, col=1,
                          annotation_text=f"{label} = {value:g}", annotation_position="top left")
    cubic = any(is_cubic(m) for m in tr_methods)
    _layout(fig, "Trust-region radius" + (" (ARC: sigma)" if cubic else "") + " and reduction ratio", "", "",
            height)
    fig.update_yaxes(type="log", title_text="Δ_t or sigma (ARC) after the step" if cubic
                     else "radius Δ_t after the step", row=1, col=1)
    fig.update_yaxes(range=[RHO_CLIP[0] - 0.05, RHO_CLIP[1] + 0.05], title_text="ρ_t (clipped)", row=2, col=1)
    fig.update_xaxes(title_text=x_title, row=2, col=1)
    if not tr_methods:
        _waiting(fig, "No trust-region method selected.")
    return fig


def cg_iterations_figure(
    steps: pd.DataFrame,
    *,
    x: str = "backprops",
    methods: Sequence[str] | None = None,
    max_points: int = 1500,
    height: int = 320,
) -> go.Figure:
    """Krylov (Steihaug-Toint CG) iterations per TR step: the Hessian-vector products each
    subproblem (Eq. 8) cost, i.e. how much second-order work one step buys."""
    x_col, x_title = _x_column(x)
    fig = go.Figure()
    tr_methods = [m for m in _methods((steps,), methods) if is_trust_region(m)]
    for method in tr_methods:
        cx, cy, _ = _xy(steps, method, x_col, "cg_iterations", max_points)
        fig.add_trace(go.Scatter(
            x=cx, y=cy, mode="lines+markers",
            name=f"{method} CG iterations", legendgroup=method,
            line={"color": method_color(method), "width": 1.5, "shape": "hv"}, marker={"size": 3},
        ))
    _layout(fig, "CG iterations per trust-region step", x_title, "iterations", height)
    if not tr_methods:
        _waiting(fig, "No trust-region method selected.")
    return fig
