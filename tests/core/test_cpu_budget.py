"""The rolling per-browser CPU budget (etr_core.cpu_budget) and where it is charged: the Hessian page's
job registry and the live-run registry. A fake clock makes every window exact."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from etr_core.cpu_budget import SECONDS_ENV, WINDOW_ENV, CpuBudget, describe_wait
from etr_core.hessian_jobs import JobRegistry
from etr_core.live import RunRefused, RunRegistry, stop_all_runs
from tests.core.live_fakes import FakeConfig, FakeTrain


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live run outlived its test"


def test_rolling_window_sums_charges_and_says_when_work_can_start_again() -> None:
    clock = Clock()
    budget = CpuBudget(seconds=120, window=600, clock=clock)
    budget.charge("a", 50)                      # t = 0
    clock.now += 100
    budget.charge("a", 50)                      # t = 100
    clock.now += 100
    assert budget.used("a") == 100 and not budget.exhausted("a") and budget.remaining("a") == 20
    assert budget.available_in("a") == 0
    budget.charge("a", 30)                      # t = 200: 130 s within the window
    assert budget.exhausted("a") and budget.remaining("a") == 0
    # the charge of t = 0 leaves the window at t = 600; then 80 s < 120 s are left
    assert budget.available_in("a") == pytest.approx(400)
    assert not budget.exhausted("b") and budget.used("b") == 0  # owners are separate
    clock.now = 1000.0 + 599.9
    assert budget.exhausted("a")
    clock.now = 1000.0 + 600.0
    assert budget.used("a") == 80 and not budget.exhausted("a") and budget.available_in("a") == 0


def test_waiting_needs_as_many_old_charges_to_expire_as_it_takes() -> None:
    clock = Clock()
    budget = CpuBudget(seconds=10, window=60, clock=clock)
    for amount in (4, 4, 4, 4):                 # at t = 0, 10, 20, 30: 16 s used
        budget.charge("a", amount)
        clock.now += 10
    # now t = 40: below 10 s only after the first two charges left the window (at t = 10 + 60)
    assert budget.available_in("a") == pytest.approx(30)
    clock.now += 30
    assert budget.used("a") == 8 and not budget.exhausted("a")


def test_close_charges_merge_and_bad_amounts_are_ignored() -> None:
    clock = Clock()
    budget = CpuBudget(seconds=5, window=60, clock=clock)
    budget.charge("a", 1.0)
    clock.now += 0.5
    budget.charge("a", 2.0)
    assert budget.used("a") == 3.0 and len(budget._charges["a"]) == 1
    for bad in (float("nan"), float("inf"), -3.0, 0.0, "2", None):
        budget.charge("a", bad)
    budget.charge(None, 100.0)
    assert budget.used("a") == 3.0 and not budget.exhausted(None)
    clock.now += 61
    assert budget.used("a") == 0 and "a" not in budget._charges  # expired entries are dropped


def test_message_names_the_use_the_cap_and_the_time(monkeypatch) -> None:
    clock = Clock()
    budget = CpuBudget(seconds=120, window=600, clock=clock)
    budget.charge("a", 125)
    text = budget.message("a", now_wall=0.0)
    assert "used 125 s" in text and "last 10 min 0 s" in text and "at most 120 s" in text
    assert "again in 10 min 0 s (at 00:10:00 UTC)" in text and SECONDS_ENV in text
    assert "still show" in text
    assert [describe_wait(s) for s in (0, 0.2, 59.5, 60, 125)] == ["0 s", "1 s", "1 min 0 s", "1 min 0 s",
                                                                    "2 min 5 s"]


def test_limits_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch) -> None:
    monkeypatch.delenv(SECONDS_ENV, raising=False)
    monkeypatch.delenv(WINDOW_ENV, raising=False)
    default = CpuBudget.from_environment()
    assert (default.seconds, default.window) == (420.0, 900.0)
    monkeypatch.setenv(SECONDS_ENV, "30")
    monkeypatch.setenv(WINDOW_ENV, "60")
    assert (CpuBudget.from_environment().seconds, CpuBudget.from_environment().window) == (30.0, 60.0)
    for name in (SECONDS_ENV, WINDOW_ENV):
        for bad in ("0", "-5", "nan", "inf", "abc", "1e99"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(ValueError, match=name):
                CpuBudget.from_environment()
        monkeypatch.setenv(name, "60")
    for bad in (0, -1.0, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="seconds"):
            CpuBudget(seconds=bad)


# ------------------------------------------------------------------ the Hessian page's jobs


@dataclass(frozen=True)
class Unit:
    key: tuple


def _executor(gate: threading.Event | None = None):
    def run(unit, cache, budget):
        if gate is not None:
            gate.wait(5)
        return {unit.key: "done"}, 2.0  # every unit reports 2 s of CPU
    return run


def test_job_units_are_charged_to_the_payer_of_the_first_holder() -> None:
    budget = CpuBudget(seconds=100, window=600)
    gate = threading.Event()
    jobs = JobRegistry(_executor(gate), slots=1, charge=budget.charge)
    a = jobs.submit("session-a", "bg", "k", [Unit(("u1",)), Unit(("u2",)), Unit(("u3",))], payer="browser-a")
    jobs.submit("session-b", "bg", "k", [Unit(("u1",)), Unit(("u2",)), Unit(("u3",))], payer="browser-b")
    gate.set()
    assert a.wait(10) and a.status().state == "done"
    assert budget.used("browser-a") == 6.0 and budget.used("browser-b") == 0.0  # the sharer gets it free
    again = jobs.submit("session-c", "bg", "k", [Unit(("u1",)), Unit(("u2",)), Unit(("u3",))], payer="c")
    assert again.wait(10) and budget.used("c") == 0.0  # cached units cost nothing


def test_a_released_payer_stops_paying_when_another_session_holds_the_job() -> None:
    budget = CpuBudget(seconds=100, window=600)
    gate = threading.Event()
    jobs = JobRegistry(_executor(gate), slots=1, charge=budget.charge)
    units = [Unit(("v1",)), Unit(("v2",))]
    job = jobs.submit("session-a", "bg", "k2", units, payer="browser-a")
    jobs.submit("session-b", "bg", "k2", units, payer="browser-b")
    jobs.release("session-a", "bg")
    gate.set()
    assert job.wait(10) and job.status().state == "done"
    assert budget.used("browser-a") == 0.0 and budget.used("browser-b") == 4.0


def test_without_a_payer_the_holder_pays() -> None:
    budget = CpuBudget(seconds=100, window=600)
    jobs = JobRegistry(_executor(), slots=1, charge=budget.charge)
    assert jobs.submit("owner", "first", "k3", [Unit(("w",))]).wait(10)
    assert budget.used("owner") == 2.0


# ------------------------------------------------------------------ live runs


def _registry(budget: CpuBudget | None) -> RunRegistry:
    return RunRegistry(max_running=2, max_per_owner=1, max_queue=4, budget=budget)


def test_a_live_run_is_charged_to_its_owner_stopped_when_the_budget_runs_out_and_the_next_refused() -> None:
    budget = CpuBudget(seconds=0.4, window=600)
    registry = _registry(budget)
    run = registry.submit([FakeConfig("SGD", max_steps=None, sleep=0.02)], owner="browser-a",
                          train_fn=FakeTrain(), in_process=True, stall_rule=None, max_seconds=60)
    assert run.join(30), "the budget did not stop the run"
    snap = run.snapshot()
    assert snap.status == "stopped" and "CPU budget" in snap.message and "kept" in snap.message
    assert snap.n_steps > 0  # what it computed is kept
    assert budget.used("browser-a") == pytest.approx(run.cpu_seconds) and run.cpu_seconds >= 0.4
    assert run.cpu_seconds < 0.4 + 5.0  # stopped within a few steps of running out
    with pytest.raises(RunRefused, match="can start again in"):
        registry.submit([FakeConfig("SGD")], owner="browser-a", train_fn=FakeTrain(), in_process=True)
    other = registry.submit([FakeConfig("SGD", max_steps=3)], owner="browser-b", train_fn=FakeTrain(),
                            in_process=True, stall_rule=None)
    assert other.join(20) and other.status == "finished"  # other browsers are not affected


def test_a_worker_process_reports_its_measured_cpu() -> None:
    budget = CpuBudget(seconds=1000, window=600)
    registry = _registry(budget)
    started = time.monotonic()
    run = registry.submit([FakeConfig("SGD", max_steps=30, sleep=0.01)], owner="browser-w",
                          train_fn=_burn_train, stall_rule=None, max_seconds=120)
    assert run.join(120)
    wall = time.monotonic() - started
    assert run.status == "finished", run.message
    # the worker burns at least 0.3 s of CPU (time.process_time in the worker is the oracle's bound)
    assert 0.3 <= run.cpu_seconds <= wall * 2 + 1
    assert budget.used("browser-w") == pytest.approx(run.cpu_seconds)


def test_registries_without_a_budget_charge_nothing() -> None:
    registry = _registry(None)
    run = registry.submit([FakeConfig("SGD", max_steps=3)], owner="x", train_fn=FakeTrain(), in_process=True,
                          stall_rule=None)
    assert run.join(20) and run.status == "finished"


def _burn_train(config, *, callbacks=(), stop_event=None, data=None):
    """A picklable train function that burns 0.3 s of CPU before the fake steps."""
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    return FakeTrain()(config, callbacks=callbacks, stop_event=stop_event, data=data)


def test_default_budget_admits_the_longest_live_run_and_a_few_hessian_settings() -> None:
    """No widget value is cut short by the default budget: the live page's longest run (one core
    for its whole time limit) plus three Hessian-page settings at their CPU cap fit in one window."""
    from etr_core.cpu_budget import DEFAULT_SECONDS, DEFAULT_WINDOW
    from etr_core.hessian_plan import CPU_CAP
    from etr_core.live import TIME_LIMITS_S

    assert max(TIME_LIMITS_S) + 3 * CPU_CAP <= DEFAULT_SECONDS
    assert max(TIME_LIMITS_S) <= DEFAULT_WINDOW
