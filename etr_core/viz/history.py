"""Per-iteration panels of 2-D runs: gradient norm, radius, rho and CG iterations (Algorithm 1).

The colours are the shared palette's; the log panels use ``1e-3``-style ticks at whole decades so the
labels stay readable however many decades a run spans.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from etr_core.toy.second_order import RunHistory
from etr_core.viz.palette import method_colour

__all__ = ["RHO_CLIP", "run_history_figure"]

RHO_CLIP = (-1.0, 2.0)


def _f32(a: np.ndarray) -> np.ndarray:
    """float32 for a smaller payload; values beyond float32's range (diverged runs) become gaps (NaN)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.abs(a) < np.finfo(np.float32).max, a, np.nan).astype(np.float32)


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
        "margin": {"l": 60, "r": 10, "t": 30, "b": 40},
        "font": {"size": 14},
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
            "exponentformat": "e",
            **({"dtick": 1, "tickformat": ".0e"} if scale == "log" else {}),
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
        colour = method_colour(run.label)
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
