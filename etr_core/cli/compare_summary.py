"""The summary of an ``etr compare`` folder: ``runs.csv``, ``summary.csv``, ``summary.md`` (mean and
95% interval over seeds, best step size per first-order method) and the loss curves of the best
configuration per method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def write_compare_summary(
    out: Path, targets: Sequence[float] = (0.1, 0.03, 0.01), *, png: bool = True
) -> str:
    """Write ``summary.csv``, ``summary.md`` and the loss curves of the best step size per method
    (HTML, and PNG when ``png`` and kaleido can render)."""
    from etr_core.results import find_runs, load_run
    from etr_core.viz.training_plots import loss_curves, runs_frame, summarize, write_figure

    runs = [load_run(p) for p in find_runs([out])]
    frame = runs_frame(runs, targets=targets)
    columns = [
        "train_loss",
        "train_acc",
        "test_acc",
        "backprops",
        "epochs",
        "seconds_per_epoch",
        "backprops_to_acc0.99",
        "epoch_to_acc0.99",
        *(f"{x}_to_loss{t:g}" for t in targets for x in ("backprops", "epoch")),
    ]
    table = summarize(frame, columns)
    table["method"] = [label.split(" ")[0] for label in table["label"]]
    best = table.loc[table.groupby("method")["train_loss"].idxmin()]
    table["best"] = table["label"].isin(best["label"])
    frame.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    lines = [
        "| method (step size) | runs | final train loss | train acc | test acc | backprops to 99% acc "
        "| epochs to 99% acc | s / epoch | best |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, col: str) -> str:
        v, ci = row[col], row.get(f"{col}_ci")
        if not isinstance(v, float) or not math.isfinite(v):
            return f"not reached ({int(row.get(f'{col}_reached', 0))}/{int(row['runs'])})"
        return f"{v:.4g} ± {ci:.2g}" if isinstance(ci, float) and math.isfinite(ci) else f"{v:.4g}"

    for _, row in table.iterrows():
        lines.append(
            f"| {row['label']} | {int(row['runs'])} | {cell(row, 'train_loss')} | {cell(row, 'train_acc')} | "
            f"{cell(row, 'test_acc')} | {cell(row, 'backprops_to_acc0.99')} | "
            f"{cell(row, 'epoch_to_acc0.99')} | "
            f"{cell(row, 'seconds_per_epoch')} | {'yes' if row['best'] else ''} |"
        )
    text = "\n".join(lines) + "\n\n(mean ± 95% CI half-width over seeds)\n"
    (out / "summary.md").write_text(text)
    best_runs = [r for r in runs if r.label in set(best["label"])]
    for x in ("backprops", "epoch", "seconds"):
        write_figure(loss_curves(best_runs, x=x), out / f"loss_vs_{x}", png=png)
    return text
