"""Starting, watching and stopping the computation of one live run, and metering its CPU (paper
section 5).

:class:`RunControl` is the process side of a :class:`etr_core.live.run.LiveRun`: it starts the
worker process (:mod:`etr_core.live.worker`) and a reader thread that pumps the worker's events into
the run, or, for tests with stand-in training functions, a thread that runs the engine in this
process. It carries Stop to the worker, terminates a worker that ignores Stop or outlives its time
limit, and reaps the process. The run's histories and statuses live in
:class:`etr_core.live.state.RunState`; this class only reads its timing and writes the final status
when a worker vanished without saying so. :class:`CpuMeter` turns the worker's cumulative CPU
reports into increases for the owner's budget. :class:`RunCommands` is the part of ``LiveRun`` that
the registry and the pages call to start, stop and wait for a run, and that folds the worker's
events into the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Self

from etr_core.live.history import FAILED, FINISHED, STARTING, STOPPED
from etr_core.live.state import RunState
from etr_core.live.worker import WorkerSpec, mp_context, start_process, worker_main

__all__ = ["CpuMeter", "RunCommands", "RunControl"]


class CpuMeter:
    """CPU seconds a run used, from cumulative reports (thread-safe); each listener receives every
    increase. Reports that do not grow the total (repeats, NaN, text) are ignored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0.0
        self._listeners: list[Callable[[float], None]] = []

    @property
    def total(self) -> float:
        with self._lock:
            return self._total

    def add_listener(self, listener: Callable[[float], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def report(self, total: Any) -> None:
        """The run has used ``total`` CPU seconds so far: pass the increase on to every listener."""
        try:
            total = float(total)
        except (TypeError, ValueError):
            return
        with self._lock:
            delta = total - self._total
            if not delta > 0:  # also NaN
                return
            self._total = total
            listeners = list(self._listeners)
        for listener in listeners:
            listener(delta)


class RunControl:
    """The worker (or in-process thread) of one run and its Stop signal.

    ``apply(event)`` receives every engine event; ``ended()`` is called once when the computation is
    over (from the reader thread). ``make_spec()`` gives the worker's :class:`WorkerSpec`;
    ``run_in_process(stop_event)`` runs the engine in this process instead when ``in_process``.
    ``grace()`` returns ``(stop_grace_s, overrun_grace_s)``: how long a worker may ignore Stop, and
    outlive ``max_seconds``, before it is terminated (its rows are kept).
    """

    def __init__(self, name: str, state: RunState, *, apply: Callable[[tuple], None],
                 ended: Callable[[], None], make_spec: Callable[[], WorkerSpec],
                 run_in_process: Callable[[Any], None], in_process: bool, max_seconds: float | None,
                 grace: Callable[[], tuple[float, float]]) -> None:
        self.name = name
        self._state = state
        self._apply = apply
        self._ended = ended
        self._make_spec = make_spec
        self._run_in_process = run_in_process
        self.in_process = in_process
        self.max_seconds = max_seconds
        self._grace = grace
        self.lock = threading.Lock()  # the fields below
        self.stop_event: Any = None
        self.stop_reason: str | None = None
        self.stop_requested_at: float | None = None
        self.thread: threading.Thread | None = None
        self.process: Any = None
        self._launched = threading.Event()  # set once start() has started (or failed to start) the thread

    @property
    def waiting(self) -> bool:
        """``True`` until :meth:`start` created the worker (queued or idle runs)."""
        with self.lock:
            return self.thread is None

    def start(self) -> None:
        """Create and start the worker once; nothing happens for a run stopped while it waited."""
        with self.lock:
            if self.thread is not None:
                raise RuntimeError("this LiveRun was already started; create a new one")
            if not self._state.set_waiting(STARTING, "Starting the worker process."):
                return  # stopped while queued
            if self.in_process:
                self.stop_event = threading.Event()
                self.thread = threading.Thread(target=self._main_in_process, name=self.name, daemon=True)
            else:
                ctx = mp_context()
                self.stop_event = ctx.Event()
                receiver, sender = ctx.Pipe(duplex=False)
                args = (sender, self.stop_event, self._make_spec())
                self.process = ctx.Process(target=worker_main, args=args, name=self.name, daemon=True)
                self.thread = threading.Thread(target=self._pump, args=(receiver, sender), name=self.name,
                                               daemon=True)
            stop_now = self.stop_reason is not None
        try:
            if stop_now:
                self.stop_event.set()
            if self.process is not None:
                start_process(self.process)
            self.thread.start()
        finally:
            self._launched.set()

    def request_stop(self, reason: str) -> bool:
        """Signal Stop (the first reason is kept); returns whether the run had not started yet."""
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_requested_at = time.monotonic()
            event, waiting = self.stop_event, self.thread is None
        if event is not None:
            event.set()
        return waiting

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker and the reader thread; ``True`` if they ended."""
        thread = self.thread
        if thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._launched.wait(timeout)  # start() may be between creating the thread and starting it
        if thread.ident is None:  # never started: its start failed, or start() has not got there yet
            return self._launched.is_set()
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def is_alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    # ------------------------------------------------------------------ the threads
    def _main_in_process(self) -> None:
        try:
            self._run_in_process(self.stop_event)
        except Exception as exc:
            self._apply(("run", FAILED, f"{type(exc).__name__}: {exc}"))
        finally:
            self._ended()

    def _pump(self, receiver: Any, sender: Any) -> None:
        """Reader thread: apply the worker's events, enforce Stop and the time limit, reap the process."""
        process = self.process
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
            with self.lock:
                forced = self.stop_reason is not None
            if self._state.active:
                code = process.exitcode
                message = (f"Stopped: the worker was ended after {self._grace()[0]:g} s without answering."
                           if forced else f"The worker process ended unexpectedly (exit code {code}).")
                self._apply(("run", STOPPED if forced else FAILED, message))
            self._ended()

    def _watchdog(self, process: Any) -> None:
        stop_grace, overrun_grace = self._grace()
        now = time.monotonic()
        with self.lock:
            asked = self.stop_requested_at
        since = self._state.running_since
        overdue = asked is not None and now - asked > stop_grace
        if self.max_seconds is not None and since is not None:
            overdue |= time.perf_counter() - since > self.max_seconds + overrun_grace
        if overdue:
            with self.lock:
                if self.stop_reason is None:
                    self.stop_reason = "time"
            process.terminate()


class RunCommands:
    """Start, Stop and waiting for a run, and its event side: the part of
    :class:`etr_core.live.run.LiveRun` that drives its :class:`RunControl` (``_control``), folds the
    worker's events into its :class:`RunState` (``_state``), meters CPU (``_meter``) and calls the
    end callbacks (``_on_end``, under ``_lock``) once."""

    _control: RunControl
    _state: RunState
    _meter: CpuMeter
    _stop_note: str | None
    _on_end: list[Callable[[Any], None]]
    _lock: threading.Lock
    in_process: bool

    def start(self) -> Self:
        """Start the worker (once); returns ``self``."""
        self._control.start()
        return self

    def stop(self, reason: str = "user", note: str | None = None) -> None:
        """Ask every method to stop after its current step (returns at once). A queued run ends here;
        what a running one computed is kept. ``note`` is added to the run's final message (why)."""
        if note and self._stop_note is None:
            self._stop_note = note
        waiting = self._control.request_stop(reason)
        message = ("Cancelled: nobody watched this queued run." if reason == "abandoned"
                   else "Stopped while queued.")
        if note:
            message += " " + note
        if waiting and self._state.set_waiting(STOPPED, message):
            self._ended()

    def fail_queued(self, message: str) -> None:
        """Registry: a queued run that will never get a slot."""
        if self._control.waiting and self._state.set_waiting(FAILED, message):
            self._ended()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker and the reader thread; ``True`` if they ended."""
        return self._control.join(timeout)

    def is_alive(self) -> bool:
        """``True`` while the worker's reader thread (or the in-process thread) runs."""
        return self._control.is_alive()

    def release(self, timeout: float = 5.0) -> bool:
        """Stop the run (reason "released") and wait up to ``timeout`` s; ``True`` if it ended."""
        self.stop("released")
        return self.join(timeout)

    def _apply(self, event: tuple) -> None:
        """Fold one engine event into the state; meter CPU reports (``("cpu", total_seconds)``)."""
        kind = event[0]
        if kind == "cpu":
            self._meter.report(event[1])
            return
        if kind == "run" and event[1] in (STOPPED, FINISHED, FAILED) and self._stop_note:
            event = ("run", event[1], f"{event[2]} {self._stop_note}".strip())
        self._state.apply(event)
        if self.in_process and kind == "steps":
            with self._state.lock:
                elapsed = self._state.elapsed()
            self._meter.report(elapsed)

    def _ended(self) -> None:
        """Call the end callbacks once (each receives the run)."""
        with self._lock:
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(self)
