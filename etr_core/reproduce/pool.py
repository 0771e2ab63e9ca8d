"""Run many independent training runs at once: ``etr reproduce --jobs N``.

The paper's protocol is hundreds of small runs (10 seeds, several methods, a step-size grid per
first-order method). One such run leaves a GPU mostly idle (its kernels are small and launched one
at a time from Python), so running N of them in N processes fills it; on a CPU, N processes of
``cores // N`` threads each beat one process of all cores for such small networks.

Each run is one :func:`etr_core.reproduce.runner.run_job` in one of N ``spawn`` worker processes
(CUDA cannot be used in a forked child), writing only its own run folder, so the result of a run
does not depend on ``N``: CPU runs are bit-identical to a sequential command. A worker is handed
one run at a time, only when it is idle, so nothing is queued inside a worker.

Failures stay with their run. A run that raises, or whose worker process dies (killed, out of
memory), fails alone: the others go on, a new worker replaces a dead one, and once all have ended
:class:`etr_core.errors.RunError` names the first failed run folder and its error in one line (a
user error, e.g. a damaged checkpoint, or a killed worker: the CLI prints that line and exits 2; a
bug: the worker printed its traceback). Interrupting the command (Ctrl-C, SIGTERM or SIGHUP to the
command) starts no further run, lets idle workers exit at once and interrupts the busy ones (SIGINT,
then SIGTERM after ``STOP_GRACE_S``); each run keeps its last checkpoint and the same command
resumes. A worker whose command died (``kill -9``) is interrupted the same way (Linux). Workers
print warnings as one line each, as the command does.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from etr_core.errors import RunError, show_warning_line, user_message
from etr_core.training import TrainConfig

__all__ = ["MAX_JOBS", "RunError", "run_jobs", "threads_per_job"]

MAX_JOBS = 64  # most parallel runs (--jobs)
STOP_GRACE_S = 15.0  # seconds an interrupted worker has to stop before it is terminated

Job = tuple[TrainConfig, Path, str]  # (config, run folder, description)


def threads_per_job(jobs: int, threads: int | None) -> int | None:
    """CPU threads for each of ``jobs`` parallel runs: ``threads`` if given, else cores // jobs (>= 1).

    ``None`` for a single job without a thread count (the trainer's own automatic choice).
    """
    if threads is not None or jobs <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker(conn: Connection) -> None:
    """Worker process: train each ``(config, folder)`` received until ``None`` or the pipe closes.

    Replies ``("done", ran)``, ``("error", text, is_user_error)`` or ``("interrupted",)`` (then exits).
    """
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # Ctrl-C reaches the command alone, which interrupts each busy worker once
    _interrupt_when_parent_dies()
    warnings.showwarning = show_warning_line  # as the command prints its own
    from etr_core.reproduce.runner import run_job

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:
            return
        config, folder = job
        try:
            reply: tuple = ("done", bool(run_job(config, Path(folder))))
        except KeyboardInterrupt:
            reply = ("interrupted",)
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                traceback.print_exc()
            reply = ("error", f"{type(exc).__name__}: {message or exc}", message is not None)
        try:
            conn.send(reply)
        except (OSError, KeyboardInterrupt):
            return
        if reply[0] == "interrupted":
            return


def _interrupt_when_parent_dies() -> None:
    """Linux: SIGINT to this worker when the command dies (``kill -9``, a closed terminal), so its
    run stops and keeps its checkpoint instead of training on with nobody waiting for it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the command died before the line above: stop now
        os.kill(os.getpid(), signal.SIGINT)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


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
    stops = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, _interrupt) for sig in stops} if main_thread else {}
    try:
        return _run_parallel(pending, n_jobs, threads, context, show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Workers:
    """Up to ``size`` worker processes, each busy with one run or idle; see the module docstring."""

    def __init__(self, size: int, context: Any) -> None:
        self.size = size
        self.context = context
        self.idle: list[tuple[Any, Connection]] = []
        self.busy: dict[Connection, tuple[Any, Job]] = {}

    def start(self, job: Job) -> None:
        """Hand ``job`` to an idle worker, or to a new one."""
        while self.idle and not self.idle[-1][0].is_alive():  # killed while idle: let it go
            self.idle.pop()[1].close()
        if self.idle:
            proc, conn = self.idle.pop()
        else:
            conn, child = self.context.Pipe(duplex=True)
            proc = self.context.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            child.close()  # the parent's copy: a dead worker then reads as end-of-file
        try:
            conn.send((job[0], str(job[1])))
        except OSError:
            pass  # the worker already died: its end-of-file reports the run as failed
        self.busy[conn] = (proc, job)

    def finished(self, conn: Connection) -> tuple[Job, tuple]:
        """The run of ``conn``'s worker and its reply (``("died", how)`` when the worker is gone)."""
        proc, job = self.busy.pop(conn)
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            proc.join(5.0)
            return job, ("died", _signal_name(proc.exitcode))
        if reply[0] == "interrupted":
            proc.join(1.0)
        else:
            self.idle.append((proc, conn))
        return job, reply

    def stop(self) -> None:
        """Idle workers exit now; busy ones get SIGINT, then SIGTERM after ``STOP_GRACE_S``."""
        for _proc, conn in self.idle:
            conn.close()
        busy = [proc for proc, _ in self.busy.values()]
        for proc in busy:
            if proc.pid is not None and proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in busy + [p for p, _ in self.idle]:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
        self.idle, self.busy = [], {}

    def close(self) -> None:
        """Every worker exits (they are idle once all runs ended)."""
        for _proc, conn in self.idle:
            conn.close()
        for proc, _ in self.idle:
            proc.join(5.0)
            if proc.is_alive():
                proc.terminate()
        self.idle = []


def _run_parallel(pending: Sequence[Job], n_jobs: int, threads: int | None, context, show: bool) -> int:
    queue = deque(
        (dataclasses.replace(cfg, num_threads=threads) if cfg.num_threads is None else cfg, folder, desc)
        for cfg, folder, desc in pending
    )
    total = len(queue)
    workers = _Workers(min(n_jobs, total), context)
    errors: list[str] = []
    user_errors = True
    ran = done = 0
    try:
        while queue or workers.busy:
            while queue and len(workers.busy) < workers.size:
                workers.start(queue.popleft())
            for conn in wait(list(workers.busy)):
                (_, folder, desc), reply = workers.finished(conn)
                done += 1
                if reply[0] == "done":
                    ran += reply[1]
                    status = "done"
                elif reply[0] == "interrupted":  # the worker alone got a SIGINT: its run failed
                    errors.append(f"run {folder}: interrupted; rerun the same command to resume it")
                    status = "interrupted"
                elif reply[0] == "died":
                    errors.append(f"run {folder}: its worker process {reply[1]}; rerun the same command "
                                  "to resume it")
                    status = f"failed (worker {reply[1]})"
                else:
                    errors.append(f"run {folder}: {reply[1]}")
                    user_errors = user_errors and reply[2]
                    status = f"failed ({reply[1].split(':', 1)[0]})"
                if show:
                    label = desc if desc.startswith("[") else f"[{done}/{total}] {desc or folder}"
                    print(f"{label}: {status}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        queue.clear()
        workers.stop()
        raise
    workers.close()
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RunError(errors[0] + more, user_error=user_errors)
    return ran
