"""Summaries of a live comparison: one row per method, the race sentence, CSV export (paper section 5).

Everything here is computed from the recorded histories only, so the page, a re-attached tab and a
downloaded CSV always tell the same story.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from etr_core.live.history import EARLY_END, EVAL_COLUMNS, STEP_COLUMNS

__all__ = [
    "SUMMARY_COLUMNS",
    "describe_race",
    "metrics_csv",
    "read_metrics_csv",
    "summarize",
    "target_reached",
]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "method", "status", "preset", "steps", "backprops", "epochs", "seconds", "final_batch_loss",
    "final_train_loss", "final_train_acc", "final_test_acc", "backprops_to_loss", "seconds_to_loss",
    "backprops_to_acc", "seconds_to_acc", "detail", "warnings",
)


def target_reached(
    frame: pd.DataFrame, column: str, target: float, *, higher_is_better: bool
) -> pd.Series | None:
    """The first row (in step order) where ``column`` reaches ``target``, or ``None``."""
    if frame.empty or column not in frame:
        return None
    values = pd.to_numeric(frame[column], errors="coerce")
    hit = values >= target if higher_is_better else values <= target
    if not hit.any():
        return None
    return frame.loc[hit.idxmax()]


def _last_finite(frame: pd.DataFrame, column: str) -> float:
    if frame.empty or column not in frame:
        return math.nan
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def summarize(
    steps: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    methods: Iterable[str] | None = None,
    loss_target: float | None = None,
    accuracy_target: float | None = None,
    statuses: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    warnings: dict[str, int] | None = None,
    presets: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per method: budget used, final numbers, and backprops / seconds to reach the targets.

    Targets are checked on the evaluation records (loss and accuracy over the whole training set,
    as in Fig. 3's 99%-accuracy line): the first evaluation with ``train_loss <= loss_target``
    or ``train_acc >= accuracy_target``; NaN where a target was not reached or not set. ``statuses``
    (e.g. ``"stalled"``), ``notes`` (why a method ended early) and ``warnings`` (optimiser warnings
    counted in the worker) fill the ``status``, ``detail`` and ``warnings`` columns; ``presets``
    (a TR method's preset: "paper", "fast", "authors") the ``preset`` column ("" for the others).
    """
    if methods is None:
        seen = list(steps["method"]) + list(evals["method"]) if len(steps) + len(evals) else []
        methods = list(dict.fromkeys(seen))
    rows = []
    for method in methods:
        s = steps[steps["method"] == method] if not steps.empty else steps
        e = evals[evals["method"] == method] if not evals.empty else evals
        row: dict[str, Any] = {
            "method": method,
            "status": (statuses or {}).get(method, ""),
            "preset": (presets or {}).get(method, ""),
            "steps": int(pd.to_numeric(s["step"]).max()) if len(s) else 0,
            "backprops": _last_finite(s, "backprops") if len(s) else 0.0,
            "epochs": _last_finite(s, "epoch") if len(s) else 0.0,
            "seconds": _last_finite(s, "seconds") if len(s) else 0.0,
            "final_batch_loss": _last_finite(s, "loss"),
            "final_train_loss": _last_finite(e, "train_loss"),
            "final_train_acc": _last_finite(e, "train_acc"),
            "final_test_acc": _last_finite(e, "test_acc"),
            "detail": (notes or {}).get(method, ""),
            "warnings": int((warnings or {}).get(method, 0)),
        }
        for prefix, column, target, higher in (
            ("loss", "train_loss", loss_target, False),
            ("acc", "train_acc", accuracy_target, True),
        ):
            hit = target_reached(e, column, target, higher_is_better=higher) if target is not None else None
            row[f"backprops_to_{prefix}"] = float(hit["backprops"]) if hit is not None else math.nan
            row[f"seconds_to_{prefix}"] = float(hit["seconds"]) if hit is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _early_ends(summary: pd.DataFrame) -> str:
    """``" TR_ada stalled after 1,234 backprops (...)."`` for methods that ended before their budget."""
    if "status" not in summary:
        return ""
    parts = []
    for _, row in summary[summary["status"].isin(EARLY_END)].iterrows():
        backprops = pd.to_numeric(pd.Series([row.get("backprops")]), errors="coerce").iloc[0]
        where = f" after {_count(backprops)} backprops" if backprops == backprops else ""
        detail = str(row.get("detail") or "").strip()
        parts.append(f"{row['method']} {row['status']}{where}" + (f" ({detail})" if detail else ""))
    return (" " + "; ".join(parts) + ".") if parts else ""


def describe_race(summary: pd.DataFrame, column: str, target_text: str) -> str:
    """A sentence saying which method reached a target first in ``column`` and by how much.

    ``column`` is a summary column such as ``"backprops_to_acc"``; ``target_text`` names the target
    (e.g. ``"95% training accuracy"``). Methods that converged, stalled or diverged are named with
    their reason. Built only from the numbers in ``summary``.
    """
    if summary.empty or column not in summary:
        return "No method has recorded an evaluation yet."
    unit = "backprops" if column.startswith("backprops") else "seconds"
    fmt = _count if unit == "backprops" else (lambda v: f"{v:.2f}")
    values = pd.to_numeric(summary[column], errors="coerce")
    reached = summary[values.notna()].assign(_v=values[values.notna()]).sort_values("_v", kind="stable")
    missed = list(summary.loc[values.isna(), "method"])
    early = _early_ends(summary)
    if reached.empty:
        return f"No method reached {target_text} yet.{early}"
    best = reached.iloc[0]
    text = f"**{best['method']}** reached {target_text} first, after {fmt(best['_v'])} {unit}."
    if len(reached) > 1:
        others = []
        for _, row in reached.iloc[1:].iterrows():
            ratio = row["_v"] / best["_v"] if best["_v"] > 0 else math.inf
            ratio_text = f"{ratio:.1f}x as many" if math.isfinite(ratio) else "more"
            others.append(f"{row['method']} needed {fmt(row['_v'])} ({ratio_text})")
        text += " " + "; ".join(others) + "."
    if missed:
        text += f" Not reached: {', '.join(missed)}."
    return text + early


def metrics_csv(steps: pd.DataFrame, evals: pd.DataFrame) -> bytes:
    """Both histories as one CSV (UTF-8): a ``record`` column says ``step`` or ``eval``; non-finite
    numbers are written as empty fields."""
    steps = steps.assign(record="step")
    evals = evals.assign(record="eval")
    frame = pd.concat([steps, evals], ignore_index=True, sort=False)
    columns = list(dict.fromkeys(["record", *steps.columns, *evals.columns]))
    frame = frame.reindex(columns=columns).replace([math.inf, -math.inf], math.nan)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def read_metrics_csv(data: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inverse of :func:`metrics_csv`: ``(steps, evals)`` with the standard columns first."""
    frame = pd.read_csv(io.BytesIO(data))
    parts = []
    for kind, columns in (("step", STEP_COLUMNS), ("eval", EVAL_COLUMNS)):
        part = frame[frame["record"] == kind].drop(columns="record").reset_index(drop=True)
        part = part.dropna(axis=1, how="all")
        parts.append(part.reindex(columns=[*columns, *[c for c in part.columns if c not in columns]]))
    return parts[0], parts[1]
