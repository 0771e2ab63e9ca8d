"""Plotly figures for the diagonal-dominance analysis (paper section 3.2, Fig. 2 and Fig. 6).

* :func:`hessian_heatmap` -- ``|H|`` on a log colour scale, block-averaged to a bounded number of
  cells, with the layer blocks outlined: the picture of "mass near the diagonal".
* :func:`phase_bars` -- the Fig. 2 bars: ``delta_H / delta_W`` at initialisation, mid-training and
  end of training, mean with 95% intervals, one panel per Wigner baseline.
* :func:`eigenvalue_figure` -- extreme Hessian eigenvalues over training (negative curvature).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "BASELINE_LABELS",
    "PHASE_COLOURS",
    "eigenvalue_figure",
    "hessian_heatmap",
    "phase_bars",
]

PHASE_COLOURS = {"init": "#1f77b4", "middle": "#ff7f0e", "end": "#2ca02c"}
PHASE_LABELS = {"init": "initialisation", "middle": "middle of training", "end": "end of training"}
BASELINE_LABELS = {
    "ratio_rms": "δ_H / δ_W, Wigner with RMS-matched scales",
    "ratio_equal": "δ_H / δ_W, Wigner with equal scales (δ_W = 1/d)",
}


def hessian_heatmap(
    pooled_abs: np.ndarray,
    d: int,
    block_bounds: Sequence[tuple[int, int]] = (),
    block_names: Sequence[str] = (),
    *,
    show_blocks: bool = True,
    floor: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Heatmap of ``log10 |H_ij|`` with parameter indices on both axes (row ``i`` downwards).

    ``pooled_abs`` is ``|H|`` or its tile average (``etr_core.hessian_experiment.pooled_abs``) of
    shape ``(c, c)`` covering ``d`` parameters; tile ``k`` is drawn centred at ``(k + 0.5) d / c``.
    Entries below ``floor`` (default: 1e-6 of the largest) are clipped so exact zeros stay visible.
    Layer blocks ``[start, stop)`` are outlined when ``show_blocks``.
    """
    A = np.asarray(pooled_abs, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"pooled_abs must be a non-empty square array, got shape {A.shape}")
    cells = A.shape[0]
    top = float(A.max()) if A.size and np.isfinite(A).all() and A.max() > 0 else 1.0
    floor = top * 1e-6 if floor is None else floor
    z = np.log10(np.clip(A, floor, None)).astype(np.float32)
    centres = ((np.arange(cells) + 0.5) * d / cells).astype(np.float32)
    tile = "" if cells == d else f" (mean over {d / cells:.1f}×{d / cells:.1f} tiles)"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=centres, y=centres, colorscale="Viridis", name="log10 |H|",
            colorbar={"title": {"text": "log10 |H_ij|"}},
            hovertemplate="i=%{y:.0f}, j=%{x:.0f}<br>log10|H|=%{z:.2f}<extra></extra>",
        )
    )
    if show_blocks:
        for (start, stop), name in zip(block_bounds, list(block_names) + [""] * len(block_bounds)):
            fig.add_shape(
                type="rect", x0=start, x1=stop, y0=start, y1=stop,
                line={"color": "white", "width": 1.5}, fillcolor="rgba(0,0,0,0)", name=f"block {name}",
            )
    fig.update_layout(
        title=title or f"|H| on a log colour scale, d = {d:,}{tile}",
        xaxis={"title": "parameter index j", "range": [0, d], "constrain": "domain"},
        yaxis={"title": "parameter index i", "range": [d, 0], "scaleanchor": "x", "constrain": "domain"},
        height=560, margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def _arch_label(entry: Mapping[str, Any]) -> str:
    return f"{entry['arch']} (d={int(entry['d']):,})"


def phase_bars(
    summary: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("ratio_rms", "ratio_equal"),
    *,
    title: str | None = None,
) -> go.Figure:
    """Fig. 2 / Fig. 6: grouped bars of ``delta_H / delta_W`` per architecture and training phase.

    ``summary`` holds entries with ``arch``, ``d``, ``phase`` and ``<metric>_mean``,
    ``<metric>_ci_low``, ``<metric>_ci_high`` (as :func:`etr_core.hessian_experiment.summarize`
    makes; a single run may leave the interval NaN, then no error bar is drawn). One panel per
    metric; the dashed line at 1 is where a Wigner matrix would sit.
    """
    if not summary:
        raise ValueError("summary is empty: nothing to plot")
    titles = [BASELINE_LABELS.get(m, m) for m in metrics]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=titles)
    phases = [p for p in PHASE_COLOURS if any(e["phase"] == p for e in summary)]
    for col, metric in enumerate(metrics, start=1):
        for phase in phases:
            entries = [e for e in summary if e["phase"] == phase]
            means = np.array([e[f"{metric}_mean"] for e in entries], dtype=np.float64)
            low = np.array([e.get(f"{metric}_ci_low", np.nan) for e in entries], dtype=np.float64)
            high = np.array([e.get(f"{metric}_ci_high", np.nan) for e in entries], dtype=np.float64)
            has_ci = np.isfinite(low) & np.isfinite(high)
            fig.add_trace(
                go.Bar(
                    x=[_arch_label(e) for e in entries], y=means,
                    name=PHASE_LABELS.get(phase, phase), legendgroup=phase, showlegend=col == 1,
                    marker_color=PHASE_COLOURS.get(phase),
                    error_y={
                        "type": "data", "symmetric": False, "visible": bool(has_ci.any()),
                        "array": np.where(has_ci, high - means, 0.0),
                        "arrayminus": np.where(has_ci, means - low, 0.0),
                    },
                    customdata=np.stack([[int(e.get("n", 1)) for e in entries]], axis=-1),
                    hovertemplate="%{x}<br>%{y:.3g} (n=%{customdata[0]})<extra>" + phase + "</extra>",
                ),
                row=1, col=col,
            )
        fig.add_hline(y=1.0, line_dash="dash", line_color="grey", row=1, col=col)
        fig.update_yaxes(title_text="δ_H / δ_W", rangemode="tozero", row=1, col=col)
    n = max(int(e.get("n", 1)) for e in summary)
    fig.update_layout(
        barmode="group",
        title=title
        or f"Diagonal mass of H relative to a Wigner matrix: mean and 95% interval over {n} seed(s)",
        height=430, margin={"l": 60, "r": 20, "t": 80, "b": 50},
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def eigenvalue_figure(
    phases: Sequence[str],
    lambda_min: Sequence[float],
    lambda_max: Sequence[float],
    *,
    title: str | None = None,
) -> go.Figure:
    """Largest and smallest Hessian eigenvalue (Lanczos) at each training phase; zero marked."""
    labels = [PHASE_LABELS.get(p, p) for p in phases]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=labels, y=list(lambda_max), mode="lines+markers", name="λ_max"))
    fig.add_trace(go.Scatter(x=labels, y=list(lambda_min), mode="lines+markers", name="λ_min"))
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey")
    negative = [p for p, v in zip(labels, lambda_min) if v < 0]
    fig.update_layout(
        title=title or ("negative curvature at: " + ", ".join(negative) if negative
                        else "no negative curvature found"),
        yaxis_title="eigenvalue of H", height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )
    return fig
