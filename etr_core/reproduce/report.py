"""Tables and figures of a reproduced figure: markdown with 95% intervals, HTML and PNG plots.

The table reports, per method (first-order: at its chosen step size) and over the seeds: the final
full-batch training loss, the backprops to the paper's 99%-training-accuracy marker (Fig. 3) and to
each training-loss target, the loss every run reached at the common budget, epochs and training
seconds per epoch. A cost is "not reached (k/N)" unless every seed got there. Intervals are
Student-t 95% half-widths. The ratio TR_rms / TR_uni of the mean backprops to each target is the
paper's central claim (section 5: the ellipsoids reach the targets faster).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etr_core.reproduce.protocol import Problem
from etr_core.viz.training_plots import loss_curves, runs_frame, summarize, write_figure

__all__ = ["curves_table", "ratio_lines", "write_curves"]


def _cell(row: pd.Series, col: str) -> str:
    v, ci = row.get(col), row.get(f"{col}_ci")
    if not isinstance(v, float) or not math.isfinite(v):
        return f"not reached ({int(row.get(f'{col}_reached', 0))}/{int(row['runs'])})"
    if isinstance(ci, float) and math.isfinite(ci) and ci > 0:
        return f"{v:.4g} ± {ci:.2g}"
    return f"{v:.4g}"


def _frame(runs: Sequence[Any], problem: Problem) -> tuple[pd.DataFrame, float]:
    frame = runs_frame(runs, targets=problem.loss_targets)
    ends = [float(r.evals["backprops"].max()) for r in runs if not r.evals.empty]
    budget = min(ends) if ends else math.nan
    frame["loss_at_budget"] = [
        float(np.interp(budget, r.evals["backprops"].to_numpy(float), r.evals["train_loss"].to_numpy(float)))
        if not r.evals.empty
        else math.nan
        for r in runs
    ]
    return frame, budget


def curves_table(runs: Sequence[Any], problem: Problem, order: Sequence[str]) -> tuple[str, pd.DataFrame]:
    """Markdown table and per-label summary of ``runs`` (one problem), rows in ``order`` of methods."""
    frame, budget = _frame(runs, problem)
    cost_cols = ["backprops_to_acc0.99", *(f"backprops_to_loss{t:g}" for t in problem.loss_targets)]
    cols = ["train_loss", "loss_at_budget", *cost_cols, "epochs", "seconds_per_epoch", "test_acc"]
    table = summarize(frame, cols)
    rank = {m: i for i, m in enumerate(order)}
    table["order"] = [rank.get(label.split(" ")[0], len(rank)) for label in table["label"]]
    table = table.sort_values(["order", "label"]).reset_index(drop=True)
    classify = not problem.is_autoencoder
    header = ["method", "seeds", "final train loss", f"train loss at {budget:.0f} backprops"]
    if classify:
        header.append("backprops to 99% train acc")
    header += [f"backprops to loss {t:g}" for t in problem.loss_targets]
    header += ["epochs", "train s / epoch"]
    if classify:
        header.append("final test acc")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["label"], str(int(row["runs"])), _cell(row, "train_loss"), _cell(row, "loss_at_budget")]
        if classify:
            cells.append(_cell(row, "backprops_to_acc0.99"))
        cells += [_cell(row, f"backprops_to_loss{t:g}") for t in problem.loss_targets]
        cells += [_cell(row, "epochs"), _cell(row, "seconds_per_epoch")]
        if classify:
            cells.append(_cell(row, "test_acc"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), table


def ratio_lines(table: pd.DataFrame, problem: Problem) -> list[str]:
    """One line per cost column where both TR_rms and TR_uni reached it: the ratio of their means."""
    by = {label.split(" ")[0]: row for label, row in zip(table["label"], table.to_dict("records"))}
    if "TR_rms" not in by or "TR_uni" not in by:
        return []
    cols = ["loss_at_budget"]
    if not problem.is_autoencoder:
        cols.append("backprops_to_acc0.99")
    cols += [f"backprops_to_loss{t:g}" for t in problem.loss_targets]
    out = []
    for col in cols:
        a, b = by["TR_rms"].get(col), by["TR_uni"].get(col)
        name = col.replace("_", " ").replace("acc0.99", "99% acc").replace("loss0", "loss 0")
        if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b) and b > 0:
            out.append(f"- TR_rms / TR_uni, {name}: {a / b:.3f}")
        else:
            out.append(f"- TR_rms / TR_uni, {name}: not available (a method did not reach it on every seed)")
    return out


def write_curves(
    runs: Sequence[Any], problem: Problem, x: str, title: str, stem: Path, data_label: str, png: bool = True
) -> list[Path]:
    """Mean log loss and 95% band over seeds per method against ``x`` (HTML, PNG when possible)."""
    fig = loss_curves(
        runs,
        x=x,
        accuracy_marker=None if problem.is_autoencoder else 0.99,
        title=f"{title}<br><sup>{data_label}, {problem.model}, {len(problem.seeds)} seeds, "
        f"budget {problem.budget:,} backprops</sup>",
    )
    return write_figure(fig, stem, png=png)
