"""Background jobs with shared results, priorities and hard caps (no Streamlit import).

A *job* is an ordered list of *units* (a training segment, one Hessian snapshot, ...), each with a
cache key. The :class:`JobRegistry` runs every job in its own daemon thread, but a unit only runs
while it holds one of a fixed number of process-wide *slots* (the global cap on concurrent heavy
computations); a waiting unit of higher priority (the numbers a page shows first) takes the next
free slot before any background unit. Results go into one process-wide LRU cache keyed by the
unit's key, so a unit that any earlier job computed is never computed again, whoever asked.

Caps: a job identical to a running one (same key) is shared, not started twice; an *owner* (a
browser session) holds at most one job per *lane*, and submitting another releases the first,
which is cancelled once nobody holds it. Every job has a CPU budget: the executor receives the
budget left and must stop a unit that overruns it (:class:`BudgetExceeded`); the job then ends in
state ``"capped"``. Cancellation takes effect between units.

Every unit's CPU is also reported to ``charge(payer, seconds)`` when the registry has one (the
server's rolling per-browser budget, :mod:`etr_core.cpu_budget`): the payer is the one given by the
job's first holder that still holds it (whoever asked first pays; sessions sharing the job later
get it free, like a cached result).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BudgetExceeded", "Job", "JobRegistry", "JobStatus", "PrioritySlots", "ResultCache"]

QUEUED, RUNNING, DONE = "queued", "running", "done"
CANCELLED, CAPPED, FAILED = "cancelled", "capped", "failed"
FINAL = (DONE, CANCELLED, CAPPED, FAILED)


class BudgetExceeded(RuntimeError):
    """A unit stopped because the job's CPU budget ran out."""


class PrioritySlots:
    """``n`` slots; waiters are served by (priority, arrival), lower priority value first."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"slots must be at least 1, got {n}")
        self.n = n
        self._busy = 0
        self._queue: list[tuple[int, int]] = []
        self._tickets = itertools.count()
        self._cond = threading.Condition()

    @property
    def busy(self) -> int:
        return self._busy

    def acquire(self, priority: int, cancelled: threading.Event | None = None) -> bool:
        """Wait for a slot; ``False`` (no slot taken) when ``cancelled`` is set meanwhile."""
        with self._cond:
            ticket = (priority, next(self._tickets))
            heapq.heappush(self._queue, ticket)
            while self._busy >= self.n or self._queue[0] != ticket:
                if cancelled is not None and cancelled.is_set():
                    self._queue.remove(ticket)
                    heapq.heapify(self._queue)
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.1)
            heapq.heappop(self._queue)
            self._busy += 1
            self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


class ResultCache:
    """A thread-safe LRU mapping of unit keys to results, at most ``max_items`` entries."""

    def __init__(self, max_items: int = 256) -> None:
        self.max_items = max_items
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class JobStatus:
    """What a page shows about a job: units done of total, state, last message, CPU seconds used."""

    done: int
    total: int
    state: str
    message: str
    cpu_seconds: float

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(eq=False)
class Job:
    """One job: its units, who holds it, its progress; read it through :meth:`status`."""

    key: Hashable
    units: Sequence[Any]
    priority: int
    cpu_cap: float
    owners: set[Hashable] = field(default_factory=set)
    done: int = 0
    state: str = QUEUED
    message: str = "waiting for a free slot"
    cpu_seconds: float = 0.0
    payers: dict[Hashable, Hashable] = field(default_factory=dict)  # holder -> who pays, in order held
    error: BaseException | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finished_event: threading.Event = field(default_factory=threading.Event)

    def status(self) -> JobStatus:
        return JobStatus(self.done, len(self.units), self.state, self.message, self.cpu_seconds)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (any final state) or ``timeout`` seconds passed."""
        return self.finished_event.wait(timeout)


Executor = Callable[[Any, ResultCache, float], tuple[dict[Hashable, Any], float]]
Charge = Callable[[Hashable, float], None]


class JobRegistry:
    """Runs jobs in threads over shared slots and a shared result cache (see the module docstring).

    ``execute(unit, cache, budget_seconds) -> (results, cpu_seconds)`` computes one unit (reading
    what it depends on from ``cache``) and returns every key/value to cache and the CPU it used;
    it raises :class:`BudgetExceeded` when it had to stop at ``budget_seconds``. ``charge(payer,
    seconds)``, when given, receives every unit's CPU (see the module docstring).
    """

    def __init__(self, execute: Executor, *, slots: int = 1, cpu_cap: float = 30.0,
                 cache_items: int = 256, keep_finished: int = 64, charge: Charge | None = None) -> None:
        self.execute = execute
        self.charge = charge
        self.slots = PrioritySlots(slots)
        self.cpu_cap = float(cpu_cap)
        self.cache = ResultCache(cache_items)
        self.keep_finished = keep_finished
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()
        self._lanes: dict[tuple[Hashable, str], Job] = {}
        self._lock = threading.Lock()

    def submit(self, owner: Hashable, lane: str, key: Hashable, units: Sequence[Any], *,
               priority: int = 1, cpu_cap: float | None = None, payer: Hashable | None = None) -> Job:
        """The job for ``key`` (shared if it runs or ran), now held by ``owner`` in ``lane``.

        The owner's previous job in the lane is released (and cancelled if nobody else holds
        it). ``cpu_cap`` (default: the registry's) bounds the job's CPU seconds; ``payer``
        (default: ``owner``) is whom ``charge`` bills for it while ``owner`` holds it.
        """
        cap = self.cpu_cap if cpu_cap is None else min(float(cpu_cap), self.cpu_cap)
        with self._lock:
            previous = self._lanes.get((owner, lane))
            job = self._jobs.get(key)
            # a job being cancelled, one that ended early and nobody holds, or a finished one whose
            # results the cache has since evicted starts afresh (whatever is cached is skipped); a
            # capped job still held is not restarted by its holder
            if job is None or job.cancel_event.is_set() or (
                job.state in (CANCELLED, FAILED, CAPPED) and not job.owners
            ) or (job.state == DONE and any(u.key not in self.cache for u in job.units)):
                job = Job(key, list(units), priority, cap)
                self._jobs[key] = job
                self._trim()
                threading.Thread(target=self._run, args=(job,), daemon=True, name="hessian-job").start()
            job.owners.add(owner)
            job.payers.setdefault(owner, owner if payer is None else payer)
            self._lanes[(owner, lane)] = job
            if previous is not None and previous is not job:
                self._release(previous, owner)
        return job

    def release(self, owner: Hashable, lane: str) -> None:
        """``owner`` no longer needs its job in ``lane``; it is cancelled if nobody else holds it."""
        with self._lock:
            job = self._lanes.pop((owner, lane), None)
            if job is not None:
                self._release(job, owner)

    def job(self, owner: Hashable, lane: str) -> Job | None:
        with self._lock:
            return self._lanes.get((owner, lane))

    def running(self) -> int:
        """Jobs not yet finished (queued or running)."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state not in FINAL)

    def _release(self, job: Job, owner: Hashable) -> None:
        job.owners.discard(owner)
        if job.payers.get(owner) is not None and len(job.payers) > 1:
            job.payers.pop(owner)  # the last holder keeps paying for what still finishes
        if not job.owners and job.state not in FINAL:
            job.cancel_event.set()

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in FINAL and not j.owners]
        for k in finished[: max(0, len(self._jobs) - self.keep_finished)]:
            del self._jobs[k]

    def _charge(self, job: Job, seconds: float) -> None:
        if self.charge is None or not seconds > 0:
            return
        with self._lock:
            payer = next(iter(job.payers.values()), None)
        if payer is not None:
            self.charge(payer, seconds)

    def _run(self, job: Job) -> None:
        try:
            for index, unit in enumerate(job.units):
                if job.cancel_event.is_set():
                    job.state, job.message = CANCELLED, "cancelled"
                    return
                if unit.key in self.cache:
                    job.done = index + 1
                    continue
                job.message = f"waiting for a free slot ({self.slots.busy} of {self.slots.n} busy)"
                if not self.slots.acquire(job.priority, job.cancel_event):
                    job.state, job.message = CANCELLED, "cancelled"
                    return
                try:
                    job.state, job.message = RUNNING, getattr(unit, "label", str(unit.key))
                    budget = job.cpu_cap - job.cpu_seconds
                    if budget <= 0:
                        raise BudgetExceeded(f"the job used its {job.cpu_cap:.0f} s of CPU")
                    start = time.process_time()
                    results, cpu = self.execute(unit, self.cache, budget)
                    used = cpu if cpu is not None else time.process_time() - start
                    job.cpu_seconds += used
                    self._charge(job, used)
                finally:
                    self.slots.release()
                for k, v in results.items():
                    self.cache.put(k, v)
                job.done = index + 1
            job.state, job.message = DONE, "done"
        except BudgetExceeded as err:
            self._charge(job, job.cpu_cap - job.cpu_seconds)  # the unit ran to the cap
            job.cpu_seconds = max(job.cpu_seconds, job.cpu_cap)
            job.state, job.message = CAPPED, str(err)
        except Exception as err:  # reported on the page, never raised into the server
            job.error = err
            job.state, job.message = FAILED, f"{type(err).__name__}: {err}"
        finally:
            job.finished_event.set()
