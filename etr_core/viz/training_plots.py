"""Plotly figures of training runs: the paper's Figs. 3, 4, 9, 10 and 11, plus TR diagnostics.

* :func:`loss_curves` -- log loss against backprops, epochs or seconds; mean and 95% confidence band
  over seeds per method, and a dotted vertical marker where the method's mean run first reaches 99%
  training accuracy (Fig. 3: "Mean and 95% CI of 10 runs. Green dotted line indicates 99% acc.").
* :func:`tr_traces` -- radius, rho and CG iterations per step of TR runs (Algorithm 1).
* :func:`reconstruction_grid` -- autoencoder reconstructions per method (Fig. 11).
* :func:`best_of_grid` -- the best step size per method (what the paper plots after its grid search).
* :func:`write_figure` -- HTML always; PNG as well when kaleido finds a Chrome/Chromium to render with.

Every method keeps its colour from :mod:`etr_core.viz.palette` (colour-blind safe; TR solid,
first-order dashed).

Inputs are :class:`etr_core.results.LoadedRun` objects or anything with ``label``, ``evals`` and
``metrics`` DataFrames, so the figures work for finished run folders and for live runs alike.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from etr_core._validation import check_choice
from etr_core.viz.palette import method_colour, method_dash, rgba

X_AXES = {
    "backprops": "backpropagations (backward + Hessian-vector products)",
    "epoch": "epochs",
    "seconds": "wall-clock seconds (training only)",
}


def mean_and_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and Student-t confidence interval of ``values`` (runs x points), NaN-aware."""
    values = np.asarray(values, dtype=float)
    mean = np.nanmean(values, axis=0)
    n = np.sum(np.isfinite(values), axis=0)
    sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    sd = np.where(n > 1, sd, 0.0)
    t = stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
    half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, mean - half, mean + half


def _group(runs: Iterable[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def _interpolated(runs: Sequence[Any], x: str, y: str, grid: np.ndarray, log: bool) -> np.ndarray:
    rows = []
    for run in runs:
        ev = run.evals
        if ev.empty or x not in ev or y not in ev:
            continue
        xs = ev[x].to_numpy(dtype=float)
        ys = ev[y].to_numpy(dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys) & ((ys > 0) if log else True)
        xs, ys = xs[ok], ys[ok]
        if xs.size == 0:
            continue
        vals = np.log10(ys) if log else ys
        row = np.interp(grid, xs, vals, left=np.nan, right=np.nan)
        rows.append(row)
    return np.array(rows) if rows else np.empty((0, grid.size))


def first_reach(run: Any, x: str, column: str = "train_acc", threshold: float = 0.99) -> float | None:
    """The ``x`` value (backprops, epoch, seconds) of the first evaluation with ``column >= threshold``."""
    ev = run.evals
    if ev.empty or column not in ev or ev[column].isna().all():
        return None
    hit = ev[ev[column].astype(float) >= threshold]
    return None if hit.empty else float(hit[x].iloc[0])


def first_below(run: Any, x: str, target: float, column: str = "train_loss") -> float | None:
    """The ``x`` value of the first evaluation with ``column <= target`` (None if never)."""
    ev = run.evals
    if ev.empty or column not in ev:
        return None
    hit = ev[ev[column].astype(float) <= target]
    return None if hit.empty else float(hit[x].iloc[0])


def loss_curves(
    runs: Iterable[Any],
    x: str = "backprops",
    y: str = "train_loss",
    *,
    accuracy_marker: float | None = 0.99,
    title: str | None = None,
    points: int = 200,
) -> go.Figure:
    """Mean log10 loss and 95% band over seeds per method against ``x`` (paper Figs. 3, 4, 9, 10).

    Runs sharing a ``label`` (method and step size) are one group; each run's evaluations are
    interpolated on a common grid up to the shortest run of the group. ``accuracy_marker`` draws a
    dotted vertical line at the mean ``x`` where the runs first reach that training accuracy.
    """
    check_choice("x", x, X_AXES)
    runs = list(runs)
    fig = go.Figure()
    n_markers = 0  # staggers the marker labels so they do not overlap
    for label, group in sorted(_group(runs).items()):
        color = method_colour(label)
        ends = [float(r.evals[x].max()) for r in group if not r.evals.empty and x in r.evals]
        if not ends:
            continue
        grid = np.linspace(0.0, min(ends), points)
        curves = _interpolated(group, x, y, grid, log=True)
        if curves.shape[0] == 0:
            continue
        mean, low, high = mean_and_ci(curves)
        keep = np.isfinite(mean)
        gx = grid[keep]
        if curves.shape[0] > 1:
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([gx, gx[::-1]]),
                    y=np.concatenate([10 ** high[keep], (10 ** low[keep])[::-1]]),
                    fill="toself",
                    fillcolor=rgba(color, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=label,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=gx,
                y=10 ** mean[keep],
                mode="lines",
                line={"color": color, "width": 2, "dash": method_dash(label)},
                name=f"{label} (n={curves.shape[0]})",
                legendgroup=label,
            )
        )
        if accuracy_marker is not None:
            reach = [first_reach(r, x, threshold=accuracy_marker) for r in group]
            reach = [v for v in reach if v is not None]
            if reach and len(reach) == len(group):
                fig.add_vline(
                    x=float(np.mean(reach)),
                    line={"color": color, "dash": "dot", "width": 1.5},
                    annotation_text=f"{accuracy_marker:.0%} acc",
                    annotation_font_color=color,
                    annotation_yshift=-16 * n_markers,
                )
                n_markers += 1
    fig.update_layout(
        title=title or f"{y.replace('_', ' ')} vs {X_AXES[x]} (mean and 95% CI over seeds)",
        xaxis_title=X_AXES[x],
        yaxis_title=f"{y.replace('_', ' ')} (log scale)",
        yaxis_type="log",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def tr_traces(runs: Iterable[Any]) -> go.Figure:
    """Radius, rho (clipped to [-1, 2]) and CG iterations per step of TR runs (Algorithm 1)."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=("trust-region radius", "rho (actual / predicted decrease)", "CG iterations"),
    )
    for run in runs:
        m = run.metrics
        if m.empty or "radius" not in m:
            continue
        color = method_colour(run.label)
        name = f"{run.label} seed {run.config.get('seed', '?')}" if hasattr(run, "config") else run.label
        tr = m[m["radius"].notna()]
        fig.add_trace(
            go.Scatter(x=tr["step"], y=tr["radius"], name=name, legendgroup=name, line={"color": color}),
            row=1,
            col=1,
        )
        rho = tr["rho"].astype(float).clip(-1.0, 2.0)
        fig.add_trace(
            go.Scatter(
                x=tr["step"],
                y=rho,
                mode="markers",
                marker={"size": 4, "color": color},
                showlegend=False,
                legendgroup=name,
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=tr["step"],
                y=tr["cg_iterations"],
                mode="lines",
                line={"color": color},
                showlegend=False,
                legendgroup=name,
            ),
            row=3,
            col=1,
        )
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(template="plotly_white", height=750, title="Trust-region diagnostics")
    return fig


def reconstruction_grid(
    originals: Any, reconstructions: Mapping[str, Any], *, title: str | None = None
) -> go.Figure:
    """Rows: the original images, then each method's reconstructions (paper Fig. 11).

    ``originals`` is an array ``(k, H, W)`` (or ``(k, 1, H, W)``) in ``[0, 1]``;
    ``reconstructions`` maps a method label to an array of the same shape.
    """

    def squeeze(a: Any) -> np.ndarray:
        arr = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=float)
        if arr.ndim == 4:
            arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1).mean(-1)
        return arr

    rows = {"original": squeeze(originals)}
    rows.update({k: squeeze(v) for k, v in reconstructions.items()})
    k = rows["original"].shape[0]
    fig = make_subplots(
        rows=len(rows), cols=k, horizontal_spacing=0.005, vertical_spacing=0.02, row_titles=list(rows)
    )
    for r, (_, images) in enumerate(rows.items(), start=1):
        for c in range(k):
            fig.add_trace(
                go.Heatmap(z=images[c][::-1], colorscale="gray_r", zmin=0, zmax=1, showscale=False),
                row=r,
                col=c + 1,
            )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(
        template="plotly_white",
        height=110 * len(rows) + 80,
        width=max(500, 90 * k + 200),
        title=title or "Autoencoder reconstructions per method",
    )
    return fig


def static_export_available() -> bool:
    """True when plotly can try to write PNG files (the ``kaleido`` package; it also needs a browser)."""
    return importlib.util.find_spec("kaleido") is not None


def best_of_grid(runs: Iterable[Any], column: str = "train_loss") -> list[Any]:
    """Keep, per method, the runs of the label (step size) with the lowest mean final ``column``.

    Runs without a finite final value count as infinitely bad; methods with one label keep it. This
    is the selection behind the paper's Figs. 4, 9 and 10 (section 5: "grid search the stepsize").
    """
    runs = list(runs)
    scores: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        value = (run.summary or {}).get(column)
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        scores.setdefault(run.method, {}).setdefault(run.label, []).append(float(value) if ok else math.inf)
    best = {
        method: min(labels, key=lambda label: (float(np.mean(labels[label])), label))
        for method, labels in scores.items()
    }
    return [run for run in runs if best[run.method] == run.label]


def write_figure(fig: go.Figure, path_stem: str | Path, *, png: bool = True) -> list[Path]:
    """Write ``<stem>.html`` (self-contained) and, when ``png`` and kaleido can render, ``<stem>.png``."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=True)
    written = [html]
    if png and static_export_available():
        path = stem.with_suffix(".png")
        try:
            fig.write_image(path, width=fig.layout.width or 1100, height=fig.layout.height or 650)
            written.append(path)
        except Exception:  # kaleido without a usable browser raises its own error types: HTML only
            pass
    return written


def runs_frame(runs: Iterable[Any], targets: Sequence[float] = (), accuracy: float = 0.99) -> pd.DataFrame:
    """One row per run: label, seed, final losses/accuracies, cost counters, and for each x axis the
    cost to first reach ``accuracy`` training accuracy and each training-loss target."""
    rows = []
    for run in runs:
        s = run.summary or {}
        row: dict[str, Any] = {
            "label": run.label,
            "method": run.method,
            "seed": run.config.get("seed"),
            "steps": s.get("step"),
            "backprops": s.get("backprops"),
            "epochs": s.get("epoch"),
            "seconds": s.get("seconds"),
            "seconds_per_epoch": s.get("seconds_per_epoch"),
            "train_loss": s.get("train_loss"),
            "train_acc": s.get("train_acc"),
            "test_loss": s.get("test_loss"),
            "test_acc": s.get("test_acc"),
            "stop_reason": s.get("stop_reason"),
        }
        for x in ("backprops", "epoch"):
            row[f"{x}_to_acc{accuracy:g}"] = first_reach(run, x, threshold=accuracy)
            for t in targets:
                row[f"{x}_to_loss{t:g}"] = first_below(run, x, t)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per label: mean and 95% CI half-width of ``columns``; a cost is NaN unless every seed reached it
    (the count of seeds that did is reported as ``<column>_reached``)."""
    out = []
    for label, group in frame.groupby("label", sort=True):
        row: dict[str, Any] = {"label": label, "runs": len(group)}
        for col in columns:
            vals = group[col].astype(float).to_numpy()
            reached = int(np.isfinite(vals).sum())
            if reached == len(vals) and reached > 0:
                mean, low, _ = mean_and_ci(vals[:, None])
                row[col] = float(mean[0])
                row[f"{col}_ci"] = float(mean[0] - low[0])
            else:
                row[col] = math.nan
                row[f"{col}_ci"] = math.nan
            row[f"{col}_reached"] = reached
        out.append(row)
    return pd.DataFrame(out)
