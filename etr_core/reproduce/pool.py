"""Run many independent training runs at once: ``etr reproduce --jobs N``.

The paper's protocol is hundreds of small runs (10 seeds, several methods, a step-size grid per
first-order method). One such run leaves a GPU mostly idle (its kernels are small and launched one
at a time from Python), so running N of them in N processes fills it; on a CPU, N processes of
``cores // N`` threads each beat one process of all cores for such small networks.

Each run is one :func:`etr_core.reproduce.runner.run_job` in a fresh ``spawn`` process (CUDA
cannot be used in a forked child), writing only its own run folder, so the result of a run does not
depend on ``N``: CPU runs are bit-identical to a sequential command. A run that raises does not stop
the others; once all have ended the first error is raised, naming the run folder. Interrupting the
command (Ctrl-C, or SIGTERM to the command alone) interrupts every worker (SIGINT, then SIGTERM after
``STOP_GRACE_S``); each run keeps its last checkpoint and the same command resumes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from etr_core.training import TrainConfig

__all__ = ["MAX_JOBS", "RunError", "run_jobs", "threads_per_job"]

MAX_JOBS = 64  # most parallel runs (--jobs)
STOP_GRACE_S = 15.0  # seconds an interrupted worker has to stop before it is terminated

Job = tuple[TrainConfig, Path, str]  # (config, run folder, description)


class RunError(RuntimeError):
    """A run of a parallel batch raised; the message names its run folder and the error."""


def threads_per_job(jobs: int, threads: int | None) -> int | None:
    """CPU threads for each of ``jobs`` parallel runs: ``threads`` if given, else cores // jobs (>= 1).

    ``None`` for a single job without a thread count (the trainer's own automatic choice).
    """
    if threads is not None or jobs <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs)


def _stop_workers() -> None:
    """SIGINT to every live worker, then SIGTERM to those still running after ``STOP_GRACE_S``."""
    children = multiprocessing.active_children()
    for child in children:
        if child.pid is not None:
            try:
                os.kill(child.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.terminate()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_one(config: TrainConfig, folder: str) -> bool:
    from etr_core.reproduce.runner import run_job

    return run_job(config, Path(folder))


def run_jobs(
    jobs: Sequence[Job],
    n_jobs: int = 1,
    progress: Callable[..., Any] | None = None,
    *,
    show: bool = True,
) -> int:
    """Run ``jobs`` (each skipped when finished, resumed when partial); ``n_jobs`` at a time.

    ``n_jobs <= 1`` runs them in this process, one after another, with ``progress`` bars. Otherwise
    each runs in its own process and a line per finished run goes to stderr when ``show``. Returns
    the number of runs that trained (finished ones are skipped). Raises :class:`RunError` for the
    first run that failed, after every other run has ended.
    """
    from etr_core.reproduce.runner import is_finished, run_job

    if n_jobs < 1 or n_jobs > MAX_JOBS:
        raise ValueError(f"jobs must be between 1 and {MAX_JOBS}, got {n_jobs}")
    pending = [j for j in jobs if not is_finished(j[1], int(j[0].max_backprops or 0))]
    if n_jobs == 1 or len(pending) <= 1:
        return sum(run_job(cfg, folder, desc=desc, progress=progress) for cfg, folder, desc in pending)
    threads = threads_per_job(n_jobs, None)
    context = multiprocessing.get_context("spawn")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _run_parallel(pending, n_jobs, threads, context, show)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run_parallel(pending: Sequence[Job], n_jobs: int, threads: int | None, context, show: bool) -> int:
    errors: list[str] = []
    ran = 0
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(pending)), mp_context=context) as pool:
        futures: dict[Future, Job] = {}
        for cfg, folder, desc in pending:
            if cfg.num_threads is None:
                cfg = dataclasses.replace(cfg, num_threads=threads)
            futures[pool.submit(_run_one, cfg, str(folder))] = (cfg, folder, desc)
        remaining = set(futures)
        try:
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in done:
                    _, folder, desc = futures[fut]
                    exc = fut.exception()
                    if exc is None:
                        ran += bool(fut.result())
                        status = "done"
                    else:
                        errors.append(f"run {folder}: {type(exc).__name__}: {exc}")
                        status = f"failed ({type(exc).__name__})"
                    if show:
                        finished = len(futures) - len(remaining)
                        line = f"[{finished}/{len(futures)}] {desc or folder}: {status}"
                        print(line, file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            for fut in remaining:
                fut.cancel()
            _stop_workers()
            raise
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RunError(errors[0] + more)
    return ran
