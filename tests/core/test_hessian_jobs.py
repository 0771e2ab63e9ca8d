"""Background jobs of the Hessian page: shared results, one job per session lane, priorities, caps."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from etr_core.hessian_jobs import BudgetExceeded, JobRegistry, PrioritySlots


@dataclass(frozen=True)
class Unit:
    key: tuple
    seconds: float = 0.0


class Recorder:
    """A fake executor: sleeps, records what ran and how many ran at once."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.ran: list[tuple] = []
        self.budgets: list[float] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.gate = gate

    def __call__(self, unit, cache, budget):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                self.gate.wait(5)
            time.sleep(unit.seconds)
            if unit.key[0] == "boom":
                raise ValueError("bad unit")
            if unit.key[0] == "long":
                raise BudgetExceeded(f"stopped at {budget:.1f} s")
            with self.lock:
                self.ran.append(unit.key)
                self.budgets.append(budget)
            return {unit.key: f"result {unit.key}"}, 2.0
        finally:
            with self.lock:
                self.active -= 1


def _units(*names, seconds=0.0):
    return [Unit((n,), seconds) for n in names]


def test_identical_jobs_are_shared_and_cached_units_never_rerun():
    ex = Recorder()
    reg = JobRegistry(ex, slots=1, cpu_cap=30)
    a = reg.submit("alice", "bg", "k1", _units("u1", "u2"))
    b = reg.submit("bob", "bg", "k1", _units("u1", "u2"))
    assert a is b
    assert a.wait(5) and a.status().state == "done" and a.status().done == 2
    c = reg.submit("carol", "bg", "k2", _units("u2", "u3"))      # shares u2 with k1
    assert c.wait(5)
    assert ex.ran == [("u1",), ("u2",), ("u3",)]
    assert reg.cache.get(("u3",)) == "result ('u3',)"


def test_a_new_setting_releases_and_cancels_the_owners_previous_job():
    gate = threading.Event()
    ex = Recorder(gate)
    reg = JobRegistry(ex, slots=1, cpu_cap=30)
    first = reg.submit("alice", "bg", "old", _units("a1", "a2", "a3"))
    shared = reg.submit("bob", "bg", "shared", _units("s1"))
    reg.submit("alice", "fg", "shared", _units("s1"))               # alice also holds "shared"
    second = reg.submit("alice", "bg", "new", _units("n1"))
    gate.set()
    for job in (first, second, shared):
        assert job.wait(5)
    assert first.status().state == "cancelled" and first.status().done < 3
    assert second.status().state == "done"
    reg.release("alice", "fg")
    assert shared.status().state == "done"                          # bob still held it
    assert reg.job("alice", "bg") is second


def test_foreground_units_overtake_queued_background_units():
    gate = threading.Event()
    ex = Recorder(gate)
    reg = JobRegistry(ex, slots=1, cpu_cap=30)
    bg = reg.submit("alice", "bg", "bg", _units("b1", "b2", "b3"), priority=1)
    time.sleep(0.2)                                                 # b1 holds the only slot
    fg = reg.submit("bob", "fg", "fg", _units("f1"), priority=0)
    time.sleep(0.2)
    gate.set()
    assert fg.wait(5) and bg.wait(5)
    assert ex.ran.index(("f1",)) == 1                               # right after the running b1
    assert ex.max_active == 1                                       # the global cap held


def test_global_slots_cap_concurrency():
    ex = Recorder()
    reg = JobRegistry(ex, slots=2, cpu_cap=30)
    jobs = [reg.submit(f"user{i}", "bg", f"k{i}", _units(f"u{i}", seconds=0.05)) for i in range(6)]
    assert all(j.wait(5) for j in jobs)
    assert ex.max_active == 2


def test_cpu_budget_shrinks_and_a_capped_job_says_so():
    ex = Recorder()
    reg = JobRegistry(ex, slots=1, cpu_cap=5)
    job = reg.submit("alice", "bg", "k", _units("a", "b", "c", "d"))
    assert job.wait(5)
    # each unit reports 2 s: budgets 5, 3, 1, then the job is over its cap
    assert ex.budgets == [5.0, 3.0, 1.0]
    status = job.status()
    assert status.state == "capped" and "5 s" in status.message and status.done == 3
    capped = reg.submit("bob", "bg", "long", [Unit(("long",))])
    assert capped.wait(5) and capped.status().state == "capped"
    assert "stopped at 5.0 s" in capped.status().message
    assert reg.submit("bob", "bg", "long", [Unit(("long",))]) is capped      # its holder does not restart it


def test_a_failing_unit_fails_its_job_without_raising():
    reg = JobRegistry(Recorder(), slots=1)
    job = reg.submit("alice", "bg", "k", _units("boom"))
    assert job.wait(5)
    assert job.status().state == "failed" and "ValueError: bad unit" in job.status().message


def test_priority_slots_validate_and_honour_cancel():
    with pytest.raises(ValueError, match="slots"):
        PrioritySlots(0)
    slots = PrioritySlots(1)
    assert slots.acquire(1)
    cancelled = threading.Event()
    cancelled.set()
    assert slots.acquire(0, cancelled) is False
    slots.release()
    assert slots.acquire(0)


def test_a_finished_job_whose_results_were_evicted_runs_again():
    ex = Recorder()
    reg = JobRegistry(ex, slots=1, cache_items=2)
    first = reg.submit("alice", "bg", "k", _units("a", "b"))
    assert first.wait(5)
    other = reg.submit("bob", "bg", "other", _units("c", "d"))    # evicts a and b
    assert other.wait(5)
    again = reg.submit("alice", "bg", "k", _units("a", "b"))
    assert again is not first and again.wait(5) and again.status().state == "done"
    assert ex.ran.count(("a",)) == 2 and reg.cache.get(("b",)) == "result ('b',)"
