"""Train several methods as one comparison, interleaved, and report every record to a sink.

The engine runs where the computation happens: inside a worker process (:mod:`etr_core.live.worker`)
or, for tests, in a thread. Each method runs :func:`etr_core.training.train` in its own thread, but
a baton lets exactly one thread compute at a time. With ``schedule="backprops"`` the method with the
fewest backpropagations so far takes the next step, so all curves advance along the paper's x-axis
(Figs. 3-4) at the same frontier; ``"steps"`` is round-robin per step; ``"sequential"`` trains the
methods one after another. ``training.train`` counts only the steps' own time in ``seconds``, so
waiting for the baton never inflates the wall-clock axis (Fig. 10).

Events sent to ``sink`` (tuples): ``("run", status, message)``, ``("method", name, status, detail)``,
``("steps", [record, ...])``, ``("evals", [record, ...])``, ``("result", name, summary)``,
``("traceback", name, text)`` and ``("warnings", name, count)``.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from etr_core.errors import user_message
from etr_core.live.history import (
    CONVERGED,
    DIVERGED,
    EVAL_COLUMNS,
    FAILED,
    FINISHED,
    RUNNING,
    STALLED,
    STEP_COLUMNS,
    STEP_EXTRAS,
    STOPPED,
    plain,
)
from etr_core.live.monitor import MethodMonitor, StallRule, WarningCounter

__all__ = ["SCHEDULES", "RunEngine"]

SCHEDULES: tuple[str, ...] = ("backprops", "steps", "sequential")
Sink = Callable[[tuple], None]
_STEP_KEYS = (*STEP_COLUMNS, *STEP_EXTRAS)


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

    def wait_turn(self, name: str) -> None:
        with self._cond:
            while not self._released and self._holder() != name:
                self._cond.wait(0.25)

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
        with self._cond:
            self._released = True
            self._cond.notify_all()


class _AnyEvent:
    """A method's stop signal: the run's event or the method's own (budget used, or stalled)."""

    def __init__(self, *events: Any) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


class _Method:
    def __init__(self, name: str, config: Any, rule: StallRule | None) -> None:
        self.name = name
        self.config = config
        self.own_stop = threading.Event()
        self.backprops = 0.0
        self.steps = 0
        # a TR method's preset ("paper", "fast", "authors") goes into every step row (the CSV)
        self.preset = str(getattr(config, "preset", "paper")) if getattr(config, "is_tr", False) else None
        dtype = str(getattr(config, "dtype", "float32"))
        self.monitor = MethodMonitor(rule, dtype) if rule is not None else None


def _config_method(config: Any) -> str:
    method = getattr(config, "method", None)
    if not isinstance(method, str):
        raise TypeError(f"every config needs a string attribute 'method', got {method!r}")
    return method


class RunEngine:
    """Runs ``configs`` (one per method) to the end, reporting to ``sink``; :meth:`run` blocks.

    ``max_backprops`` stops each method once it used that many backpropagations (the paper's cost
    unit); ``max_seconds`` caps the whole run's wall clock; ``stall_rule`` (``None``: never) ends a
    method that can no longer make progress. ``train_fn(config, callbacks=..., stop_event=...)``
    defaults to :func:`etr_core.training.train`; ``data`` (a shared, read-only dataset) is passed on
    as ``data=`` when given. ``warnings`` counts optimiser warnings per method. ``pause(should_stop)``,
    when given, is called after every recorded step and may wait there (the server's page loads,
    :mod:`etr_core.live.foreground`).
    """

    def __init__(
        self,
        configs: Sequence[Any],
        sink: Sink,
        stop_event: Any,
        *,
        max_seconds: float | None = None,
        max_backprops: int | None = None,
        schedule: str = "backprops",
        train_fn: Callable[..., Any] | None = None,
        stall_rule: StallRule | None = None,
        data: Any = None,
        warnings: WarningCounter | None = None,
        pause: Callable[[Callable[[], bool]], float] | None = None,
    ) -> None:
        self.methods = {(name := _config_method(c)): _Method(name, c, stall_rule) for c in configs}
        self.sink = sink
        self.stop_event = stop_event
        self.max_seconds = max_seconds
        self.max_backprops = max_backprops
        self.schedule = schedule
        self.train_fn = train_fn
        self.data = data
        self.warnings = warnings
        self.pause = pause
        self.stop_reason: str | None = None
        self.statuses: dict[str, str] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()  # set by stop(): the time limit, or the caller's stop_event
        self._baton: _Baton | None = None

    # ------------------------------------------------------------------ control
    def stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            baton = self._baton
        self._halt.set()
        if baton is not None:
            baton.release_all()

    def _stopping(self) -> bool:
        if self.stop_event.is_set() and self.stop_reason is None:
            self.stop("user")
        return self.stop_reason is not None

    # ------------------------------------------------------------------ running
    def run(self) -> str:
        """Train every method; returns the run's final status."""
        train_fn = self.train_fn
        if train_fn is None:
            from etr_core.training import train as train_fn
        names = list(self.methods)
        sequential = self.schedule == "sequential"
        if not sequential:
            self._baton = _Baton(names)
        self.sink(("run", RUNNING, ""))
        started = time.perf_counter()
        threads = [threading.Thread(target=self._train_one, args=(m, train_fn), name=f"etr-live-{m.name}",
                                    daemon=True) for m in self.methods.values()]
        for group in ([[t] for t in threads] if sequential else [threads]):
            for thread in group:
                thread.start()
            for thread in group:
                while thread.is_alive():
                    thread.join(0.1)
                    if not self._stopping() and self.max_seconds is not None and \
                            time.perf_counter() - started > self.max_seconds:
                        self.stop("time")
        return self._finish(time.perf_counter() - started)

    def _callbacks(self, method: _Method) -> Any:
        engine = self

        class _Recorder:
            def on_step(self, record: dict) -> None:
                row = {k: plain(record[k]) for k in _STEP_KEYS if k in record}
                row["method"] = method.name
                if method.preset is not None:  # the training loop names non-default presets only
                    row.setdefault("preset", method.preset)
                engine.sink(("steps", [row]))
                method.steps = int(row.get("step") or method.steps + 1)
                method.backprops = float(row.get("backprops") or 0.0)
                if engine.max_backprops is not None and method.backprops >= engine.max_backprops:
                    method.own_stop.set()
                if method.monitor is not None and method.monitor.on_step(row) is not None:
                    method.own_stop.set()
                if engine.pause is not None:  # a page is being drawn: let it have the machine
                    engine.pause(engine._stopping)
                baton = engine._baton
                if baton is not None:
                    baton.advance(method.name, method.backprops if engine.schedule == "backprops"
                                  else float(method.steps))
                    baton.wait_turn(method.name)

            def on_eval(self, record: dict) -> None:
                row = {k: plain(record[k]) for k in EVAL_COLUMNS if k in record}
                row["method"] = method.name
                engine.sink(("evals", [row]))
                if method.monitor is not None and method.monitor.on_eval(row) is not None:
                    method.own_stop.set()

        return _Recorder()

    def _set_status(self, method: _Method, status: str, detail: str = "") -> None:
        self.statuses[method.name] = status
        self.sink(("method", method.name, status, detail))

    def _train_one(self, method: _Method, train_fn: Callable[..., Any]) -> None:
        baton = self._baton
        if self.warnings is not None:
            self.warnings.bind(method.name)
        try:
            if baton is not None:
                baton.wait_turn(method.name)  # setup time before the first step is not counted
            if self._stopping():
                self._set_status(method, STOPPED)
                return
            self._set_status(method, RUNNING)
            kwargs = {"data": self.data} if self.data is not None else {}
            result = train_fn(method.config, callbacks=[self._callbacks(method)],
                              stop_event=_AnyEvent(self.stop_event, self._halt, method.own_stop), **kwargs)
            summary = getattr(result, "summary", None) or {}
            self.sink(("result", method.name, {k: plain(v) for k, v in summary.items()
                                               if isinstance(plain(v), (int, float, str, bool, type(None)))}))
            verdict = method.monitor.verdict if method.monitor is not None else None
            if str(getattr(result, "stop_reason", "") or "") == "nonfinite_loss":
                self._set_status(method, DIVERGED, str(summary.get("stop_detail") or "non-finite loss"))
            elif verdict is not None and verdict[0] in (CONVERGED, STALLED):
                self._set_status(method, *verdict)
            elif self._stopping():
                self._set_status(method, STOPPED)
            else:
                self._set_status(method, FINISHED)
        except Exception as exc:  # reported to the page; the other methods carry on
            self.sink(("traceback", method.name, traceback.format_exc()))
            # a user error (bad data file, bad setting) reads as the CLI's one-line sentence
            self._set_status(method, FAILED, user_message(exc) or f"{type(exc).__name__}: {exc}")
        finally:
            if self.warnings is not None and self.warnings.count(method.name):
                self.sink(("warnings", method.name, self.warnings.count(method.name)))
            if baton is not None:
                baton.leave(method.name)

    def _finish(self, elapsed: float) -> str:
        failed = [n for n, s in self.statuses.items() if s == FAILED]
        if failed:
            status = FAILED
            message = f"{len(failed)} of {len(self.methods)} method(s) raised an error: {', '.join(failed)}."
        elif self.stop_reason in ("user", "released"):
            status, message = STOPPED, f"Stopped after {elapsed:.1f} s."
        elif self.stop_reason == "time":
            status, message = FINISHED, f"Finished: the time limit of {self.max_seconds:g} s was reached."
        else:
            status, message = FINISHED, f"Finished: every method used its budget or ended ({elapsed:.1f} s)."
        early = [f"{n} {s}" for n, s in self.statuses.items() if s in (DIVERGED, CONVERGED, STALLED)]
        if early:
            message += " Ended early: " + ", ".join(early) + "."
        self.sink(("run", status, message))
        return status
