"""A live run as the server sees it: its worker, its histories and its state (paper section 5).

:class:`LiveRun` starts the training of several methods (:class:`etr_core.live.engine.RunEngine`)
in a worker process (:mod:`etr_core.live.worker`; ``in_process=True`` runs it in a thread instead,
for tests with stand-in training functions). :class:`etr_core.live.control.RunControl` starts and
watches that worker and pumps its events here; :class:`etr_core.live.state.RunState` keeps them in
columnar histories; this class ties the two together, meters the worker's CPU for the owner's
budget (:mod:`etr_core.cpu_budget`) and is what the registry and the pages hold. Pages only call
:meth:`LiveRun.snapshot` (optionally for the rows since the last ones they saw) and
:meth:`LiveRun.stop`; no UI framework is imported here.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from etr_core._validation import check_choice, check_int, check_positive
from etr_core.live.control import CpuMeter, RunCommands, RunControl
from etr_core.live.engine import SCHEDULES, RunEngine, _config_method
from etr_core.live.foreground import foreground_pause
from etr_core.live.history import QUEUED, LiveSnapshot
from etr_core.live.monitor import StallRule
from etr_core.live.state import RunState
from etr_core.live.worker import WorkerSpec

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


class RunReadout:
    """What a page reads of a run, all from its :class:`etr_core.live.state.RunState` (``_state``)
    and its method order (``_order``); the base of :class:`LiveRun`."""

    _state: RunState
    _order: list[str]
    last_seen: float

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


class LiveRun(RunReadout, RunCommands):
    """A multi-method comparison trained outside the server's interpreter (paper section 5, Figs. 3-4).

    ``configs``: one :class:`etr_core.training.TrainConfig` per method (unique ``method``).
    ``max_backprops`` stops each method at that many backpropagations; ``max_seconds`` caps the whole
    run's wall clock (``None``: no cap); ``stall_rule`` ends methods that can no longer make progress
    (``None``: never). ``torch_threads``, ``nice`` and ``sched_idle`` apply to the worker process only
    (:func:`etr_core.live.worker.lower_priority`: nice 0 keeps the normal priority; above 0, also
    Linux's ``SCHED_IDLE`` policy unless ``sched_idle=False``). ``train_fn``
    replaces :func:`etr_core.training.train` (it must be picklable unless ``in_process``).
    ``settings`` is kept with the run for the pages that show it (targets, thresholds).
    ``share_data=False`` lets every method load its own copy of the data (for measurements).
    ``foreground`` (the path of the server's :class:`etr_core.live.foreground.ForegroundGate`) makes
    the methods pause between steps while the server draws a page, at most ``yield_max_wait`` s at a
    stretch; ``None`` never pauses.
    The worker itself is handled by :class:`etr_core.live.control.RunControl`; Start, Stop and the
    worker's events by the :class:`etr_core.live.control.RunCommands` part.
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
        sched_idle: bool = True,
        stall_rule: StallRule | None = StallRule(),  # noqa: B008 (frozen dataclass)
        train_fn: Callable[..., Any] | None = None,
        in_process: bool = False,
        settings: dict[str, Any] | None = None,
        run_id: str | None = None,
        share_data: bool = True,
        foreground: str | os.PathLike | None = None,
        yield_max_wait: float = 5.0,
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
        self.sched_idle = bool(sched_idle)
        self.stall_rule = stall_rule
        self.in_process = bool(in_process)
        self.share_data = bool(share_data)
        self.foreground = str(foreground) if foreground is not None else None
        self.yield_max_wait = check_positive("yield_max_wait", yield_max_wait)
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
        self._on_end: list[Callable[[LiveRun], None]] = []
        self._lock = threading.Lock()  # the end callbacks
        self._meter = CpuMeter()
        self._stop_note: str | None = None
        self._control = RunControl(
            f"etr-live-{self.id}", self._state, apply=self._apply, ended=self._ended, make_spec=self._spec,
            run_in_process=self._engine_in_process, in_process=self.in_process, max_seconds=self.max_seconds,
            grace=lambda: (STOP_GRACE_S, OVERRUN_GRACE_S))
        with _ALL_RUNS_LOCK:
            _ALL_RUNS.add(self)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the run's worker process used so far (measured in the worker; for an in-process
        run, the seconds since training began, an upper bound of its single computing thread)."""
        return self._meter.total

    @property
    def _process(self) -> Any:
        return self._control.process

    def copy_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """``(configs, options)`` that start a new run with exactly this run's settings."""
        options = dict(max_seconds=self.max_seconds, max_backprops=self.max_backprops, schedule=self.schedule,
                       torch_threads=self.torch_threads, nice=self.nice, sched_idle=self.sched_idle,
                       stall_rule=self.stall_rule, train_fn=self._train_fn, in_process=self.in_process,
                       settings=dict(self.settings), share_data=self.share_data, foreground=self.foreground,
                       yield_max_wait=self.yield_max_wait)
        return list(self._configs), options

    def add_end_callback(self, callback: Callable[[LiveRun], None]) -> None:
        """``callback(run)`` once the run has ended (called from the run's own thread)."""
        self._on_end.append(callback)

    def add_cpu_callback(self, callback: Callable[[LiveRun, float], None]) -> None:
        """``callback(run, seconds)`` each time the worker reports more CPU used (about once a second,
        from the run's reader thread); ``seconds`` is the increase since the last report."""
        self._meter.add_listener(lambda seconds: callback(self, seconds))

    def mark_queued(self, message: str) -> None:
        """Set by the registry while the run waits for a training slot."""
        self._state.set_waiting(QUEUED, message)

    # ------------------------------------------------------------------ the worker's side
    def _spec(self) -> WorkerSpec:
        return WorkerSpec(self.id, self._configs, max_seconds=self.max_seconds,
                          max_backprops=self.max_backprops, schedule=self.schedule,
                          torch_threads=self.torch_threads, nice=self.nice, sched_idle=self.sched_idle,
                          stall_rule=self.stall_rule, train_fn=self._train_fn, share_data=self.share_data,
                          foreground=self.foreground, yield_max_wait=self.yield_max_wait)

    def _engine_in_process(self, stop_event: Any) -> None:
        RunEngine(self._configs, self._apply, stop_event, max_seconds=self.max_seconds,
                  max_backprops=self.max_backprops, schedule=self.schedule, train_fn=self._train_fn,
                  stall_rule=self.stall_rule,
                  pause=foreground_pause(self.foreground, self.yield_max_wait)).run()

    def _running_message(self) -> str:
        how = {"backprops": "interleaved: the method with the fewest backprops takes the next step",
               "steps": "interleaved: one step per method in turn",
               "sequential": "one method after another"}[self.schedule]
        where = "in this server process" if self.in_process else "in a worker process"
        threads = ""
        if self.device == "cpu" and self.torch_threads:
            threads = f", {self.torch_threads} torch thread(s)"
        return f"Training {', '.join(self._order)} on {self.device} {where}{threads} ({how})."

def _resolve_device(config: Any) -> str:
    wanted = str(getattr(config, "device", "auto") or "auto")
    if wanted == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted
