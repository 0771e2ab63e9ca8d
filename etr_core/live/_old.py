"""Background training worker for the live page: several methods, one comparison (paper section 5).

A :class:`LiveRun` trains a list of :class:`etr_core.training.TrainConfig` (one per method) in
daemon threads and records every ``on_step`` / ``on_eval`` record under a lock, so a polling UI can
draw the loss over backpropagations, epochs or seconds while training goes on (Figs. 3, 4, 9, 10).
It never imports a UI framework; the page only calls :meth:`LiveRun.start`, :meth:`LiveRun.stop`
and :meth:`LiveRun.snapshot`.

Schedule. The methods are *interleaved*: each method runs ``training.train`` in its own thread,
but a baton lets exactly one thread compute at a time. With ``schedule="backprops"`` (default) the
method with the fewest backpropagations so far takes the next step, so all curves advance along
the paper's x-axis at the same frontier and a viewer compares them fairly at every moment;
``"steps"`` is plain round-robin per step; ``"sequential"`` trains the methods one after another.
One thread computing at a time keeps the CPU free for the server and gives every method the same
conditions for wall-clock comparisons (``training.train`` counts only the steps' own time in
``seconds``, so waiting for the baton inside a callback never inflates the wall-clock axis).

Resources. A process-wide cap (:func:`global_slots`; ``ETR_LIVE_MAX_RUNS``, default 2) bounds the
runs that train at once; a run that finds no free slot waits in ``"queued"`` (stoppable) and gives
up with a clear ``"failed: ..."`` status after ``queue_timeout`` seconds. On CPU each worker thread
uses ``torch_threads`` intra-op threads (1 by default: small nets run faster single-threaded and
leave the other cores to the server).
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from etr_core._validation import check_choice, check_int, check_positive

__all__ = [
    "EVAL_COLUMNS",
    "SCHEDULES",
    "STEP_COLUMNS",
    "SUMMARY_COLUMNS",
    "LiveRun",
    "LiveSnapshot",
    "RunHolder",
    "RunSlots",
    "comparison_configs",
    "describe_race",
    "global_slots",
    "local_dataset_status",
    "max_concurrent_runs",
    "max_steps_cap",
    "metrics_csv",
    "read_metrics_csv",
    "release_holder",
    "stop_all_runs",
    "summarize",
    "target_reached",
    "warm_up_training",
]

SCHEDULES: tuple[str, ...] = ("backprops", "steps", "sequential")
STEP_COLUMNS: tuple[str, ...] = (
    "method", "step", "forward", "backward", "hvp", "backprops", "epoch", "seconds", "loss",
    "rho", "radius", "accepted", "cg_iterations", "exit",
)
EVAL_COLUMNS: tuple[str, ...] = (
    "method", "step", "backprops", "epoch", "seconds", "train_loss", "train_acc", "test_loss", "test_acc",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method", "status", "steps", "backprops", "epochs", "seconds", "final_batch_loss", "final_train_loss",
    "final_train_acc", "final_test_acc", "backprops_to_loss", "seconds_to_loss", "backprops_to_acc",
    "seconds_to_acc",
)

MAX_RUNS_ENV = "ETR_LIVE_MAX_RUNS"
MAX_STEPS_CAP_ENV = "ETR_LIVE_MAX_STEPS_CAP"
DEFAULT_MAX_RUNS = 2
_MAX_RUNS_LIMIT = 64

QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
STOPPED = "stopped"
FAILED = "failed"
DIVERGED = "diverged"

TrainFn = Callable[..., Any]


# --------------------------------------------------------------------------- concurrency cap


def max_steps_cap() -> int | None:
    """Server-wide cap on steps per method (``$ETR_LIVE_MAX_STEPS_CAP``, a positive integer), e.g.
    for shared or CI servers; ``None`` when unset."""
    raw = os.environ.get(MAX_STEPS_CAP_ENV)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_STEPS_CAP_ENV} must be a positive integer, got {raw!r}") from None
    return check_int(MAX_STEPS_CAP_ENV, value, minimum=1)


def max_concurrent_runs() -> int:
    """The process-wide cap on training runs: ``$ETR_LIVE_MAX_RUNS`` (1..64), else 2."""
    raw = os.environ.get(MAX_RUNS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_RUNS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{MAX_RUNS_ENV} must be an integer in [1, {_MAX_RUNS_LIMIT}], got {raw!r}"
        ) from None
    return check_int(MAX_RUNS_ENV, value, minimum=1, maximum=_MAX_RUNS_LIMIT)


class RunSlots:
    """A bounded number of training slots (a ``threading.BoundedSemaphore`` with a usage count)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = check_int("capacity", capacity, minimum=1, maximum=_MAX_RUNS_LIMIT)
        self._semaphore = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._in_use = 0

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds; ``True`` on success."""
        if not self._semaphore.acquire(timeout=max(0.0, timeout)):
            return False
        with self._lock:
            self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back (raises ``ValueError`` if none is held, as the semaphore is bounded)."""
        with self._lock:
            self._in_use -= 1
        self._semaphore.release()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use


_GLOBAL_SLOTS: RunSlots | None = None
_GLOBAL_SLOTS_LOCK = threading.Lock()


def global_slots() -> RunSlots:
    """The slots shared by every run of this process (created on first use, sized by the env var)."""
    global _GLOBAL_SLOTS
    with _GLOBAL_SLOTS_LOCK:
        if _GLOBAL_SLOTS is None:
            _GLOBAL_SLOTS = RunSlots(max_concurrent_runs())
        return _GLOBAL_SLOTS


_ALL_RUNS: weakref.WeakSet[LiveRun] = weakref.WeakSet()
_ALL_RUNS_LOCK = threading.Lock()


def stop_all_runs(timeout: float = 10.0) -> int:
    """Stop every live run of this process and wait up to ``timeout`` s in total; return how many
    were still alive afterwards (0 when all threads ended)."""
    with _ALL_RUNS_LOCK:
        runs = list(_ALL_RUNS)
    for run in runs:
        run.stop()
    deadline = time.monotonic() + timeout
    for run in runs:
        run.join(max(0.0, deadline - time.monotonic()))
    return sum(run.is_alive() for run in runs)


# --------------------------------------------------------------------------- interleaving baton


class _Baton:
    """Lets exactly one method thread compute at a time; the next turn goes to the active method
    with the smallest progress key (backprops or steps), ties broken by the order given."""

    def __init__(self, names: Sequence[str]) -> None:
        self._cond = threading.Condition()
        self._order = {name: i for i, name in enumerate(names)}
        self._active = set(names)
        self._progress = dict.fromkeys(names, 0.0)
        self._released = False

    def _holder(self) -> str | None:
        if not self._active:
            return None
        return min(self._active, key=lambda n: (self._progress[n], self._order[n]))

    def wait_turn(self, name: str) -> float:
        """Block until ``name`` may compute; return the seconds spent waiting."""
        start = time.perf_counter()
        with self._cond:
            while not self._released and self._holder() != name:
                self._cond.wait(0.25)
        return time.perf_counter() - start

    def advance(self, name: str, progress: float) -> None:
        with self._cond:
            if progress == progress:  # NaN never moves a method to the front
                self._progress[name] = float(progress)
            self._cond.notify_all()

    def leave(self, name: str) -> None:
        with self._cond:
            self._active.discard(name)
            self._cond.notify_all()

    def release_all(self) -> None:
        """Let every thread run (used on stop so all loops see the event at once)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()


# --------------------------------------------------------------------------- the run


class _EitherEvent:
    """Stop signal of one method: the run's event or the method's own (its backprop budget)."""

    def __init__(self, run_event: threading.Event, method_event: threading.Event) -> None:
        self._events = (run_event, method_event)

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


@dataclass
class _MethodState:
    name: str
    config: Any
    budget_event: threading.Event = field(default_factory=threading.Event)
    status: str = QUEUED
    steps: int = 0
    epoch: float = 0.0
    backprops: float = 0.0
    seconds: float = 0.0
    waited: float = 0.0
    error: str | None = None
    traceback: str | None = None
    result: Any = None


@dataclass
class LiveSnapshot:
    """A consistent copy of a run's state, taken under the run's lock."""

    status: str
    message: str
    progress: float
    elapsed: float
    methods: list[str]
    method_status: dict[str, str]
    errors: dict[str, str]
    steps: pd.DataFrame
    evals: pd.DataFrame
    device: str = "cpu"

    @property
    def running(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    @property
    def done(self) -> bool:
        return not self.running and self.status != "idle"


def _plain(value: Any) -> Any:
    """Tensor / numpy scalars become Python numbers so records never hold device memory."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, RuntimeError):
            return value
    return value


def _frame(records: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    extras = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=[*columns, *extras])


def _config_method(config: Any) -> str:
    method = getattr(config, "method", None)
    if not isinstance(method, str):
        raise TypeError(f"every config needs a string attribute 'method', got {method!r}")
    return method


def _resolve_device(config: Any) -> str:
    wanted = str(getattr(config, "device", "auto") or "auto")
    if wanted == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


class LiveRun:
    """A multi-method comparison trained in background threads (paper section 5, Figs. 3, 4).

    ``configs``: one training config per method (attribute ``method`` must be unique; ``max_steps``,
    ``max_epochs`` and ``max_seconds`` are read for the progress bar). ``max_backprops`` stops each
    method once it has used that many backpropagations (the paper's cost unit, so every method gets
    the same budget on the x-axis of Figs. 3-4). ``max_seconds`` caps the whole run's wall clock
    (``None``: no cap). ``train_fn`` defaults to :func:`etr_core.training.train` and receives
    ``(config, callbacks=[obj], stop_event=event)``. ``slots`` defaults to :func:`global_slots`.
    """

    def __init__(
        self,
        configs: Sequence[Any],
        *,
        max_seconds: float | None = 120.0,
        max_backprops: int | None = None,
        schedule: str = "backprops",
        torch_threads: int | None = 1,
        queue_timeout: float = 600.0,
        train_fn: TrainFn | None = None,
        slots: RunSlots | None = None,
    ) -> None:
        configs = list(configs)
        if not configs:
            raise ValueError("configs must name at least one method, got an empty list")
        names = [_config_method(c) for c in configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"each method may appear once per run; repeated: {duplicates}")
        if max_seconds is not None:
            max_seconds = check_positive("max_seconds", max_seconds)
        if max_backprops is not None:
            max_backprops = check_int("max_backprops", max_backprops, minimum=1)
        self.max_backprops = max_backprops
        check_choice("schedule", schedule, SCHEDULES)
        if torch_threads is not None:
            torch_threads = check_int("torch_threads", torch_threads, minimum=1, maximum=256)
        self.queue_timeout = check_positive("queue_timeout", queue_timeout)
        self.max_seconds = max_seconds
        self.schedule = schedule
        self.torch_threads = torch_threads
        self._train_fn = train_fn
        self._slots = slots
        self._methods = {n: _MethodState(n, c) for n, c in zip(names, configs)}
        self._order = names
        self.device = _resolve_device(configs[0])

        self._lock = threading.Lock()
        self._steps: list[dict] = []
        self._evals: list[dict] = []
        self._status = "idle"
        self._message = "Not started."
        self._stop_event = threading.Event()
        self._stop_reason: str | None = None
        self._baton: _Baton | None = None
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._running_since: float | None = None
        self._ended_at: float | None = None
        with _ALL_RUNS_LOCK:
            _ALL_RUNS.add(self)

    # ------------------------------------------------------------------ public control

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
        """``True`` while queued or training."""
        with self._lock:
            return self._status in (QUEUED, RUNNING)

    @property
    def stop_event(self) -> threading.Event:
        return self._stop_event

    def start(self) -> LiveRun:
        """Start the background thread (once); returns ``self``."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this LiveRun was already started; create a new one")
            self._status = QUEUED
            self._message = "Waiting for a training slot."
            self._started_at = time.perf_counter()
            self._thread = threading.Thread(target=self._main, name="etr-live-run", daemon=True)
        self._thread.start()
        return self

    def stop(self, reason: str = "user") -> None:
        """Ask every method to stop after its current step (co-operative; returns at once)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            baton = self._baton
        self._stop_event.set()
        if baton is not None:
            baton.release_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run's threads; ``True`` if they ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def is_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def release(self, timeout: float = 5.0) -> bool:
        """Stop and wait (cleanup when the owning session ends); ``True`` if the threads ended."""
        self.stop("released")
        return self.join(timeout)

    # ------------------------------------------------------------------ reading

    def _elapsed_locked(self) -> float:
        if self._running_since is None:
            return 0.0
        end = self._ended_at if self._ended_at is not None else time.perf_counter()
        return max(0.0, end - self._running_since)

    def _progress_locked(self) -> float:
        if self._status in (FINISHED, STOPPED) or self._status.startswith(FAILED):
            return 1.0
        fractions = []
        for state in self._methods.values():
            if state.status in (FINISHED, STOPPED, FAILED, DIVERGED):
                fractions.append(1.0)
                continue
            config = state.config
            parts = [0.0]
            max_steps = getattr(config, "max_steps", None)
            max_epochs = getattr(config, "max_epochs", None)
            max_train_seconds = getattr(config, "max_seconds", None)
            if max_steps:
                parts.append(state.steps / float(max_steps))
            if max_epochs:
                parts.append(state.epoch / float(max_epochs))
            if max_train_seconds:
                parts.append(state.seconds / float(max_train_seconds))
            if self.max_backprops:
                parts.append(state.backprops / float(self.max_backprops))
            fractions.append(min(1.0, max(parts)))
        value = sum(fractions) / len(fractions)
        if self.max_seconds:
            value = max(value, self._elapsed_locked() / self.max_seconds)
        return float(min(1.0, max(0.0, value)))

    def progress(self) -> float:
        """Fraction of the budget used, in ``[0, 1]`` (1 once the run has ended)."""
        with self._lock:
            return self._progress_locked()

    def snapshot(self) -> LiveSnapshot:
        """Copies of the histories and the state, all taken under one lock (mutually consistent)."""
        with self._lock:
            steps = list(self._steps)
            evals = list(self._evals)
            status, message = self._status, self._message
            progress = self._progress_locked()
            elapsed = self._elapsed_locked()
            method_status = {n: s.status for n, s in self._methods.items()}
            errors = {n: s.error for n, s in self._methods.items() if s.error}
        return LiveSnapshot(
            status=status, message=message, progress=progress, elapsed=elapsed, methods=list(self._order),
            method_status=method_status, errors=errors, steps=_frame(steps, STEP_COLUMNS),
            evals=_frame(evals, EVAL_COLUMNS), device=self.device,
        )

    def tracebacks(self) -> dict[str, str]:
        """Full tracebacks of the methods that raised (for logs; the page shows the one-line error)."""
        with self._lock:
            return {n: s.traceback for n, s in self._methods.items() if s.traceback}

    def results(self) -> dict[str, Any]:
        """The summary dict of every method whose training loop returned (``RunResult.summary``)."""
        with self._lock:
            return {n: s.result for n, s in self._methods.items() if s.result is not None}

    # ------------------------------------------------------------------ worker side

    def _record_step(self, state: _MethodState, record: dict) -> None:
        row = {k: _plain(v) for k, v in record.items()}
        row["method"] = state.name
        with self._lock:
            self._steps.append(row)
            state.steps = int(row.get("step") or state.steps + 1)
            state.epoch = float(row.get("epoch") or 0.0)
            state.backprops = float(row.get("backprops") or 0.0)
            state.seconds = float(row.get("seconds") or 0.0)

    def _record_eval(self, state: _MethodState, record: dict) -> None:
        row = {k: _plain(v) for k, v in record.items()}
        row["method"] = state.name
        with self._lock:
            self._evals.append(row)

    def _callbacks(self, state: _MethodState) -> Any:
        run = self

        class _Recorder:
            """Callback object handed to ``train``: records, then passes the baton."""

            def on_step(self, record: dict) -> None:
                run._record_step(state, record)
                if run.max_backprops is not None and state.backprops >= run.max_backprops:
                    state.budget_event.set()
                baton = run._baton
                if baton is not None:
                    key = state.backprops if run.schedule == "backprops" else float(state.steps)
                    baton.advance(state.name, key)
                    state.waited += baton.wait_turn(state.name)

            def on_eval(self, record: dict) -> None:
                run._record_eval(state, record)

        return _Recorder()

    def _set_method_status(self, state: _MethodState, status: str) -> None:
        with self._lock:
            state.status = status

    def _train_one(self, state: _MethodState, train_fn: TrainFn) -> None:
        import torch

        baton = self._baton
        threads_before = torch.get_num_threads()
        try:
            if self.torch_threads is not None and self.device == "cpu":
                # Also the default for threads started later (e.g. the server's next script runs):
                # restored in ``finally`` so the rest of the app keeps its thread count.
                torch.set_num_threads(self.torch_threads)
            if baton is not None:
                baton.wait_turn(state.name)  # setup time before the first step is not counted
            if self._stop_event.is_set():
                self._set_method_status(state, STOPPED)
                return
            self._set_method_status(state, RUNNING)
            result = train_fn(
                state.config,
                callbacks=[self._callbacks(state)],
                stop_event=_EitherEvent(self._stop_event, state.budget_event),
            )
            reason = str(getattr(result, "stop_reason", "") or "")
            with self._lock:
                # keep the summary, not the RunResult: its model would pin (GPU) memory for the session
                state.result = getattr(result, "summary", None)
                if reason == "nonfinite_loss":
                    state.status = DIVERGED
                    summary = getattr(result, "summary", None) or {}
                    state.error = str(summary.get("stop_detail") or "non-finite loss")
                elif self._stop_event.is_set():
                    state.status = STOPPED
                else:
                    state.status = FINISHED
        except Exception as exc:  # captured for the UI; the other methods carry on
            with self._lock:
                state.status = FAILED
                state.error = f"{type(exc).__name__}: {exc}"
                state.traceback = traceback.format_exc()
        finally:
            torch.set_num_threads(threads_before)
            if baton is not None:
                baton.leave(state.name)

    def _wait_for_slot(self, slots: RunSlots) -> bool:
        deadline = time.perf_counter() + self.queue_timeout
        while not self._stop_event.is_set():
            if slots.acquire(timeout=0.1):
                return True
            with self._lock:
                self._message = (
                    f"Queued: {slots.in_use} of {slots.capacity} training slots on this server are busy; "
                    "the run starts when one frees up (Stop cancels)."
                )
            if time.perf_counter() > deadline:
                with self._lock:
                    self._status = (
                        f"{FAILED}: no free training slot after {self.queue_timeout:g} s "
                        f"({slots.capacity} runs already training); try again later"
                    )
                    self._message = self._status
                return False
        return False

    def _main(self) -> None:
        slots = self._slots if self._slots is not None else global_slots()
        if not self._wait_for_slot(slots):
            with self._lock:
                if not self._status.startswith(FAILED):
                    self._status = STOPPED
                    self._message = "Stopped while queued."
                for state in self._methods.values():
                    state.status = STOPPED if not self._status.startswith(FAILED) else FAILED
                self._ended_at = time.perf_counter()
            return
        try:
            self._run_methods()
        except Exception as exc:  # a fault in the coordinator itself
            with self._lock:
                self._status = f"{FAILED}: {type(exc).__name__}: {exc}"
                self._message = self._status
        finally:
            slots.release()

    def _run_methods(self) -> None:
        train_fn = self._train_fn
        if train_fn is None:
            from etr_core.training import train as train_fn
        sequential = self.schedule == "sequential"
        with self._lock:
            self._status = RUNNING
            self._running_since = time.perf_counter()
            if not sequential:
                self._baton = _Baton(self._order)
            self._message = self._running_message()
        if self._stop_event.is_set() and self._baton is not None:
            self._baton.release_all()
        threads = [
            threading.Thread(
                target=self._train_one, args=(state, train_fn), name=f"etr-live-{name}", daemon=True
            )
            for name, state in self._methods.items()
        ]
        groups = [[t] for t in threads] if sequential else [threads]
        for group in groups:
            for thread in group:
                thread.start()
            for thread in group:
                while thread.is_alive():
                    thread.join(0.1)
                    self._enforce_time_limit()
        self._finish()

    def _running_message(self) -> str:
        how = {
            "backprops": "interleaved: the method with the fewest backprops takes the next step",
            "steps": "interleaved: one step per method in turn",
            "sequential": "one method after another",
        }[self.schedule]
        threads = ""
        if self.device == "cpu" and self.torch_threads:
            threads = f", {self.torch_threads} torch thread(s) per method"
        return f"Training {', '.join(self._order)} on {self.device}{threads} ({how})."

    def _enforce_time_limit(self) -> None:
        if self.max_seconds is None or self._stop_event.is_set():
            return
        with self._lock:
            elapsed = self._elapsed_locked()
        if elapsed > self.max_seconds:
            self.stop("time")

    def _finish(self) -> None:
        with self._lock:
            self._ended_at = time.perf_counter()
            elapsed = self._elapsed_locked()
            failed = [(n, s.error) for n, s in self._methods.items() if s.status == FAILED]
            if failed:
                name, error = failed[0]
                self._status = f"{FAILED}: {name}: {error}"
                self._message = (
                    f"{len(failed)} of {len(self._methods)} method(s) raised an error; first: {name}: {error}"
                )
            elif self._stop_reason in ("user", "released"):
                self._status = STOPPED
                self._message = f"Stopped after {elapsed:.1f} s."
            elif self._stop_reason == "time":
                self._status = FINISHED
                self._message = f"Finished: the time limit of {self.max_seconds:g} s was reached."
            else:
                self._status = FINISHED
                self._message = f"Finished: every method used its budget ({elapsed:.1f} s)."
            diverged = [n for n, st in self._methods.items() if st.status == DIVERGED]
            if diverged and not failed:
                self._message += (
                    " Diverged (non-finite loss; stopped with the last finite weights): "
                    f"{', '.join(diverged)}."
                )


# --------------------------------------------------------------------------- session holder


class RunHolder:
    """Per-session home of the current run: starting a new one stops the old one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run: LiveRun | None = None

    @property
    def run(self) -> LiveRun | None:
        with self._lock:
            return self._run

    def replace(self, run: LiveRun | None) -> None:
        with self._lock:
            old, self._run = self._run, run
        if old is not None and old is not run:
            old.stop("released")

    def release(self, timeout: float = 5.0) -> None:
        """Stop the held run and wait briefly for its threads (called when the session ends)."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            run.release(timeout)


def release_holder(holder: RunHolder) -> None:
    """``on_release`` hook for a session-scoped resource cache holding a :class:`RunHolder`: signals
    the run to stop and returns at once (the hook may run on the server's event loop, which must not
    block; the daemon threads end after their current step)."""
    holder.release(timeout=0.0)


# --------------------------------------------------------------------------- summaries and export


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
) -> pd.DataFrame:
    """One row per method: budget used, final numbers, and backprops / seconds to reach the targets.

    Targets are checked on the evaluation records (loss and accuracy over the whole training set,
    as in Fig. 3's 99%-accuracy line): the first evaluation with ``train_loss <= loss_target``
    or ``train_acc >= accuracy_target``. NaN where a target was not reached or not set.
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
            "steps": int(pd.to_numeric(s["step"]).max()) if len(s) else 0,
            "backprops": _last_finite(s, "backprops") if len(s) else 0.0,
            "epochs": _last_finite(s, "epoch") if len(s) else 0.0,
            "seconds": _last_finite(s, "seconds") if len(s) else 0.0,
            "final_batch_loss": _last_finite(s, "loss"),
            "final_train_loss": _last_finite(e, "train_loss"),
            "final_train_acc": _last_finite(e, "train_acc"),
            "final_test_acc": _last_finite(e, "test_acc"),
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


def describe_race(summary: pd.DataFrame, column: str, target_text: str) -> str:
    """A sentence saying which method reached a target first in ``column`` and by how much.

    ``column`` is a summary column such as ``"backprops_to_acc"``; ``target_text`` names the target
    (e.g. ``"95% training accuracy"``). Built only from the numbers in ``summary``.
    """
    if summary.empty or column not in summary:
        return "No method has recorded an evaluation yet."
    unit = "backprops" if column.startswith("backprops") else "seconds"
    fmt = _count if unit == "backprops" else (lambda v: f"{v:.2f}")
    values = pd.to_numeric(summary[column], errors="coerce")
    reached = summary[values.notna()].assign(_v=values[values.notna()]).sort_values("_v", kind="stable")
    missed = list(summary.loc[values.isna(), "method"])
    if reached.empty:
        return f"No method reached {target_text} yet."
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
    return text


def metrics_csv(steps: pd.DataFrame, evals: pd.DataFrame) -> bytes:
    """Both histories as one CSV (UTF-8): a ``record`` column says ``step`` or ``eval``; non-finite
    numbers are written as empty fields."""
    steps = steps.assign(record="step")
    evals = evals.assign(record="eval")
    frame = pd.concat([steps, evals], ignore_index=True, sort=False)
    columns = ["record", *dict.fromkeys([*steps.columns, *evals.columns]).keys()]
    columns = list(dict.fromkeys(columns))
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



# --------------------------------------------------------------------------- building a comparison


def comparison_configs(
    methods: Sequence[str],
    *,
    dataset: str = "digits",
    model: str = "mlp_small",
    seed: int = 0,
    tr_batch_size: int | None = None,
    first_order_batch_size: int | None = None,
    learning_rates: dict[str, float] | None = None,
    tr_options: dict[str, Any] | None = None,
    gamma2: dict[str, float] | None = None,
    max_steps: int | None = 1000,
    eval_every: int = 5,
    device: str = "auto",
    data_options: dict[str, Any] | None = None,
) -> list[Any]:
    """One :class:`etr_core.training.TrainConfig` per method, sharing data, network, seed and budget.

    TR methods get ``tr_options`` (paper Table 1 names: ``radius``, ``max_radius``, ``eta1``,
    ``eta2``, ``gamma1``) plus their own ``gamma2[method]`` where given (Table 1: 1.5 for
    ``TR_uni``/``TR_ada``, 1.75 for ``TR_rms``) and ``tr_batch_size``; first-order methods get
    ``learning_rates[method]`` and ``first_order_batch_size`` (the paper fixes 32 and grid-searches
    the step, section 5). ``max_steps`` is lowered to :func:`max_steps_cap` where that is set.
    Every config is validated on construction.
    """
    from etr_core.training import METHODS, TrainConfig

    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one method, got an empty selection")
    cap = max_steps_cap()
    if cap is not None:
        max_steps = cap if max_steps is None else min(max_steps, cap)
    configs = []
    for method in methods:
        check_choice("method", method, METHODS)
        common = dict(dataset=dataset, model=model, method=method, seed=seed, max_steps=max_steps,
                      eval_every=eval_every, device=device, data_options=dict(data_options or {}))
        if METHODS[method].family == "tr":
            options = dict(tr_options or {})
            if gamma2 and method in gamma2:
                options["gamma2"] = gamma2[method]
            configs.append(TrainConfig(**common, batch_size=tr_batch_size, tr_options=options))
        else:
            lr = (learning_rates or {}).get(method)
            configs.append(TrainConfig(**common, batch_size=first_order_batch_size, lr=lr))
    return configs


_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def local_dataset_status(name: str, root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether a file dataset (``mnist``, ``fashion_mnist``, ``cifar10``) is on disk, without reading
    it, and a message naming the missing files and where they go (layout of :mod:`etr_core.data`).
    Bundled and generated datasets are always available."""
    from etr_core.data import FILE_DATASETS, default_root

    if name not in FILE_DATASETS:
        return True, f"{name} needs no files."
    base = default_root(root)
    if name == "cifar10":
        folder = base / "cifar10" / "cifar-10-batches-py"
        missing = [f for f in _CIFAR_FILES if not (folder / f).exists()]
    else:
        folder = base / name
        missing = [
            f"{stem}.gz" for stem in _IDX_STEMS
            if not ((folder / stem).exists() or (folder / f"{stem}.gz").exists())
        ]
    if not missing:
        return True, f"{name}: files found in {folder}."
    return False, (
        f"{name} is not on this server. Put {', '.join(missing)} into {folder} (or set ETR_DATA to the "
        f"folder that holds '{folder.relative_to(base).parts[0]}/'); `etr download {name}` fetches them "
        "where internet access is available."
    )


def warm_up_training(dataset: str = "digits") -> float:
    """Pay the one-off costs of a first training run (lazy imports such as scikit-learn and
    ``torch._dynamo``, dataset loading, first forward/backward/HVP) in the calling thread, then move
    the objects created so far out of the garbage collector's reach (``gc.freeze``).

    A server that collects garbage after every rerun would otherwise make a fresh worker thread do
    these imports under heavy GIL contention (seconds to tens of seconds before its first step).
    Returns the seconds spent.
    """
    import gc

    from etr_core.training import TrainConfig, train

    start = time.perf_counter()
    for method in ("TR_rms", "Adam"):
        train(TrainConfig(dataset=dataset, method=method, max_steps=1, eval_every=1, device="cpu"))
    gc.collect()
    gc.freeze()
    return time.perf_counter() - start
