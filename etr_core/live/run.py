"""A live run as the server sees it: its worker, its histories and its state (paper section 5).

:class:`LiveRun` starts the training of several methods (:class:`etr_core.live.engine.RunEngine`)
in a worker process (:mod:`etr_core.live.worker`; ``in_process=True`` runs it in a thread instead,
for tests with stand-in training functions), receives the worker's events on a reader thread and
keeps them in columnar histories. Pages only call :meth:`LiveRun.snapshot` (optionally for the rows
since the last ones they saw) and :meth:`LiveRun.stop`; no UI framework is imported here.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from etr_core._validation import check_choice, check_int, check_positive
from etr_core.live.engine import SCHEDULES, RunEngine, _config_method
from etr_core.live.history import FAILED, QUEUED, STARTING, STOPPED, LiveSnapshot
from etr_core.live.monitor import StallRule
from etr_core.live.state import RunState
from etr_core.live.worker import WorkerSpec, mp_context, start_process, worker_main

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
    ``share_data=False`` lets every method load its own copy of the data (for measurements).
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
        share_data: bool = True,
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
        self.share_data = bool(share_data)
        self._train_fn = train_fn
        self._configs = configs
        self._order = names
        self.id = run_id or new_run_id()
        self.settings = dict(settings or {})
        self.owner: str | None = None
        self.device = _resolve_device(configs[0])
        self.created = time.time()
        self.last_seen = time.monotonic()

        self._state = RunState(self.id, names, configs, device=self.device, max_seconds=self.max_seconds,
                               max_backprops=self.max_backprops, running_message=self._running_message(),
                               settings=self.settings)
        self._lock = threading.Lock()  # the control fields below; the state has its own lock
        self._stop_event: Any = None
        self._stop_reason: str | None = None
        self._stop_requested_at: float | None = None
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._on_end: list[Callable[[LiveRun], None]] = []
        with _ALL_RUNS_LOCK:
            _ALL_RUNS.add(self)

    # ------------------------------------------------------------------ state
    @property
    def methods(self) -> list[str]:
        return list(self._order)

    @property
    def status(self) -> str:
        with self._state.lock:
            return self._state.status

    @property
    def message(self) -> str:
        with self._state.lock:
            return self._state.message

    @property
    def running(self) -> bool:
        """``True`` while queued, starting or training."""
        return self._state.active

    @property
    def version(self) -> int:
        with self._state.lock:
            return self._state.version

    @property
    def ended_wall(self) -> float | None:
        """Wall-clock time (``time.time()``) the run ended; ``None`` while it has not."""
        return self._state.ended_wall

    @ended_wall.setter
    def ended_wall(self, value: float | None) -> None:
        self._state.ended_wall = value

    @property
    def rows(self) -> int:
        """Rows held (steps and evaluations), for the registry's memory bound."""
        return len(self._state.steps) + len(self._state.evals)

    def add_end_callback(self, callback: Callable[[LiveRun], None]) -> None:
        """``callback(run)`` once the run has ended (called from the run's own thread)."""
        self._on_end.append(callback)

    def mark_queued(self, message: str) -> None:
        """Set by the registry while the run waits for a training slot."""
        self._state.set_waiting(QUEUED, message)

    # ------------------------------------------------------------------ control
    def start(self) -> LiveRun:
        """Start the worker (once); returns ``self``."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this LiveRun was already started; create a new one")
            if not self._state.set_waiting(STARTING, "Starting the worker process."):
                return self  # stopped while queued
            if self.in_process:
                self._stop_event = threading.Event()
                self._thread = threading.Thread(target=self._main_in_process, name=f"etr-live-{self.id}",
                                                daemon=True)
            else:
                ctx = mp_context()
                self._stop_event = ctx.Event()
                receiver, sender = ctx.Pipe(duplex=False)
                spec = WorkerSpec(self.id, self._configs, self.max_seconds, self.max_backprops, self.schedule,
                                  self.torch_threads, self.nice, self.stall_rule, self._train_fn,
                                  self.share_data)
                self._process = ctx.Process(target=worker_main, args=(sender, self._stop_event, spec),
                                            name=f"etr-live-{self.id}", daemon=True)
                self._thread = threading.Thread(target=self._pump, args=(receiver, sender),
                                                name=f"etr-live-{self.id}", daemon=True)
            stop_now = self._stop_reason is not None
        if stop_now:
            self._stop_event.set()
        if self._process is not None:
            start_process(self._process)
        self._thread.start()
        return self

    def stop(self, reason: str = "user") -> None:
        """Ask every method to stop after its current step (returns at once). A queued run ends here;
        what a running one computed is kept."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
                self._stop_requested_at = time.monotonic()
            event, waiting = self._stop_event, self._thread is None
        if event is not None:
            event.set()
        message = ("Cancelled: nobody watched this queued run." if reason == "abandoned"
                   else "Stopped while queued.")
        if waiting and self._state.set_waiting(STOPPED, message):
            self._ended()

    def fail_queued(self, message: str) -> None:
        """Registry: a queued run that will never get a slot."""
        with self._lock:
            waiting = self._thread is None
        if waiting and self._state.set_waiting(FAILED, message):
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
            RunEngine(self._configs, self._state.apply, self._stop_event, max_seconds=self.max_seconds,
                      max_backprops=self.max_backprops, schedule=self.schedule, train_fn=self._train_fn,
                      stall_rule=self.stall_rule).run()
        except Exception as exc:
            self._state.apply(("run", FAILED, f"{type(exc).__name__}: {exc}"))
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
                        self._state.apply(receiver.recv())
                except (EOFError, OSError):
                    break
        finally:
            receiver.close()
            process.join(5.0)
            with self._lock:
                forced = self._stop_reason is not None
            if self._state.active:
                code = process.exitcode
                message = (f"Stopped: the worker was ended after {STOP_GRACE_S:g} s without answering."
                           if forced else f"The worker process ended unexpectedly (exit code {code}).")
                self._state.apply(("run", STOPPED if forced else FAILED, message))
            self._ended()

    def _watchdog(self, process: Any) -> None:
        now = time.monotonic()
        with self._lock:
            asked = self._stop_requested_at
        since = self._state.running_since
        overdue = asked is not None and now - asked > STOP_GRACE_S
        if self.max_seconds is not None and since is not None:
            overdue |= time.perf_counter() - since > self.max_seconds + OVERRUN_GRACE_S
        if overdue:
            with self._lock:
                if self._stop_reason is None:
                    self._stop_reason = "time"
            process.terminate()

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
    def progress(self) -> float:
        """Fraction of the budget used, in ``[0, 1]`` (1 once the run has ended)."""
        with self._state.lock:
            return self._state.progress()

    def snapshot(self, steps_since: int = 0, evals_since: int = 0) -> LiveSnapshot:
        """The run's state and the rows from ``steps_since`` / ``evals_since`` on (see
        :class:`~etr_core.live.history.LiveSnapshot`); reading marks the run as watched."""
        self.last_seen = time.monotonic()
        return self._state.snapshot(steps_since, evals_since)

    def tracebacks(self) -> dict[str, str]:
        """Full tracebacks of the methods that raised (for logs; the page shows the one-line error)."""
        with self._state.lock:
            return dict(self._state.tracebacks)

    def results(self) -> dict[str, Any]:
        """The summary dict of every method whose training loop returned (``RunResult.summary``)."""
        with self._state.lock:
            return dict(self._state.results)


def _resolve_device(config: Any) -> str:
    wanted = str(getattr(config, "device", "auto") or "auto")
    if wanted == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted
