"""The server's live runs: ids, caps, a visible queue and a documented retention rule.

A run belongs to the server, not to a browser session: :meth:`RunRegistry.submit` files it under an
id that goes into the page's URL (``?run=<id>``), and any tab holding that id re-attaches with
:meth:`RunRegistry.get`. The registry

* starts at most ``max_running`` runs at once (``ETR_LIVE_MAX_RUNS``, default 2) and queues the
  rest first come, first served, each queued run knowing its place in line;
* lets one owner (a browser session) have at most ``max_per_owner`` runs queued or training
  (``ETR_LIVE_MAX_RUNS_PER_SESSION``, default 1) and refuses new runs when ``max_queue`` are waiting;
* cancels a queued run nobody has looked at for ``unwatched_seconds`` (it computed nothing yet) and
  fails one that waited longer than ``queue_seconds``; a training run is never ended for lack of
  viewers: it ends by its own budget or time limit, and Stop keeps what it computed;
* lets only a run's owner stop it (:meth:`RunRegistry.stop`); anyone with the link may watch it or
  start a copy of it that they own (:meth:`RunRegistry.copy`);
* charges every run's measured worker CPU to its owner's rolling budget (``budget``, a
  :class:`etr_core.cpu_budget.CpuBudget`; the server's is shared with the Hessian page), refuses new
  runs while that budget is used up and stops a running one when it runs out (keeping its rows);
* keeps finished runs for re-attaching: the newest ``keep_runs`` (``ETR_LIVE_KEEP_RUNS``, 20), each
  for ``keep_seconds`` after it ended (``ETR_LIVE_KEEP_SECONDS``, one hour), and drops the oldest
  finished runs first while all kept runs together hold more than ``max_rows`` recorded rows
  (``ETR_LIVE_MAX_ROWS``, 2 million: about 200 MB at ~100 bytes per row).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from etr_core.cpu_budget import CpuBudget, default_budget, describe_wait
from etr_core.live.history import QUEUED
from etr_core.live.run import LiveRun
from etr_core.live.settings import env_limit

__all__ = ["RunRefused", "RunRegistry", "default_registry", "valid_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{6,32}$")


def valid_run_id(text: Any) -> bool:
    """Whether ``text`` has the shape of a run id (so a URL value is never used otherwise)."""
    return isinstance(text, str) and bool(_RUN_ID.match(text))


class RunRefused(ValueError):
    """A run the registry will not take now (a cap is reached); the message says which and why."""


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class RunRegistry:
    """Live runs of one server process by id (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        max_running: int = 2,
        max_per_owner: int = 1,
        max_queue: int = 16,
        keep_runs: int = 20,
        keep_seconds: float = 3600.0,
        max_rows: int = 2_000_000,
        queue_seconds: float = 900.0,
        unwatched_seconds: float = 60.0,
        budget: CpuBudget | None = None,
    ) -> None:
        self.max_running = max_running
        self.max_per_owner = max_per_owner
        self.max_queue = max_queue
        self.keep_runs = keep_runs
        self.keep_seconds = keep_seconds
        self.max_rows = max_rows
        self.queue_seconds = queue_seconds
        self.unwatched_seconds = unwatched_seconds
        self.budget = budget
        self._lock = threading.RLock()
        self._runs: dict[str, LiveRun] = {}
        self._queue: list[LiveRun] = []
        self._training: set[str] = set()
        self._queued_at: dict[str, float] = {}

    @classmethod
    def from_environment(cls) -> RunRegistry:
        """A registry with the limits of ``ETR_LIVE_*`` (:data:`etr_core.live.settings.LIMITS`)."""
        return cls(
            max_running=env_limit("ETR_LIVE_MAX_RUNS"),
            max_per_owner=env_limit("ETR_LIVE_MAX_RUNS_PER_SESSION"),
            max_queue=env_limit("ETR_LIVE_MAX_QUEUE"), keep_runs=env_limit("ETR_LIVE_KEEP_RUNS"),
            keep_seconds=env_limit("ETR_LIVE_KEEP_SECONDS"), max_rows=env_limit("ETR_LIVE_MAX_ROWS"),
            queue_seconds=env_limit("ETR_LIVE_QUEUE_SECONDS"),
            unwatched_seconds=env_limit("ETR_LIVE_UNWATCHED_SECONDS"), budget=default_budget(),
        )

    # ------------------------------------------------------------------ submitting and finding
    def submit(self, configs: Sequence[Any], *, owner: str | None = None, **run_options: Any) -> LiveRun:
        """Create a run (options as :class:`LiveRun`), start it or queue it; returns it.

        Raises :class:`RunRefused` when ``owner`` already has ``max_per_owner`` runs queued or
        training, has used up its CPU budget, or ``max_queue`` runs are waiting;
        ``ValueError``/``TypeError`` for bad options."""
        self.maintain()
        if owner is not None and self.budget is not None and self.budget.exhausted(owner):
            raise RunRefused(self.budget.message(owner))
        with self._lock:
            if owner is not None:
                mine = [r for r in self._runs.values() if r.owner == owner and r.running]
                if len(mine) >= self.max_per_owner:
                    raise RunRefused(
                        f"this session already has {len(mine)} run(s) training or queued (at most "
                        f"{self.max_per_owner} per session, ETR_LIVE_MAX_RUNS_PER_SESSION); "
                        "stop it or let it end")
            if len(self._training) >= self.max_running and len(self._queue) >= self.max_queue:
                raise RunRefused(
                    f"all {self.max_running} training slots are busy and {len(self._queue)} runs are waiting "
                    f"(at most {self.max_queue}, ETR_LIVE_MAX_QUEUE); try again in a few minutes")
            run = LiveRun(configs, **run_options)
            run.owner = owner
            run.add_end_callback(self._ended)
            run.add_cpu_callback(self._charge)
            self._runs[run.id] = run
            self._queue.append(run)
            self._queued_at[run.id] = time.monotonic()
        self._dispatch()
        return run

    def get(self, run_id: Any) -> LiveRun | None:
        """The run with this id, or ``None`` (unknown, malformed or expired). Marks it as watched."""
        self.maintain()
        if not valid_run_id(run_id):
            return None
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.last_seen = time.monotonic()
        return run

    def stop(self, run_id: Any, owner: str | None) -> bool:
        """Stop the run ``run_id`` if ``owner`` started it; ``False`` (nothing done) for anyone else, an
        unknown id or ``owner=None``. What the run computed is kept."""
        run = self.get(run_id)
        if run is None or owner is None or run.owner != owner:
            return False
        run.stop("user")
        return True

    def copy(self, run_id: Any, owner: str | None) -> LiveRun:
        """Submit a new run with exactly the settings of run ``run_id``, owned by ``owner``.

        Raises :class:`RunRefused` when the run is not on this server (any more) or a cap applies."""
        run = self.get(run_id)
        if run is None:
            raise RunRefused(f"run {run_id!r} is not on this server (any more); start a new one instead")
        configs, options = run.copy_arguments()
        return self.submit(configs, owner=owner, **options)

    def _charge(self, run: LiveRun, seconds: float) -> None:
        """A run's worker reported ``seconds`` more CPU: charge its owner; stop it once the budget is out."""
        budget = self.budget
        if budget is None or run.owner is None:
            return
        budget.charge(run.owner, seconds)
        if run.running and budget.exhausted(run.owner):
            run.stop("budget", note=(
                f"This browser used its CPU budget ({budget.seconds:g} s per {describe_wait(budget.window)}, "
                f"ETR_SESSION_CPU_SECONDS); everything computed so far is kept."))

    def runs(self) -> list[LiveRun]:
        with self._lock:
            return list(self._runs.values())

    def queue_position(self, run: LiveRun) -> tuple[int, int] | None:
        """``(place, waiting)`` of a queued run (place 1 starts next), else ``None``."""
        with self._lock:
            if run in self._queue:
                return self._queue.index(run) + 1, len(self._queue)
        return None

    @property
    def training(self) -> int:
        with self._lock:
            return len(self._training)

    # ------------------------------------------------------------------ scheduling
    def _dispatch(self) -> None:
        starting = []
        with self._lock:
            while self._queue and len(self._training) < self.max_running:
                run = self._queue.pop(0)
                self._queued_at.pop(run.id, None)
                if run.status not in ("idle", QUEUED):
                    continue
                self._training.add(run.id)
                starting.append(run)
            for place, run in enumerate(self._queue, start=1):
                run.mark_queued(
                    f"Queued: {_ordinal(place)} of {len(self._queue)} waiting; all {self.max_running} "
                    "training slots of this server are busy. The run starts when one frees up "
                    "(Stop cancels).")
        for run in starting:
            try:
                run.start()
            except Exception as exc:  # e.g. the worker could not be started
                run.fail_queued(f"failed: could not start the worker: {type(exc).__name__}: {exc}")

    def _ended(self, run: LiveRun) -> None:
        with self._lock:
            self._training.discard(run.id)
            if run in self._queue:
                self._queue.remove(run)
                self._queued_at.pop(run.id, None)
        self._dispatch()

    def maintain(self) -> None:
        """Apply the queue and retention rules now (called on every submit and get)."""
        now_mono, now_wall = time.monotonic(), time.time()
        with self._lock:
            queued = list(self._queue)
        for run in queued:
            if now_mono - run.last_seen > self.unwatched_seconds:
                run.stop("abandoned")
            elif now_mono - self._queued_at.get(run.id, now_mono) > self.queue_seconds:
                run.fail_queued(
                    f"failed: no free training slot after {self.queue_seconds:g} s; try again later")
        with self._lock:
            finished = sorted((r for r in self._runs.values() if not r.running and r.ended_wall is not None),
                              key=lambda r: r.ended_wall)
            keep = [r for r in finished if now_wall - r.ended_wall <= self.keep_seconds][-self.keep_runs:]
            rows = sum(r.rows for r in self._runs.values())
            for run in finished:
                if run in keep and rows <= self.max_rows:
                    continue
                rows -= run.rows
                self._runs.pop(run.id, None)
                if run in keep:
                    keep.remove(run)

    def stop_all(self, timeout: float = 10.0) -> int:
        """Stop every run; returns how many workers were still alive after ``timeout`` seconds."""
        runs = self.runs()
        for run in runs:
            run.stop("released")
        deadline = time.monotonic() + timeout
        for run in runs:
            run.join(max(0.0, deadline - time.monotonic()))
        return sum(r.is_alive() for r in runs)


_DEFAULT: RunRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> RunRegistry:
    """The registry of this server process (created on first use from the environment)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = RunRegistry.from_environment()
        return _DEFAULT
