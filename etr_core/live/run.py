"""A live run as the server sees it: its worker, its histories and its state (paper section 5).

:class:`LiveRun` starts the training of several methods (:class:`etr_core.live.engine.RunEngine`)
in a worker process (:mod:`etr_core.live.worker`; ``in_process=True`` runs it in a thread instead,
for tests with stand-in training functions), receives the worker's events on a reader thread and
keeps them in columnar histories. Pages only call :meth:`LiveRun.snapshot` (optionally for the rows
since the last ones they saw) and :meth:`LiveRun.stop`; no UI framework is imported here.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from etr_core._validation import check_choice, check_int, check_positive
from etr_core.live.engine import SCHEDULES, RunEngine, _config_method
from etr_core.live.history import (
    ACTIVE,
    DIVERGED,
    EARLY_END,
    EVAL_COLUMNS,
    FAILED,
    QUEUED,
    RUNNING,
    STARTING,
    STEP_COLUMNS,
    STEP_EXTRAS,
    STOPPED,
    History,
    LiveSnapshot,
)
from etr_core.live.monitor import StallRule
from etr_core.live.worker import WorkerSpec, mp_context, worker_main

__all__ = ["LiveRun", "new_run_id", "stop_all_runs"]

STOP_GRACE_S = 10.0  # a worker that ignores Stop this long is terminated (its rows are kept)
OVERRUN_GRACE_S = 30.0  # ... and one that outlives its time limit by this much

_ALL_RUNS: weakref.WeakSet[LiveRun] = weakref.WeakSet()
_ALL_RUNS_LOCK = threading.Lock()


def new_run_id() -> str:
    """An unguessable run id for URLs (11 characters of ``[A-Za-z0-9_-]``)."""
    return secrets.token_urlsafe(8)


def stop_all_runs(timeout: float = 10.0) -> int:
    """Stop every live run of this process and wait up to ``timeout`` s in total; return how many
    were still alive afterwards (0 when all workers ended)."""
    with _ALL_RUNS_LOCK:
        runs = list(_ALL_RUNS)
    for run in runs:
        run.stop("released")
    deadline = time.monotonic() + timeout
    for run in runs:
        run.join(max(0.0, deadline - time.monotonic()))
    return sum(run.is_alive() for run in runs)


class LiveRun:
    """A multi-method comparison trained outside the server's interpreter (paper section 5, Figs. 3-4).

    ``configs``: one :class:`etr_core.training.TrainConfig` per method (unique ``method``).
    ``max_backprops`` stops each method at that many backpropagations; ``max_seconds`` caps the whole
    run's wall clock (``None``: no cap); ``stall_rule`` ends methods that can no longer make progress
    (``None``: never). ``torch_threads`` and ``nice`` apply to the worker process only. ``train_fn``
    replaces :func:`etr_core.training.train` (it must be picklable unless ``in_process``).
    ``settings`` is kept with the run for the pages that show it (targets, thresholds).
    """

    def __init__(
        self,
        configs: Sequence[Any],
        *,
        max_seconds: float | None = 120.0,
        max_backprops: int | None = None,
        schedule: str = "backprops",
        torch_threads: int | None = 1,
        nice: int = 10,
        stall_rule: StallRule | None = StallRule(),  # noqa: B008 (frozen dataclass)
        train_fn: Callable[..., Any] | None = None,
        in_process: bool = False,
        settings: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        configs = list(configs)
        if not configs:
            raise ValueError("configs must name at least one method, got an empty list")
        names = [_config_method(c) for c in configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"each method may appear once per run; repeated: {duplicates}")
        self.max_seconds = check_positive("max_seconds", max_seconds) if max_seconds is not None else None
        self.max_backprops = (check_int("max_backprops", max_backprops, minimum=1)
                              if max_backprops is not None else None)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        if torch_threads is not None:
            torch_threads = check_int("torch_threads", torch_threads, minimum=1, maximum=256)
        self.torch_threads = torch_threads
        self.nice = check_int("nice", nice, minimum=0, maximum=19)
        self.stall_rule = stall_rule
        self.in_process = bool(in_process)
        self._train_fn = train_fn
        self._configs = configs
        self._order = names
        self.id = run_id or new_run_id()
        self.settings = dict(settings or {})
        self.owner: str | None = None
        self.device = _resolve_device(configs[0])
        self.created = time.time()
        self.last_seen = time.monotonic()

        self._lock = threading.Lock()
        self._steps = History((*STEP_COLUMNS, *STEP_EXTRAS))
        self._evals = History(EVAL_COLUMNS)
        self._status = "idle"
        self._message = "Not started."
        self._method_status = dict.fromkeys(names, QUEUED)
        self._progress_of = {n: {"step": 0.0, "epoch": 0.0, "seconds": 0.0, "backprops": 0.0} for n in names}
        self._notes: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._warnings: dict[str, int] = {}
        self._tracebacks: dict[str, str] = {}
        self._results: dict[str, Any] = {}
        self._version = 0
        self._stop_event: Any = None
        self._stop_reason: str | None = None
        self._stop_requested_at: float | None = None
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._running_since: float | None = None
        self._ended_at: float | None = None
        self.ended_wall: float | None = None
        self._on_end: list[Callable[[LiveRun], None]] = []
        with _ALL_RUNS_LOCK:
            _ALL_RUNS.add(self)

    # ------------------------------------------------------------------ state
    @property
    def methods(self) -> list[str]:
        return list(self._order)

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def message(self) -> str:
        with self._lock:
            return self._message

    @property
    def running(self) -> bool:
        """``True`` while queued, starting or training."""
        with self._lock:
            return self._status in ACTIVE

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    @property
    def rows(self) -> int:
        """Rows held (steps and evaluations), for the registry's memory bound."""
        return len(self._steps) + len(self._evals)

    def add_end_callback(self, callback: Callable[[LiveRun], None]) -> None:
        """``callback(run)`` once the run has ended (called from the run's own thread)."""
        self._on_end.append(callback)

    def mark_queued(self, message: str) -> None:
        """Set by the registry while the run waits for a training slot."""
        with self._lock:
            if self._status in ("idle", QUEUED):
                self._status, self._message = QUEUED, message
                self._version += 1

    # ------------------------------------------------------------------ control
    def start(self) -> LiveRun:
        """Start the worker (once); returns ``self``."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this LiveRun was already started; create a new one")
            if self._status not in ("idle", QUEUED):
                return self  # stopped while queued
            self._status, self._message = STARTING, "Starting the worker process."
            self._version += 1
            if self.in_process:
                self._stop_event = threading.Event()
                self._thread = threading.Thread(target=self._main_in_process, name=f"etr-live-{self.id}",
                                                daemon=True)
            else:
                ctx = mp_context()
                self._stop_event = ctx.Event()
                receiver, sender = ctx.Pipe(duplex=False)
                spec = WorkerSpec(self.id, self._configs, self.max_seconds, self.max_backprops, self.schedule,
                                  self.torch_threads, self.nice, self.stall_rule, self._train_fn)
                self._process = ctx.Process(target=worker_main, args=(sender, self._stop_event, spec),
                                            name=f"etr-live-{self.id}", daemon=True)
                self._thread = threading.Thread(target=self._pump, args=(receiver, sender),
                                                name=f"etr-live-{self.id}", daemon=True)
            stop_now = self._stop_reason is not None
        if stop_now:
            self._stop_event.set()
        if self._process is not None:
            self._process.start()
        self._thread.start()
        return self

    def stop(self, reason: str = "user") -> None:
        """Ask every method to stop after its current step (returns at once). A queued run ends here;
        what a running one computed is kept."""
        end_now = False
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
                self._stop_requested_at = time.monotonic()
            event = self._stop_event
            if self._thread is None and self._status in ("idle", QUEUED):
                end_now = True
                self._status = STOPPED
                self._message = {"abandoned": "Cancelled: nobody watched this queued run."}.get(
                    reason, "Stopped while queued.")
                self._method_status = dict.fromkeys(self._order, STOPPED)
                self._ended_at = time.perf_counter()
                self.ended_wall = time.time()
                self._version += 1
        if event is not None:
            event.set()
        if end_now:
            self._ended()

    def fail_queued(self, message: str) -> None:
        """Registry: a queued run that will never get a slot."""
        with self._lock:
            if self._thread is not None or self._status not in ("idle", QUEUED):
                return
            self._status, self._message = FAILED, message
            self._method_status = dict.fromkeys(self._order, FAILED)
            self.ended_wall = time.time()
            self._version += 1
        self._ended()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker and the reader thread; ``True`` if they ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def is_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def release(self, timeout: float = 5.0) -> bool:
        self.stop("released")
        return self.join(timeout)

    # ------------------------------------------------------------------ the worker's side
    def _main_in_process(self) -> None:
        try:
            RunEngine(self._configs, self._apply, self._stop_event, max_seconds=self.max_seconds,
                      max_backprops=self.max_backprops, schedule=self.schedule, train_fn=self._train_fn,
                      stall_rule=self.stall_rule).run()
        except Exception as exc:
            self._apply(("run", FAILED, f"{type(exc).__name__}: {exc}"))
        finally:
            self._ended()

    def _pump(self, receiver: Any, sender: Any) -> None:
        """Reader thread: apply the worker's events, enforce Stop and the time limit, reap the process."""
        process = self._process
        sender.close()  # the worker holds its own copy; EOF arrives when the worker ends
        try:
            while True:  # EOF (the worker ended, all its events read) ends the loop
                if process.is_alive():
                    self._watchdog(process)
                try:
                    if receiver.poll(0.2):
                        self._apply(receiver.recv())
                except (EOFError, OSError):
                    break
        finally:
            receiver.close()
            process.join(5.0)
            with self._lock:
                unfinished = self._status in ACTIVE
                forced = self._stop_reason is not None
            if unfinished:
                code = process.exitcode
                self._apply(("run", STOPPED if forced else FAILED,
                             f"Stopped: the worker was ended after {STOP_GRACE_S:g} s without answering."
                             if forced else f"The worker process ended unexpectedly (exit code {code})."))
            self._ended()

    def _watchdog(self, process: Any) -> None:
        now = time.monotonic()
        with self._lock:
            asked = self._stop_requested_at
            since = self._running_since
        overdue = asked is not None and now - asked > STOP_GRACE_S
        if self.max_seconds is not None and since is not None:
            overdue |= time.perf_counter() - since > self.max_seconds + OVERRUN_GRACE_S
        if overdue:
            with self._lock:
                if self._stop_reason is None:
                    self._stop_reason = "time"
            process.terminate()

    def _apply(self, event: tuple) -> None:
        kind = event[0]
        with self._lock:
            self._version += 1
            if kind == "steps":
                self._steps.append(event[1])
                for row in event[1]:
                    progress = self._progress_of.get(row.get("method"))
                    if progress is not None:
                        for key in progress:
                            value = row.get(key)
                            if isinstance(value, (int, float)) and math.isfinite(value):
                                progress[key] = float(value)
            elif kind == "evals":
                self._evals.append(event[1])
            elif kind == "method":
                _, name, status, detail = event
                self._method_status[name] = status
                if detail and status in (FAILED, DIVERGED):
                    self._errors[name] = detail
                if detail and status in EARLY_END:
                    self._notes[name] = detail
            elif kind == "run":
                _, status, message = event
                if status == RUNNING:
                    self._running_since = time.perf_counter()
                    self._status, self._message = RUNNING, self._running_message()
                elif self._status in ACTIVE:
                    self._status, self._message = status, message
                    self._ended_at = time.perf_counter()
                    self.ended_wall = time.time()
            elif kind == "result":
                self._results[event[1]] = event[2]
            elif kind == "traceback":
                self._tracebacks[event[1]] = event[2]
            elif kind == "warnings":
                self._warnings[event[1]] = int(event[2])

    def _ended(self) -> None:
        with self._lock:
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(self)

    def _running_message(self) -> str:
        how = {"backprops": "interleaved: the method with the fewest backprops takes the next step",
               "steps": "interleaved: one step per method in turn",
               "sequential": "one method after another"}[self.schedule]
        where = "in this server process" if self.in_process else "in a worker process"
        threads = ""
        if self.device == "cpu" and self.torch_threads:
            threads = f", {self.torch_threads} torch thread(s)"
        return f"Training {', '.join(self._order)} on {self.device} {where}{threads} ({how})."

    # ------------------------------------------------------------------ reading
    def _elapsed_locked(self) -> float:
        if self._running_since is None:
            return 0.0
        end = self._ended_at if self._ended_at is not None else time.perf_counter()
        return max(0.0, end - self._running_since)

    def _progress_locked(self) -> float:
        if self._status not in ACTIVE and self._status != "idle":
            return 1.0
        fractions = []
        for name, config in zip(self._order, self._configs):
            if self._method_status[name] not in (QUEUED, RUNNING):
                fractions.append(1.0)
                continue
            done = self._progress_of[name]
            parts = [0.0]
            for limit, key in ((getattr(config, "max_steps", None), "step"),
                               (getattr(config, "max_epochs", None), "epoch"),
                               (getattr(config, "max_seconds", None), "seconds"),
                               (self.max_backprops, "backprops")):
                if limit:
                    parts.append(done[key] / float(limit))
            fractions.append(min(1.0, max(parts)))
        value = sum(fractions) / len(fractions)
        if self.max_seconds:
            value = max(value, self._elapsed_locked() / self.max_seconds)
        return float(min(1.0, max(0.0, value)))

    def progress(self) -> float:
        """Fraction of the budget used, in ``[0, 1]`` (1 once the run has ended)."""
        with self._lock:
            return self._progress_locked()

    def snapshot(self, steps_since: int = 0, evals_since: int = 0) -> LiveSnapshot:
        """The run's state and the rows from ``steps_since`` / ``evals_since`` on, mutually consistent."""
        self.last_seen = time.monotonic()
        with self._lock:
            n_steps, n_evals = len(self._steps), len(self._evals)
            s0, e0 = min(max(0, int(steps_since)), n_steps), min(max(0, int(evals_since)), n_evals)
            steps, evals = self._steps.frame(s0, n_steps), self._evals.frame(e0, n_evals)
            return LiveSnapshot(
                status=self._status, message=self._message, progress=self._progress_locked(),
                elapsed=self._elapsed_locked(), methods=list(self._order),
                method_status=dict(self._method_status), errors=dict(self._errors), steps=steps, evals=evals,
                device=self.device, run_id=self.id, notes=dict(self._notes), warnings=dict(self._warnings),
                n_steps=n_steps, n_evals=n_evals, steps_since=s0, evals_since=e0, version=self._version,
                settings=dict(self.settings),
            )

    def tracebacks(self) -> dict[str, str]:
        """Full tracebacks of the methods that raised (for logs; the page shows the one-line error)."""
        with self._lock:
            return dict(self._tracebacks)

    def results(self) -> dict[str, Any]:
        """The summary dict of every method whose training loop returned (``RunResult.summary``)."""
        with self._lock:
            return dict(self._results)


def _resolve_device(config: Any) -> str:
    wanted = str(getattr(config, "device", "auto") or "auto")
    if wanted == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted
