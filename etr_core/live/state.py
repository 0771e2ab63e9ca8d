"""What the server knows about one live run: its histories, statuses and timing, under one lock.

:class:`RunState` folds the events of :class:`etr_core.live.engine.RunEngine` (sent by the worker
process, or called directly in-process) into columnar histories and per-method statuses, and hands
out consistent :class:`~etr_core.live.history.LiveSnapshot` objects, optionally holding only the
rows a reader has not seen yet.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

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
    History,
    LiveSnapshot,
)

__all__ = ["RunState"]

_LIMITS = (("max_steps", "step"), ("max_epochs", "epoch"), ("max_seconds", "seconds"))


class RunState:
    """Histories and statuses of one run (thread-safe). ``configs`` give each method's own limits for
    the progress bar, ``max_seconds`` / ``max_backprops`` the run's; ``running_message`` is shown
    while it trains."""

    def __init__(self, run_id: str, names: Sequence[str], configs: Sequence[Any], *, device: str,
                 max_seconds: float | None, max_backprops: int | None, running_message: str,
                 settings: dict[str, Any]) -> None:
        self.run_id, self.device, self.settings = run_id, device, settings
        self._order, self._configs = list(names), list(configs)
        self._max_seconds, self._max_backprops = max_seconds, max_backprops
        self._running_message = running_message
        self.lock = threading.Lock()
        self.steps = History((*STEP_COLUMNS, *STEP_EXTRAS))
        self.evals = History(EVAL_COLUMNS)
        self.status, self.message = "idle", "Not started."
        self.method_status = dict.fromkeys(names, QUEUED)
        self._done = {n: {"step": 0.0, "epoch": 0.0, "seconds": 0.0, "backprops": 0.0} for n in names}
        self.notes: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.warnings: dict[str, int] = {}
        self.tracebacks: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self.version = 0
        self.running_since: float | None = None
        self.ended_at: float | None = None
        self.ended_wall: float | None = None

    # ------------------------------------------------------------------ transitions
    def set_waiting(self, status: str, message: str) -> bool:
        """Queue (``status="queued"``), start (``"starting"``) or end (any other) a run that has not
        trained yet; ``False`` (nothing changed) once it left the waiting states."""
        with self.lock:
            if self.status not in ("idle", QUEUED):
                return False
            self.status, self.message = status, message
            if status not in (QUEUED, STARTING):
                self.method_status = dict.fromkeys(self._order, status)
                self.ended_at, self.ended_wall = time.perf_counter(), time.time()
            self.version += 1
            return True

    def apply(self, event: tuple) -> None:
        """Fold one engine event (see :mod:`etr_core.live.engine`) into the state."""
        kind = event[0]
        with self.lock:
            self.version += 1
            if kind == "steps":
                self.steps.append(event[1])
                for row in event[1]:
                    done = self._done.get(row.get("method"))
                    for key in done or ():
                        value = row.get(key)
                        if isinstance(value, (int, float)) and math.isfinite(value):
                            done[key] = float(value)
            elif kind == "evals":
                self.evals.append(event[1])
            elif kind == "method":
                _, name, status, detail = event
                self.method_status[name] = status
                if detail and status in (FAILED, DIVERGED):
                    self.errors[name] = detail
                if detail and status in EARLY_END:
                    self.notes[name] = detail
            elif kind == "run":
                self._run_event(event[1], event[2])
            elif kind == "result":
                self.results[event[1]] = event[2]
            elif kind == "traceback":
                self.tracebacks[event[1]] = event[2]
            elif kind == "warnings":
                self.warnings[event[1]] = int(event[2])

    def _run_event(self, status: str, message: str) -> None:
        if status == RUNNING:
            self.running_since = time.perf_counter()
            self.status, self.message = RUNNING, self._running_message
        elif self.status in ACTIVE:
            self.status, self.message = status, message
            self.ended_at, self.ended_wall = time.perf_counter(), time.time()

    # ------------------------------------------------------------------ reading
    @property
    def active(self) -> bool:
        with self.lock:
            return self.status in ACTIVE

    def elapsed(self) -> float:
        """Seconds since training began (to its end once ended); call with :attr:`lock` held."""
        if self.running_since is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        return max(0.0, end - self.running_since)

    def progress(self) -> float:
        """Fraction of the budget used in ``[0, 1]`` (1 once ended); call with :attr:`lock` held."""
        if self.status not in ACTIVE and self.status != "idle":
            return 1.0
        fractions = []
        for name, config in zip(self._order, self._configs):
            if self.method_status[name] not in (QUEUED, RUNNING):
                fractions.append(1.0)
                continue
            done = self._done[name]
            limits = [(getattr(config, attr, None), key) for attr, key in _LIMITS]
            limits.append((self._max_backprops, "backprops"))
            used = [done[key] / float(limit) for limit, key in limits if limit]
            fractions.append(min(1.0, max([0.0, *used])))
        value = sum(fractions) / len(fractions)
        if self._max_seconds:
            value = max(value, self.elapsed() / self._max_seconds)
        return float(min(1.0, max(0.0, value)))

    def snapshot(self, steps_since: int = 0, evals_since: int = 0) -> LiveSnapshot:
        """Status and the rows from ``steps_since`` / ``evals_since`` on, mutually consistent."""
        with self.lock:
            n_steps, n_evals = len(self.steps), len(self.evals)
            s0, e0 = min(max(0, int(steps_since)), n_steps), min(max(0, int(evals_since)), n_evals)
            return LiveSnapshot(
                status=self.status, message=self.message, progress=self.progress(), elapsed=self.elapsed(),
                methods=list(self._order), method_status=dict(self.method_status), errors=dict(self.errors),
                steps=self.steps.frame(s0, n_steps), evals=self.evals.frame(e0, n_evals), device=self.device,
                run_id=self.run_id, notes=dict(self.notes), warnings=dict(self.warnings), n_steps=n_steps,
                n_evals=n_evals, steps_since=s0, evals_since=e0, version=self.version,
                settings=dict(self.settings),
            )
