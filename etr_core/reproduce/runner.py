"""Run a problem's training runs into run folders, resumably (skip finished runs, resume partial ones).

Layout under the output folder::

    <out>/<dataset>-<model>/<method>/seed<k>/          TR runs (paper Table 1)
    <out>/<dataset>-<model>/<method>_lr<lr>/seed<k>/   first-order runs at the chosen step size
    <out>/<dataset>-<model>/tuning/<method>_lr<lr>/seed<k>/   step-size grid (tuning seeds)
    <out>/<dataset>-<model>/step_sizes.json            the chosen step size per first-order method

Every run is one :func:`etr_core.training.train` call with a run folder, so a killed command loses
at most the steps since the run's last checkpoint: rerunning it skips finished runs (their
``summary.json`` records the whole budget) and continues the others from their checkpoints.
First-order step sizes are chosen as in section 5: batch 32, the step size of the method's grid
with the lowest mean final training loss on the tuning seeds (disjoint from the reported seeds).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etr_core.errors import one_line
from etr_core.reproduce.pool import run_jobs
from etr_core.reproduce.protocol import Problem
from etr_core.results import SUMMARY_FILE, load_run
from etr_core.results.layout import ResultsWarning
from etr_core.training import METHODS, TrainConfig, train

__all__ = ["BackpropProgress", "RunOptions", "choose_step_sizes", "method_jobs", "run_folder", "run_job"]

STEP_SIZES_FILE = "step_sizes.json"


@dataclass(frozen=True)
class RunOptions:
    """Where and how runs execute: output folder, data root, device, threads, progress bars, and
    ``jobs``, the runs trained at once in separate processes (:mod:`etr_core.reproduce.pool`)."""

    out: Path
    data_root: str | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    jobs: int = 1


class BackpropProgress:
    """tqdm bar over a run's budget in backprops, with the loss and (TR) the radius."""

    def __init__(self, config: TrainConfig, desc: str) -> None:
        import sys

        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=config.max_backprops, desc=desc, unit="bp", file=sys.stderr, leave=False, dynamic_ncols=True
        )

    def on_step(self, record: dict[str, Any]) -> None:
        post = {"loss": f"{record['loss']:.4g}"}
        if record.get("radius") is not None:
            post["radius"] = f"{record['radius']:.3g}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(int(record["backprops"]) - self.bar.n)  # redraws at most every 0.1 s

    def on_end(self, record: dict[str, Any]) -> None:
        self.bar.close()


def _grid(method: str, size: int) -> tuple[float, ...]:
    grid = METHODS[method].lr_grid
    if size >= len(grid):
        return grid
    start = (len(grid) - size) // 2
    return grid[start : start + size]


def config_for(
    problem: Problem, method: str, seed: int, lr: float | None, options: RunOptions
) -> TrainConfig:
    """The :class:`TrainConfig` of one run: Table 1 for TR, batch 32 and ``lr`` for first-order."""
    tr = METHODS[method].family == "tr"
    per_step = 4 if tr else 1  # TR steps cost 2 backprops early and up to 51 later; 4 keeps evals frequent
    eval_every = max(1, problem.budget // (problem.evals * per_step))
    data_options = {}
    if problem.max_train is not None:
        data_options["max_train"] = problem.max_train
    if problem.max_test is not None:
        data_options["max_test"] = problem.max_test
    return TrainConfig(
        dataset=problem.dataset,
        model=problem.model,
        method=method,
        seed=seed,
        batch_size=None if tr else 32,
        lr=None if tr else lr,
        max_steps=None,
        max_backprops=problem.budget,
        eval_every=eval_every,
        checkpoint_every=eval_every * 4,
        device=options.device,
        data_root=options.data_root,
        data_options=data_options,
        num_threads=options.threads,
    )


def run_folder(root: Path, method: str, lr: float | None, seed: int) -> Path:
    """``root/<method>[_lr<lr>]/seed<seed>``."""
    name = method if lr is None else f"{method}_lr{lr:g}"
    return root / name / f"seed{seed}"


def is_finished(folder: Path, budget: int) -> bool:
    """True when ``folder`` holds a run that ended: its budget spent, or stopped by a fault."""
    path = folder / SUMMARY_FILE
    if not path.exists():
        return False
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        summary = exc
    if not isinstance(summary, dict):
        problem = f"not readable ({summary})" if isinstance(summary, Exception) else "not a JSON object"
        warnings.warn(f"{path}: {one_line(problem)}; the run is resumed from its checkpoint, which writes "
                      "it again", ResultsWarning, stacklevel=1)
        return False
    if summary.get("stop_reason") == "max_backprops":
        return int(summary.get("backprops") or 0) >= budget
    return summary.get("stop_reason") == "nonfinite_loss"


def run_job(
    config: TrainConfig, folder: Path, *, desc: str = "", progress: Callable[..., Any] | None = None
) -> bool:
    """Train ``config`` into ``folder`` unless it is finished; resume from its checkpoint if any.

    Returns ``True`` when training ran (``False``: skipped as finished).
    """
    if is_finished(folder, int(config.max_backprops or 0)):
        return False
    callbacks = [progress(config, desc)] if progress is not None else []
    train(config, callbacks=callbacks, run_dir=folder, resume=folder.exists())
    return True


def choose_step_sizes(
    problem: Problem,
    methods: Sequence[str],
    options: RunOptions,
    progress: Callable[..., Any] | None = None,
) -> dict[str, float]:
    """Grid-search the step size of each first-order method on the tuning seeds (section 5).

    The choice is stored in ``step_sizes.json`` and reused on reruns (with its per-step-size scores).
    """
    root = options.out / problem.slug
    path = root / STEP_SIZES_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    chosen: dict[str, float] = {}
    grids: dict[str, tuple[float, ...]] = {}
    for method in methods:
        if METHODS[method].family == "tr":
            continue
        key = f"{method}@{problem.budget}"
        if key in saved:
            chosen[method] = float(saved[key]["chosen"])
        else:
            grids[method] = _grid(method, problem.lr_grid_size)
    tuning = [
        (
            config_for(problem, method, seed, lr, options),
            run_folder(root / "tuning", method, lr, seed),
            f"tuning {method} lr={lr:g} seed {seed}",
        )
        for method, grid in grids.items()
        for lr in grid
        for seed in problem.tune_seeds
    ]
    run_jobs(tuning, options.jobs, progress, show=options.progress)
    for method, grid in grids.items():
        scores: dict[str, float] = {}
        for lr in grid:
            losses = []
            for seed in problem.tune_seeds:
                run = load_run(run_folder(root / "tuning", method, lr, seed))
                loss = (run.summary or {}).get("train_loss")
                losses.append(loss if isinstance(loss, float) and math.isfinite(loss) else math.inf)
            scores[f"{lr:g}"] = sum(losses) / len(losses)
        best = min(scores, key=lambda k: scores[k])
        chosen[method] = float(best)
        saved[f"{method}@{problem.budget}"] = {
            "chosen": float(best), "scores": scores, "tune_seeds": list(problem.tune_seeds)
        }
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=2, allow_nan=True))
    return chosen


def method_jobs(
    problem: Problem, methods: Sequence[str], step_sizes: dict[str, float], options: RunOptions
) -> list[tuple[TrainConfig, Path]]:
    """Every (config, run folder) of ``methods`` on the problem's seeds."""
    root = options.out / problem.slug
    jobs = []
    for method in methods:
        lr = step_sizes.get(method)
        for seed in problem.seeds:
            jobs.append((config_for(problem, method, seed, lr, options), run_folder(root, method, lr, seed)))
    return jobs
