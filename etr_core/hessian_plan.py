"""What the Hessian page computes, what it may cost, and where it runs (paper section 3.2, Fig. 2).

A page setting (:class:`PageSettings`) becomes two jobs of units for :mod:`etr_core.hessian_jobs`:

* the **first answer** (priority 0): train the first seed's network to the phase shown and take
  that one Hessian (numbers, heat map, per-layer table);
* the **background** (priority 1): every phase of every seed for the Fig. 2 bars and the
  eigenvalue chart.

Units are keyed on exactly what they depend on (data, layer sizes, activation, seed, step, and
for a Hessian its batch), so settings that share a trained network or a Hessian reuse it: the
phase, the block outlines and the Fig. 2 seeds never retrain what exists, and a longer training
resumes from the last checkpoint. Units run in worker processes (``forkserver``; one torch thread
each, so the server's own thread settings are never touched), at most ``slots()`` at a time.

Caps: :func:`fit_to_budget` checks the cost model (:mod:`etr_core.curvature.cost`) before anything
starts and lowers seeds, then the Hessian's batch, then the steps until the estimate fits
``CPU_CAP`` seconds and ``MEMORY_CAP`` bytes; the worker enforces each job's CPU budget while it
computes (a unit that overruns stops with :class:`~etr_core.hessian_jobs.BudgetExceeded`). Over
time, every unit's CPU counts against the browser that asked for it (:mod:`etr_core.cpu_budget`,
420 s per 15 minutes by default); the page starts nothing new while that budget is used up.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import threading
import time
import types
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from etr_core.curvature.cost import mlp_hessian_cost, training_seconds
from etr_core.hessian_jobs import BudgetExceeded, JobRegistry, ResultCache

__all__ = [
    "CPU_CAP", "FIRST_ANSWER_CAP", "MEMORY_CAP", "PAGE_MAX_EXAMPLES", "PAGE_MAX_PARAMS", "PageSettings",
    "PageSnapshot", "SnapshotUnit", "TrainUnit", "background_units", "estimate", "first_units",
    "fit_to_budget", "monte_carlo_samples", "page_dataset", "registry", "slots",
]

PAGE_MAX_PARAMS = 4_000        # exact Hessians on the page; `etr hessian` goes to 12,000
PAGE_MAX_EXAMPLES = 5_000      # file datasets (MNIST, Fashion-MNIST) are sub-sampled to this
CPU_CAP = 30.0                 # seconds of CPU per setting (first answer + background)
FIRST_ANSWER_CAP = 10.0        # of which the first answer may use at most this
MEMORY_CAP = 2 * 2**30         # bytes one Hessian may hold (matrix + workspace)
LR, TRAIN_BATCH, LANCZOS_ITER, HEATMAP_CELLS = 0.01, 64, 30, 200
PHASE_FRACTIONS = {"init": 0.0, "middle": 0.5, "end": 1.0}
MC_SECONDS_PER_DRAW = 5e-8     # one |N(0, 1)| draw and its sum, one thread, with margin


@functools.lru_cache(maxsize=8)
def page_dataset(name: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x, y, classes)``: flat float32 inputs and labels, at most ``PAGE_MAX_EXAMPLES`` of them.

    Loaded once per process; a file dataset keeps a copy of its first examples only, so the full
    arrays are freed. Raises ``FileNotFoundError`` naming the files when they are absent.
    """
    from etr_core.data import load_dataset

    ds = load_dataset(name, root, seed=0, max_train=PAGE_MAX_EXAMPLES)
    x = np.array(ds.train_x.reshape(ds.n_train, -1).numpy(), dtype=np.float32, copy=True)
    y = np.array(ds.train_y.numpy(), dtype=np.int64, copy=True)
    return x, y, int(ds.num_classes)


@dataclass(frozen=True)
class PageSettings:
    """Everything the page's numbers depend on; ``batch`` and ``steps`` as the widgets give them."""

    data: str
    sizes: tuple[int, ...]
    activation: str
    batch: int           # examples in the Hessian's batch (>= n: all of them)
    steps: int           # RMSProp steps N; phases at 0, N/2, N
    phase: str
    seeds: int           # seeds for the Fig. 2 bars, starting at `seed`
    seed: int
    n_examples: int
    root: str | None = None

    @property
    def d(self) -> int:
        return sum((a + 1) * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def hessian_examples(self) -> int:
        return min(self.batch, self.n_examples)

    def phase_step(self, phase: str) -> int:
        return round(PHASE_FRACTIONS[phase] * self.steps)

    @property
    def net(self) -> tuple:
        return (self.data, self.root, self.sizes, self.activation)


@dataclass(frozen=True)
class TrainUnit:
    """Train ``net`` with ``seed`` up to ``step`` (resuming from the latest cached checkpoint)."""

    net: tuple
    seed: int
    step: int

    @property
    def key(self) -> tuple:
        return ("checkpoint", self.net, self.seed, self.step)

    @property
    def label(self) -> str:
        return f"seed {self.seed}: training to step {self.step}"


@dataclass(frozen=True)
class SnapshotUnit:
    """The exact Hessian of ``net`` (seed, step) on ``batch`` examples, reduced to a snapshot."""

    net: tuple
    seed: int
    step: int
    batch: int
    cells: int | None

    @property
    def key(self) -> tuple:
        return ("snapshot", self.net, self.seed, self.step, self.batch, self.cells)

    @property
    def label(self) -> str:
        return f"seed {self.seed}: Hessian at step {self.step}"


@dataclass(frozen=True)
class PageSnapshot:
    """A snapshot unit's result: the Hessian's statistics and, for the heat-map snapshot, the Monte
    Carlo Wigner baselines (RMS-matched and equal scales) the page prints beside Proposition 1."""

    snapshot: Any
    wigner_rms: Any = None
    wigner_equal: Any = None


def monte_carlo_samples(d: int) -> int:
    """Wigner matrices for the page's Monte Carlo: about 1e6 draws, at least 2 matrices, at most 2000.

    At large ``d`` one matrix already pins ``E[delta_W]`` to about 1e-3 relative, far below the
    digits shown.
    """
    return int(min(2000, max(2, 1_000_000 // (d * (d + 1) // 2))))


def first_units(s: PageSettings) -> list[Any]:
    """Units of the first answer: the shown phase of the first seed, with its heat map."""
    step = s.phase_step(s.phase)
    return [TrainUnit(s.net, s.seed, step),
            SnapshotUnit(s.net, s.seed, step, s.hessian_examples, HEATMAP_CELLS)]


def background_units(s: PageSettings) -> list[Any]:
    """Units of the Fig. 2 bars and eigenvalue chart: all phases of every seed."""
    units: list[Any] = []
    for k in range(s.seeds):
        seed = s.seed + k
        cells = HEATMAP_CELLS if k == 0 else None
        steps = sorted({s.phase_step(p) for p in PHASE_FRACTIONS})
        units += [TrainUnit(s.net, seed, st) for st in steps]
        units += [SnapshotUnit(s.net, seed, st, s.hessian_examples, cells) for st in steps]
    return units


def estimate(s: PageSettings) -> tuple[float, float, int]:
    """``(first_seconds, total_seconds, peak_bytes)`` of a setting from scratch (nothing cached)."""
    hess = mlp_hessian_cost(s.sizes, s.hessian_examples)
    first = training_seconds(s.sizes, s.phase_step(s.phase), TRAIN_BATCH) + hess.seconds
    phases = len({s.phase_step(p) for p in PHASE_FRACTIONS})
    per_seed = training_seconds(s.sizes, s.steps, TRAIN_BATCH) + phases * hess.seconds
    draws = 2 * monte_carlo_samples(s.d) * s.d * (s.d + 1) // 2   # two Monte Carlo baselines
    first += draws * MC_SECONDS_PER_DRAW
    return first, first + s.seeds * per_seed, hess.peak_bytes


def _fits(s: PageSettings) -> bool:
    first, total, peak = estimate(s)
    return first <= FIRST_ANSWER_CAP and total <= CPU_CAP and peak <= MEMORY_CAP


def fit_to_budget(s: PageSettings, batches: list[int], steps: list[int]) -> tuple[PageSettings, str | None]:
    """The setting itself when it fits the caps, else the nearest one that does and a one-line reason.

    Lowers, in this order, the number of seeds, the Hessian's batch (to the largest of ``batches``
    that fits) and the training steps (largest of ``steps``). ``d`` above ``PAGE_MAX_PARAMS`` is
    the caller's to refuse.
    """
    if _fits(s):
        return s, None
    _, total, _ = estimate(s)
    fitted = s
    while fitted.seeds > 1 and not _fits(fitted):
        fitted = replace(fitted, seeds=fitted.seeds - 1)
    for b in sorted((b for b in batches if b < fitted.batch), reverse=True):
        if _fits(fitted):
            break
        fitted = replace(fitted, batch=b)
    for n in sorted((n for n in steps if n < fitted.steps), reverse=True):
        if _fits(fitted):
            break
        fitted = replace(fitted, steps=n)
    def shown(name: str, value: int) -> str:
        return "all" if name == "batch" and value >= s.n_examples else str(value)

    changes = [f"{name} {shown(name, getattr(s, name))} -> {shown(name, getattr(fitted, name))}"
               for name in ("seeds", "batch", "steps") if getattr(s, name) != getattr(fitted, name)]
    return fitted, (f"This setting would take about {total:,.0f} s of CPU, above the page's cap of "
                    f"{CPU_CAP:.0f} s per setting; reduced: {', '.join(changes)}.")


# ---- execution in worker processes -------------------------------------------------------------

def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        os.nice(5)  # page loads win over background curvature on a busy machine
    except OSError:
        pass


def _tensors(net: tuple):
    import torch

    x, y, _ = page_dataset(net[0], net[1])
    return torch.from_numpy(x), torch.from_numpy(y)


def _train_in_worker(net: tuple, seed: int, step: int, start: Any, budget: float):
    import torch

    from etr_core.hessian_analysis import train_checkpoints

    t0 = time.process_time()
    x, y = _tensors(net)
    out = train_checkpoints(net[2], x, y, [step], activation=net[3], seed=seed, train_batch=TRAIN_BATCH,
                            lr=LR, dtype=torch.float32, start=start,
                            should_stop=lambda: time.process_time() - t0 > budget)
    if not out:
        raise BudgetExceeded(f"stopped at the {budget:.0f} s of CPU left to this job while training")
    return out[0], time.process_time() - t0


def _snapshot_in_worker(net: tuple, seed: int, step: int, batch: int, cells: int | None, params: Any,
                        budget: float):
    from etr_core.hessian_analysis import hessian_batch, snapshot_at

    t0 = time.process_time()
    x, y = _tensors(net)
    hx, hy = hessian_batch(x, y, batch, seed)

    def deadline(done: int, d: int) -> None:
        if time.process_time() - t0 > budget:
            raise BudgetExceeded(f"stopped at the {budget:.0f} s of CPU left to this job "
                                 f"({done:,} of {d:,} Hessian rows)")

    snap = snapshot_at(net[2], params, hx, hy, activation=net[3], step=step, lanczos_iter=LANCZOS_ITER,
                       heatmap_cells=cells, seed=seed, max_params=PAGE_MAX_PARAMS,
                       chunk_size=mlp_hessian_cost(net[2], int(hx.shape[0])).chunk_size, progress=deadline)
    result = PageSnapshot(snap)
    cmp = snap.comparison
    if cells is not None and np.isfinite(cmp.delta_h):
        from etr_core.curvature import wigner_mass_monte_carlo

        samples = monte_carlo_samples(cmp.d)
        deadline(0, cmp.d)
        result = PageSnapshot(
            snap,
            wigner_mass_monte_carlo(cmp.d, cmp.sigma_off_rms, cmp.sigma_diag_rms, samples=samples, seed=seed),
            wigner_mass_monte_carlo(cmp.d, 1.0, 1.0, samples=samples, seed=seed),
        )
    return result, time.process_time() - t0


_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_MAIN_LOCK = threading.Lock()


def slots() -> int:
    """Heavy computations at once, process-wide: ``$ETR_HESSIAN_SLOTS``, else half the cores (>= 1)."""
    raw = os.environ.get("ETR_HESSIAN_SLOTS", "")
    return max(1, int(raw)) if raw.isdigit() else max(1, (os.cpu_count() or 2) // 2)


@contextlib.contextmanager
def _plain_main():
    """While worker processes start, hide the main script from ``multiprocessing``.

    A spawned or forkserver child re-runs the parent's ``__main__`` file; under Streamlit that is
    the app script, which must not run inside a worker. A stand-in ``__main__`` without a file
    makes the child skip it; the real one is put back unless something replaced it meanwhile.
    """
    with _MAIN_LOCK:
        real = sys.modules.get("__main__")
        stand_in = types.ModuleType("__main__")
        sys.modules["__main__"] = stand_in
        try:
            yield
        finally:
            if sys.modules.get("__main__") is stand_in and real is not None:
                sys.modules["__main__"] = real


def _pool() -> ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(["etr_core.hessian_plan", "etr_core.hessian_analysis"])
            _POOL = ProcessPoolExecutor(max_workers=slots(), mp_context=ctx, initializer=_init_worker)
        return _POOL


def _reset_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        _POOL = None


def execute(unit: Any, cache: ResultCache, budget: float) -> tuple[dict, float]:
    """Run one unit in a worker process; the executor of the page's :class:`JobRegistry`."""
    if isinstance(unit, TrainUnit):
        earlier = [s for s in range(unit.step, -1, -1) if ("checkpoint", unit.net, unit.seed, s) in cache]
        start = cache.get(("checkpoint", unit.net, unit.seed, earlier[0])) if earlier else None
        call = (_train_in_worker, unit.net, unit.seed, unit.step, start, budget)
    else:
        checkpoint = cache.get(("checkpoint", unit.net, unit.seed, unit.step))
        if checkpoint is None:
            raise RuntimeError(f"no trained network for seed {unit.seed} at step {unit.step}")
        call = (_snapshot_in_worker, unit.net, unit.seed, unit.step, unit.batch, unit.cells,
                checkpoint.params, budget)
    try:
        with _plain_main():  # submit may start a worker process
            future = _pool().submit(*call)
        result, cpu = future.result()
    except BrokenProcessPool:
        _reset_pool()
        raise
    return {unit.key: result}, cpu


_REGISTRY: JobRegistry | None = None


def registry() -> JobRegistry:
    """The process-wide registry of the page's jobs (created on first use); every unit's CPU is
    charged to its payer's rolling budget (:func:`etr_core.cpu_budget.default_budget`, shared with
    live runs)."""
    from etr_core.cpu_budget import default_budget

    global _REGISTRY
    with _POOL_LOCK:
        if _REGISTRY is None:
            _REGISTRY = JobRegistry(execute, slots=slots(), cpu_cap=CPU_CAP, cache_items=512,
                                    charge=default_budget().charge)
        return _REGISTRY
