"""Live runs (etr_core.live) without Streamlit: the engine, the worker process, the registry.

Most tests inject the deterministic stand-in of ``training.train`` from ``live_fakes`` so that
scheduling, stopping, caps and snapshots are checked exactly; a few run the real training loop on
digits in a worker process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from etr_core import live
from etr_core.live import (
    EVAL_COLUMNS,
    STEP_COLUMNS,
    History,
    LiveRun,
    RunEngine,
    RunRefused,
    RunRegistry,
    StallRule,
    comparison_configs,
    describe_race,
    local_dataset_status,
    metrics_csv,
    read_metrics_csv,
    stop_all_runs,
    summarize,
)
from etr_core.live.settings import poll_seconds
from tests.core.live_fakes import FakeConfig, FakeTrain, fake_train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live run outlived its test"


def _run(configs, **kwargs) -> tuple[LiveRun, FakeTrain]:
    fake = kwargs.pop("train_fn", None) or FakeTrain()
    kwargs.setdefault("stall_rule", None)
    return LiveRun(configs, train_fn=fake, in_process=True, **kwargs), fake


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# ------------------------------------------------------------------ the engine (in-process)


def test_multi_method_run_completes_with_every_record() -> None:
    run, _ = _run([FakeConfig("TR_uni", cost=3), FakeConfig("TR_rms", cost=2), FakeConfig("Adam")])
    assert run.status == "idle"
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "finished" and snap.progress == 1.0 and not snap.running
    assert set(snap.method_status.values()) == {"finished"}
    for method in ("TR_uni", "TR_rms", "Adam"):
        assert snap.steps.loc[snap.steps["method"] == method, "step"].tolist() == list(range(1, 11))
        assert snap.evals.loc[snap.evals["method"] == method, "step"].tolist() == [0, 2, 4, 6, 8, 10]
    assert list(snap.steps.columns[: len(STEP_COLUMNS)]) == list(STEP_COLUMNS)
    assert list(snap.evals.columns) == list(EVAL_COLUMNS)


@pytest.mark.parametrize("costs", [(5, 1, 2), (1, 1, 1), (7, 3, 1)])
def test_backprops_schedule_always_advances_the_method_furthest_behind(costs) -> None:
    names = ["A", "B", "C"]
    run, _ = _run([FakeConfig(n, max_steps=12, cost=c) for n, c in zip(names, costs)], schedule="backprops")
    run.start()
    assert run.join(20)
    cost = dict(zip(names, costs))
    # independent replay: before each recorded step, its method must have had the fewest backprops
    # among the methods that still had steps left (ties go to the earlier method)
    done, taken = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for method in run.snapshot().steps["method"]:
        active = [n for n in names if taken[n] < 12]
        assert method == min(active, key=lambda n: (done[n], names.index(n)))
        done[method] += cost[method]
        taken[method] += 1


def test_steps_schedule_is_round_robin_and_sequential_is_in_order() -> None:
    run, _ = _run([FakeConfig("A", max_steps=4, cost=9), FakeConfig("B", max_steps=4)], schedule="steps")
    run.start()
    assert run.join(20)
    assert run.snapshot().steps["method"].tolist() == ["A", "B"] * 4
    run, _ = _run([FakeConfig("A", max_steps=3), FakeConfig("B", max_steps=3)], schedule="sequential")
    run.start()
    assert run.join(20)
    assert run.snapshot().steps["method"].tolist() == ["A"] * 3 + ["B"] * 3


def test_only_one_method_computes_at_a_time_and_all_share_one_dataset() -> None:
    fake, shared = FakeTrain(), object()
    configs = [FakeConfig(n, max_steps=15, sleep=0.002) for n in ("A", "B", "C")]
    engine = RunEngine(configs, lambda event: None, threading.Event(), train_fn=fake, data=shared)
    assert engine.run() == "finished"
    assert fake.max_active == 1
    assert set(fake.data_ids.values()) == {id(shared)}  # one object for every method, never a copy


def test_backprop_budget_stops_each_method_at_the_first_step_reaching_it() -> None:
    run, _ = _run([FakeConfig("A", max_steps=None, cost=3), FakeConfig("B", max_steps=None, cost=4)],
                  max_backprops=10)
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    last = snap.steps.groupby("method")["backprops"].max()
    assert last["A"] == 12 and last["B"] == 12  # ceil(10/3)*3 and ceil(10/4)*4
    assert snap.status == "finished" and set(snap.method_status.values()) == {"finished"}


def test_time_limit_ends_the_run_as_finished_with_a_message() -> None:
    run, _ = _run([FakeConfig("A", max_steps=None, sleep=0.005)], max_seconds=0.3)
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "finished" and "time limit of 0.3 s" in snap.message and len(snap.steps) > 0


def test_stop_is_cooperative_prompt_and_keeps_the_rows() -> None:
    run, _ = _run([FakeConfig(n, max_steps=None, sleep=0.005) for n in ("A", "B")], max_seconds=None)
    run.start()
    assert _wait(lambda: len(run.snapshot().steps) >= 10)
    run.stop()
    assert run.join(5.0), "the worker did not stop within 5 s of stop()"
    snap = run.snapshot()
    assert snap.status == "stopped" and snap.message.startswith("Stopped after")
    assert set(snap.method_status.values()) == {"stopped"} and len(snap.steps) >= 10
    time.sleep(0.05)
    assert len(run.snapshot().steps) == len(snap.steps)  # nothing trains after the stop


def test_a_user_error_reads_as_the_cli_sentence() -> None:
    from etr_core.errors import user_message

    text = "data file train-labels-idx1-ubyte.gz: label 10 outside [0, 10)\nfix the labels"
    run, _ = _run([FakeConfig("A", fail_at=1, fail_with=text)])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "failed"
    assert snap.errors == {"A": user_message(ValueError(text))}
    assert snap.errors["A"] == ("data file train-labels-idx1-ubyte.gz: label 10 outside [0, 10); "
                                "fix the labels")


def test_exception_is_captured_and_other_methods_finish() -> None:
    run, _ = _run([FakeConfig("A"), FakeConfig("B", fail_at=3), FakeConfig("C")])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "failed" and "B" in snap.message
    assert snap.method_status == {"A": "finished", "B": "failed", "C": "finished"}
    assert snap.errors == {"B": "RuntimeError: boom in B"}
    assert "boom in B" in run.tracebacks()["B"]
    assert (snap.steps["method"] == "A").sum() == 10 and (snap.steps["method"] == "B").sum() == 2


def test_divergence_reported_by_train_is_a_method_status_not_a_failure() -> None:
    def diverging(config, *, callbacks=(), stop_event=None):
        for cb in callbacks:
            cb.on_step({"step": 1, "backprops": 1, "epoch": 0.1, "seconds": 0.0, "loss": math.nan})
        detail = {"stop_detail": "non-finite loss at step 1"}
        return SimpleNamespace(stop_reason="nonfinite_loss", summary=detail)

    run = LiveRun([FakeConfig("SGD")], train_fn=diverging, in_process=True).start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "finished" and snap.method_status["SGD"] == "diverged"
    assert "diverged" in snap.message and "non-finite" in snap.errors["SGD"]


def test_incremental_snapshots_add_up_to_the_whole_history() -> None:
    configs = [FakeConfig(n, max_steps=60, eval_every=3, sleep=0.001) for n in ("A", "B")]
    run, _ = _run(configs)
    run.start()
    pieces, eval_pieces, seen_steps, seen_evals = [], [], 0, 0
    while True:
        alive = run.is_alive()
        snap = run.snapshot(steps_since=seen_steps, evals_since=seen_evals)
        assert snap.steps_since == seen_steps and len(snap.steps) == snap.n_steps - seen_steps
        for method in ("A", "B"):  # within a delta, per method: consecutive steps, in order
            steps = snap.steps.loc[snap.steps["method"] == method, "step"].tolist()
            assert steps == list(range(steps[0], steps[0] + len(steps))) if steps else True
        pieces += [snap.steps] if len(snap.steps) else []
        eval_pieces += [snap.evals] if len(snap.evals) else []
        seen_steps, seen_evals = snap.n_steps, snap.n_evals
        if not alive:
            break
        time.sleep(0.005)
    whole = run.snapshot()
    assert whole.status == "finished" and len(whole.steps) == 120
    pd.testing.assert_frame_equal(pd.concat(pieces), whole.steps)
    pd.testing.assert_frame_equal(pd.concat(eval_pieces), whole.evals)
    assert len(run.snapshot(steps_since=120).steps) == 0 and len(run.snapshot(steps_since=10**9).steps) == 0
    whole.steps.loc[:, "loss"] = -1.0  # a snapshot is a copy
    assert (run.snapshot().steps["loss"] > 0).all()


def test_bad_arguments_fail_early_with_names() -> None:
    for kwargs, match in (({}, "configs"), ({"schedule": "random"}, "schedule"),
                          ({"max_seconds": -1}, "max_seconds"), ({"max_backprops": 0}, "max_backprops"),
                          ({"nice": 40}, "nice")):
        with pytest.raises(ValueError, match=match):
            LiveRun([] if match == "configs" else [FakeConfig("A")], **kwargs)
    with pytest.raises(ValueError, match="repeated"):
        LiveRun([FakeConfig("A"), FakeConfig("A")])
    with pytest.raises(TypeError, match="method"):
        LiveRun([SimpleNamespace(method=3)])
    run, _ = _run([FakeConfig("A", max_steps=1)])
    run.start()
    with pytest.raises(RuntimeError, match="already started"):
        run.start()
    assert run.join(20)


# ------------------------------------------------------------------ converged and stalled methods


def test_stall_rule_thresholds_from_hand_made_records() -> None:
    floor = 2.0**-23  # float32 machine epsilon
    assert live.loss_floor_for("float32") == pytest.approx(1.1920929e-07)
    monitor = live.MethodMonitor(StallRule(), "float32")
    assert monitor.on_eval({"train_loss": 2 * floor}) is None
    assert monitor.on_eval({"train_loss": floor})[0] == "converged"  # inclusive
    monitor = live.MethodMonitor(StallRule(loss_patience=3), "float32")
    verdicts = [monitor.on_step({"loss": loss, "radius": 1.0}) for loss in (1e-9, 1e-9, 1.0, 1e-9, 1e-9)]
    assert verdicts == [None] * 5  # a high loss resets the count
    assert monitor.on_step({"loss": 1e-9, "radius": 1.0})[0] == "converged"
    monitor = live.MethodMonitor(StallRule(reject_patience=4), "float32")
    pattern = [False, False, False, True, False, False, False]
    assert [monitor.on_step({"loss": 0.5, "radius": 1.0, "accepted": a}) for a in pattern] == [None] * 7
    status, detail = monitor.on_step({"loss": 0.5, "radius": 1.0, "accepted": False})
    assert status == "stalled" and "4 steps" in detail
    monitor = live.MethodMonitor(StallRule(radius_floor=1e-10), "float64")
    assert monitor.on_step({"loss": 0.5, "radius": 1e-10, "accepted": True}) is None
    assert monitor.on_step({"loss": 0.5, "radius": 9e-11, "accepted": True})[0] == "stalled"
    with pytest.raises(ValueError, match="reject_patience"):
        StallRule(reject_patience=0)


def test_a_method_that_cannot_progress_stops_early_and_is_reported() -> None:
    losses = (1.0, 0.5, *([1e-9] * 1000))  # reaches the float32 floor at step 2
    configs = [FakeConfig("TR_ada", max_steps=None, losses=losses, eval_every=1000),
               FakeConfig("TR_rms", max_steps=None, reject_from=5, eval_every=1000),
               FakeConfig("Adam", max_steps=None, eval_every=1000)]
    run, _ = _run(configs, max_backprops=200, stall_rule=StallRule(loss_patience=5, reject_patience=20))
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    used = snap.steps.groupby("method")["backprops"].max()
    assert snap.method_status == {"TR_ada": "converged", "TR_rms": "stalled", "Adam": "finished"}
    assert used["TR_ada"] == 6  # steps 2..6 at the floor: 5 in a row
    assert used["TR_rms"] == 24  # steps 5..24 rejected: 20 in a row
    assert used["Adam"] == 200  # the others keep their whole budget
    assert "20 steps were all rejected" in snap.notes["TR_rms"] and "1e-09" in snap.notes["TR_ada"]
    table = summarize(snap.steps, snap.evals, methods=snap.methods, statuses=snap.method_status,
                      notes=snap.notes, accuracy_target=0.5)
    assert table.set_index("method").loc["TR_rms", "status"] == "stalled"
    sentence = describe_race(table, "backprops_to_acc", "50% training accuracy")
    assert "TR_ada converged after 6 backprops" in sentence
    assert "TR_rms stalled after 24 backprops" in sentence


def test_repeated_optimizer_warnings_are_counted_and_logged_once(caplog) -> None:
    import warnings as warnings_module

    counter = live.WarningCounter("r1")
    with warnings_module.catch_warnings(), caplog.at_level("WARNING", logger="etr_core.live"):
        counter.install()

        def emit(method: str) -> None:
            counter.bind(method)
            for step in range(200):
                warnings_module.warn(f"EllipsoidalTR step {step}: fault; step rejected", RuntimeWarning,
                                     stacklevel=1)

        threads = [threading.Thread(target=emit, args=(m,)) for m in ("TR_ada", "TR_rms")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert counter.counts == {"TR_ada": 200, "TR_rms": 200}
    lines = [r.getMessage() for r in caplog.records if r.name == "etr_core.live"]
    assert len(lines) == 2 and all("step 0:" in line and "counted, not printed" in line for line in lines)


# ------------------------------------------------------------------ the worker process


def test_worker_process_keeps_the_server_thread_count_and_sets_its_own() -> None:
    torch.set_num_threads(2)  # restored by the conftest fixture
    before = torch.get_num_threads()
    run = LiveRun([FakeConfig("A", max_steps=3), FakeConfig("B", max_steps=3)], train_fn=fake_train,
                  torch_threads=1, stall_rule=None).start()
    assert run.join(120), run.status
    snap = run.snapshot()
    assert snap.status == "finished", (snap.message, run.tracebacks())
    results = run.results()
    assert results["A"]["threads"] == 1 and results["A"]["pid"] != __import__("os").getpid()
    assert torch.get_num_threads() == before
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [before]  # threads started later in the server keep its count too
    assert snap.steps.groupby("method")["step"].max().to_dict() == {"A": 3, "B": 3}


def priority_train(config, *, callbacks=(), stop_event=None, data=None):
    """A picklable train function that reports the scheduling policy and nice value it ran under."""
    seen = {"policy": os.sched_getscheduler(0), "nice": os.getpriority(os.PRIO_PROCESS, 0)}
    return SimpleNamespace(stop_reason="max_steps", summary=seen)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies only")
@pytest.mark.parametrize(("nice", "sched_idle", "policy"), [
    (10, True, "SCHED_IDLE"), (10, False, "SCHED_OTHER"), (0, True, "SCHED_OTHER"), (19, True, "SCHED_IDLE"),
])
def test_worker_process_runs_with_the_policy_and_nice_asked_for(nice, sched_idle, policy) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the fork server inherits this process's nice value
    run = LiveRun([FakeConfig("A", max_steps=1)], train_fn=priority_train, nice=nice, sched_idle=sched_idle,
                  stall_rule=None).start()
    assert run.join(120), run.status
    assert run.status == "finished", (run.message, run.tracebacks())
    seen = run.results()["A"]  # read in the method's own thread, started after the priority was set
    assert seen["policy"] == getattr(os, policy)
    assert seen["nice"] == min(19, base + nice)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, 0) == base
    _, options = run.copy_arguments()
    assert options["nice"] == nice and options["sched_idle"] is sched_idle


def test_lower_priority_without_the_idle_policy_falls_back_to_nice(monkeypatch) -> None:
    from etr_core.live import worker

    calls: list[tuple] = []
    monkeypatch.setattr(worker.os, "nice", lambda n: calls.append(("nice", n)))
    monkeypatch.delattr(worker.os, "SCHED_IDLE", raising=False)
    assert worker.lower_priority(7) == "nice" and calls == [("nice", 7)]
    assert worker.lower_priority(0) == "normal" and calls == [("nice", 7)]

    def refused(*args):
        raise PermissionError("not permitted")

    monkeypatch.setattr(worker.os, "SCHED_IDLE", 5, raising=False)
    monkeypatch.setattr(worker.os, "sched_setscheduler", refused, raising=False)
    assert worker.lower_priority(3) == "nice" and calls[-1] == ("nice", 3)


@pytest.mark.parametrize(("active", "queued", "expected"), [
    (1, False, 1.0), (2, False, 1.0), (3, False, 2.0), (4, False, 2.0), (5, False, 3.0), (40, False, 3.0),
    (0, False, 1.0), (1, True, 5.0), (40, True, 5.0),
])
def test_poll_seconds_grow_with_the_active_runs_and_queued_tabs_poll_rarely(
    monkeypatch, active, queued, expected
) -> None:
    for name in ("ETR_LIVE_MAX_RUNS", "ETR_LIVE_POLL_SECONDS", "ETR_LIVE_POLL_MAX_SECONDS",
                 "ETR_LIVE_POLL_QUEUED_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert poll_seconds(queued, active) == expected  # defaults: 2 slots, 1 s, at most 3 s, queued 5 s


def test_poll_seconds_follow_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ETR_LIVE_MAX_RUNS", "4")
    monkeypatch.setenv("ETR_LIVE_POLL_SECONDS", "2")
    monkeypatch.setenv("ETR_LIVE_POLL_MAX_SECONDS", "5")
    monkeypatch.setenv("ETR_LIVE_POLL_QUEUED_SECONDS", "9")
    assert [poll_seconds(False, n) for n in (1, 4, 5, 8, 9, 100)] == [2.0, 2.0, 4.0, 4.0, 5.0, 5.0]
    assert poll_seconds(True, 3) == 9.0
    monkeypatch.setenv("ETR_LIVE_POLL_MAX_SECONDS", "1")  # below the base: the base wins
    assert poll_seconds(False, 100) == 2.0
    monkeypatch.setenv("ETR_LIVE_POLL_QUEUED_SECONDS", "0")
    with pytest.raises(ValueError, match="ETR_LIVE_POLL_QUEUED_SECONDS"):
        poll_seconds(True, 1)


def test_worker_that_dies_or_ignores_stop_keeps_what_it_sent(monkeypatch) -> None:
    run = LiveRun([FakeConfig("A", max_steps=50, exit_at=6, sleep=0.1)], train_fn=fake_train,
                  stall_rule=None).start()
    assert run.join(120)
    snap = run.snapshot()
    assert snap.status == "failed" and "exit code 3" in snap.message
    received = snap.steps["step"].tolist()  # rows are flushed every 0.1 s: a crash loses at most that
    assert 1 <= len(received) <= 5 and received == list(range(1, len(received) + 1))
    from etr_core.live import run as run_module

    monkeypatch.setattr(run_module, "STOP_GRACE_S", 0.5)
    stubborn = LiveRun([FakeConfig("A", max_steps=None, sleep=0.02, ignore_stop=True)], train_fn=fake_train,
                       stall_rule=None, max_seconds=None).start()
    assert _wait(lambda: stubborn.snapshot().n_steps >= 3, 120)
    stubborn.stop()
    assert stubborn.join(30)
    snap = stubborn.snapshot()
    assert snap.status == "stopped" and "ended after" in snap.message and snap.n_steps >= 3


def test_real_training_loop_tiny_comparison_in_a_worker() -> None:
    configs = comparison_configs(["TR_uni", "TR_rms", "Adam"], max_steps=4, eval_every=2, device="cpu")
    run = LiveRun(configs, max_seconds=120).start()
    assert run.join(180), "the real tiny run did not finish"
    snap = run.snapshot()
    assert snap.status == "finished", (snap.message, run.tracebacks())
    for method in ("TR_uni", "TR_rms", "Adam"):
        part = snap.steps[snap.steps["method"] == method]
        assert part["step"].tolist() == [1, 2, 3, 4]
        assert (part["backprops"] == part["backward"] + part["hvp"]).all()
        assert snap.evals.loc[snap.evals["method"] == method, "step"].tolist() == [0, 2, 4]
    adam = snap.steps[snap.steps["method"] == "Adam"]
    assert adam["backprops"].tolist() == [1, 2, 3, 4] and adam["rho"].isna().all()
    tr = snap.steps[snap.steps["method"] == "TR_rms"]
    assert tr["radius"].notna().all() and (tr["cg_iterations"] >= 1).all()
    assert {s["stop_reason"] for s in run.results().values()} == {"max_steps"}


@pytest.mark.slow
def test_shared_dataset_is_one_compact_copy_that_trains_like_a_fresh_load() -> None:
    from etr_core.live.worker import shared_dataset
    from etr_core.training import train

    configs = comparison_configs(["TR_rms", "Adam"], max_steps=3, eval_every=3, device="cpu",
                                 data_options={"n_samples": 400}, dataset="moons")
    data = shared_dataset(configs)
    assert data is not None and data.train_x.is_contiguous()
    assert data.train_x.untyped_storage().nbytes() == data.train_x.numel() * 4
    for config in configs:  # oracle: the loop loading the data itself
        own = train(config).summary["train_loss"]
        assert train(config, data=data).summary["train_loss"] == own
    other = comparison_configs(["Adam"], dataset="moons", seed=1, data_options={"n_samples": 400})
    assert shared_dataset(configs + other) is None  # different data: each method loads its own


@pytest.mark.slow
def test_worker_logs_one_line_per_method_and_never_reruns_the_main_script(tmp_path) -> None:
    script = tmp_path / "warn_run.py"
    # no ``if __name__ == "__main__"`` guard, like a Streamlit page: the worker must not re-run it
    script.write_text(textwrap.dedent("""
        import sys
        from etr_core.live import LiveRun
        from tests.core.live_fakes import FakeConfig, fake_train

        print("MAIN SCRIPT RAN", file=sys.stderr)
        configs = [FakeConfig(m, max_steps=300, warn=True) for m in ("TR_ada", "TR_rms")]
        run = LiveRun(configs, train_fn=fake_train, stall_rule=None).start()
        assert run.join(120)
        print("COUNTS", run.snapshot().warnings)
    """))
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "COUNTS {'TR_ada': 300, 'TR_rms': 300}" in out.stdout
    lines = [line for line in out.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(lines) == 2, out.stderr[-2000:]
    assert out.stderr.count("MAIN SCRIPT RAN") == 1  # the worker did not execute the main script


# ------------------------------------------------------------------ the registry


def _registry(**limits) -> RunRegistry:
    return RunRegistry(**{"max_running": 1, "max_per_owner": 1, "max_queue": 4, **limits})


def _submit(registry, name="A", owner=None, **config):
    return registry.submit([FakeConfig(name, **config)], owner=owner, train_fn=FakeTrain(), in_process=True,
                           stall_rule=None)


def test_registry_queues_first_come_first_served_with_positions() -> None:
    registry = _registry(max_queue=4)
    gate = threading.Event()
    first = _submit(registry, "A", owner="s1", max_steps=3, gate=gate)
    assert _wait(lambda: first.status == "running")
    second, third = _submit(registry, "B", owner="s2"), _submit(registry, "C", owner="s3")
    assert second.status == third.status == "queued"
    assert registry.queue_position(second) == (1, 2) and registry.queue_position(third) == (2, 2)
    assert "2nd of 2 waiting" in third.message and second.snapshot().steps.empty
    gate.set()
    assert first.join(20) and _wait(lambda: third.status == "finished")
    assert second.ended_wall <= third.ended_wall  # started in order
    assert registry.training == 0


def test_registry_caps_per_session_and_queue_length() -> None:
    registry = _registry(max_queue=1)
    gate = threading.Event()
    _submit(registry, "A", owner="s1", gate=gate)
    with pytest.raises(RunRefused, match="per session"):
        _submit(registry, "B", owner="s1")
    _submit(registry, "B", owner="s2")
    with pytest.raises(RunRefused, match="ETR_LIVE_MAX_QUEUE"):
        _submit(registry, "C", owner="s3")
    gate.set()
    assert registry.stop_all(20) == 0


def test_registry_cancels_unwatched_or_stopped_queued_runs_and_times_out_the_queue() -> None:
    registry = _registry(max_queue=4, unwatched_seconds=30, queue_seconds=60)
    gate = threading.Event()
    _submit(registry, "A", owner="s1", gate=gate)
    stopped, unwatched, waited = (_submit(registry, n, owner=n) for n in ("B", "C", "D"))
    stopped.stop()
    assert stopped.status == "stopped" and stopped.message == "Stopped while queued."
    unwatched.last_seen -= 31
    registry._queued_at[waited.id] -= 61
    registry.maintain()
    assert unwatched.status == "stopped" and "nobody watched" in unwatched.message
    assert waited.status == "failed" and "no free training slot after 60 s" in waited.message
    assert registry.queue_position(unwatched) is None and all(r.snapshot().steps.empty
                                                               for r in (stopped, unwatched, waited))
    gate.set()
    assert registry.stop_all(20) == 0


def test_registry_keeps_finished_runs_by_count_age_and_rows() -> None:
    registry = _registry(max_running=4, max_per_owner=10, keep_runs=2, keep_seconds=100, max_rows=10**6)
    runs = []
    for name in ("A", "B", "C"):
        runs.append(_submit(registry, name, max_steps=4))
        assert runs[-1].join(20)
    registry.maintain()
    assert [r.id for r in registry.runs()] == [runs[1].id, runs[2].id]  # the newest two
    assert registry.get(runs[0].id) is None and registry.get(runs[2].id) is runs[2]
    runs[1].ended_wall -= 101
    registry.maintain()
    assert registry.get(runs[1].id) is None and registry.get(runs[2].id) is runs[2]
    registry.max_rows = runs[2].rows - 1
    registry.maintain()
    assert registry.runs() == []


@pytest.mark.parametrize("bad", [None, "", "short", "../../etc", "x" * 100, 123, "id with space", "ä" * 10])
def test_registry_get_never_raises_on_malformed_ids(bad) -> None:
    assert _registry().get(bad) is None


def test_limits_read_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(live.MAX_RUNS_ENV, raising=False)
    assert live.max_concurrent_runs() == 2
    monkeypatch.setenv(live.MAX_RUNS_ENV, "3")
    assert live.max_concurrent_runs() == 3 and RunRegistry.from_environment().max_running == 3
    for bad in ("0", "abc", "1000", "nan", "1e3"):
        monkeypatch.setenv(live.MAX_RUNS_ENV, bad)
        with pytest.raises(ValueError, match=live.MAX_RUNS_ENV):
            live.max_concurrent_runs()
    monkeypatch.setenv(live.MAX_STEPS_CAP_ENV, "40")
    assert [c.max_steps for c in comparison_configs(["TR_rms", "SGD"], max_steps=1000)] == [40, 40]
    assert comparison_configs(["SGD"], max_steps=7)[0].max_steps == 7
    monkeypatch.delenv(live.MAX_STEPS_CAP_ENV)
    assert live.max_steps_cap() is None


def test_comparison_configs_route_options_by_family(tmp_path) -> None:
    uni, rms, adam = comparison_configs(
        ["TR_uni", "TR_rms", "Adam"], tr_options={"radius": 1e-3, "eta2": 0.9},
        gamma2={"TR_uni": 1.5, "TR_rms": 2.0},
        learning_rates={"Adam": 3e-3}, tr_batch_size=256, first_order_batch_size=16, max_steps=7, seed=3,
    )
    assert uni.tr_options == {"radius": 1e-3, "eta2": 0.9, "gamma2": 1.5} and uni.batch_size == 256
    assert rms.tr_options["gamma2"] == 2.0
    assert adam.lr == 3e-3 and adam.batch_size == 16 and adam.tr_options == {}
    assert uni.data_root is None  # digits needs no folder
    mnist = comparison_configs(["SGD"], dataset="mnist", data_root=tmp_path)[0]
    assert mnist.data_root == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="method"):
        comparison_configs(["Newton"])
    with pytest.raises(ValueError, match="empty"):
        comparison_configs([])
    with pytest.raises(ValueError, match="eta1"):
        comparison_configs(["TR_rms"], tr_options={"eta1": 0.99, "eta2": 0.5})


def test_local_dataset_status_without_reading_files(tmp_path) -> None:
    ok, message = local_dataset_status("fashion_mnist", tmp_path)
    assert not ok and "train-images-idx3-ubyte.gz" in message and str(tmp_path / "fashion_mnist") in message
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"")
    assert local_dataset_status("fashion_mnist", tmp_path)[0]
    assert not local_dataset_status("cifar10", tmp_path)[0] and local_dataset_status("digits", tmp_path)[0]


# ------------------------------------------------------------------ histories, summaries, export


def test_history_stores_columns_compactly_and_returns_slices() -> None:
    history = History(("method", "step", "loss", "accepted", "exit"))
    history.append([{"method": "A", "step": 1, "loss": 0.5, "accepted": True, "exit": "boundary"},
                    {"method": "B", "step": 1, "loss": np.float32(0.25), "accepted": False},
                    {"method": "A", "step": 2, "loss": torch.tensor(0.125), "extra": "ignored"}])
    history.append({"method": "B", "step": i, "loss": 1.0 / i} for i in range(2, 1000))
    assert len(history) == 1001 and history.nbytes < 1001 * 8 * 5 * 2  # ~8 bytes per number
    head = history.frame(0, 3)
    assert head["method"].tolist() == ["A", "B", "A"] and head["loss"].tolist() == [0.5, 0.25, 0.125]
    assert head["accepted"].tolist()[:2] == [1.0, 0.0] and math.isnan(head["accepted"].iloc[2])
    assert head["exit"].iloc[0] == "boundary" and head["exit"].isna().tolist() == [False, True, True]
    tail = history.frame(999)
    assert tail.index.tolist() == [999, 1000] and tail["step"].tolist() == [998, 999]
    assert history.last("loss", "A") == 0.125 and math.isnan(history.last("loss", "C"))


def _hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    steps = pd.DataFrame({
        "method": ["A", "A", "B", "B", "B"], "step": [1, 2, 1, 2, 3], "backprops": [4, 8, 1, 2, 3],
        "epoch": [0.5, 1.0, 0.1, 0.2, 0.3], "seconds": [0.4, 0.8, 0.1, 0.2, 0.3],
        "loss": [1.0, 0.5, 2.0, 1.5, 1.2],
    }).reindex(columns=list(STEP_COLUMNS))
    evals = pd.DataFrame({
        "method": ["A", "A", "A", "B", "B"], "step": [0, 1, 2, 0, 3], "backprops": [0, 4, 8, 0, 3],
        "epoch": [0, 0.5, 1.0, 0, 0.3], "seconds": [0, 0.4, 0.8, 0, 0.3],
        "train_loss": [2.3, 0.4, 0.2, 2.3, 0.9], "train_acc": [0.1, 0.92, 0.97, 0.1, 0.6],
        "test_loss": [2.3, 0.5, 0.3, 2.3, 1.0], "test_acc": [0.1, 0.9, 0.95, 0.1, 0.55],
    }).reindex(columns=list(EVAL_COLUMNS))
    return steps, evals


def test_summary_matches_hand_computed_numbers() -> None:
    steps, evals = _hand_made()
    table = summarize(steps, evals, loss_target=0.5, accuracy_target=0.95, statuses={"A": "finished"},
                      warnings={"B": 7})
    a, b = table.set_index("method").loc["A"], table.set_index("method").loc["B"]
    assert (a["steps"], a["backprops"], a["epochs"], a["seconds"]) == (2, 8, 1.0, 0.8)
    assert a["final_batch_loss"] == 0.5 and a["final_train_acc"] == 0.97 and a["final_test_acc"] == 0.95
    assert a["backprops_to_loss"] == 4 and a["seconds_to_loss"] == 0.4  # first eval with loss <= 0.5
    assert a["backprops_to_acc"] == 8 and a["seconds_to_acc"] == 0.8  # first eval with acc >= 0.95
    assert math.isnan(b["backprops_to_loss"]) and math.isnan(b["backprops_to_acc"])
    assert a["status"] == "finished" and b["status"] == "" and (a["warnings"], b["warnings"]) == (0, 7)
    assert summarize(steps, evals)["backprops_to_acc"].isna().all()


def test_race_sentence_comes_from_the_numbers() -> None:
    table = pd.DataFrame({"method": ["TR_rms", "Adam", "SGD"], "backprops_to_acc": [900.0, 300.0, math.nan]})
    text = describe_race(table, "backprops_to_acc", "95% training accuracy")
    assert text.startswith("**Adam** reached 95% training accuracy first, after 300 backprops.")
    assert "TR_rms needed 900 (3.0x as many)" in text and "Not reached: SGD" in text
    none = table.assign(backprops_to_acc=math.nan)
    assert "No method reached" in describe_race(none, "backprops_to_acc", "x")
    assert "after 1.23 seconds" in describe_race(pd.DataFrame({"method": ["A"], "seconds_to_loss": [1.234]}),
                                                 "seconds_to_loss", "t")


def test_csv_export_round_trips() -> None:
    run, _ = _run([FakeConfig("TR_rms", cost=3), FakeConfig("Adam")])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    data = metrics_csv(snap.steps, snap.evals)
    assert isinstance(data, bytes) and data.startswith(b"record,")
    steps, evals = read_metrics_csv(data)
    expected = snap.steps.replace([np.inf, -np.inf], np.nan).dropna(axis=1, how="all").reset_index(drop=True)
    pd.testing.assert_frame_equal(steps[expected.columns], expected, check_dtype=False)
    pd.testing.assert_frame_equal(evals[snap.evals.columns], snap.evals.reset_index(drop=True),
                                  check_dtype=False)
    assert np.isnan(steps["rho"]).sum() == (snap.steps["rho"] == -np.inf).sum() > 0  # -inf -> empty field


def test_live_modules_never_import_streamlit() -> None:
    code = ("import sys, etr_core.live, etr_core.live.worker, etr_core.viz.live_plots; "
            "sys.exit(1 if 'streamlit' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


@pytest.mark.cuda
def test_real_run_on_cuda_records_the_device() -> None:
    configs = comparison_configs(["TR_rms", "Adam"], max_steps=6, eval_every=3, device="cuda")
    run = LiveRun(configs, max_seconds=300, torch_threads=1).start()
    assert run.join(300)
    snap = run.snapshot()
    assert snap.status == "finished", (snap.message, run.tracebacks())
    assert snap.device == "cuda" and "on cuda" in run._running_message()
    assert snap.steps.groupby("method")["step"].max().to_dict() == {"TR_rms": 6, "Adam": 6}


def test_join_while_another_thread_is_still_starting_the_worker(monkeypatch) -> None:
    """stop_all_runs() may join a run that start() has created but not yet started: it waits."""
    from etr_core.live import control

    real_start = control.start_process

    def slow_start(process):
        time.sleep(1.0)
        real_start(process)

    monkeypatch.setattr(control, "start_process", slow_start)
    run = LiveRun([FakeConfig("A", max_steps=3)], train_fn=fake_train, stall_rule=None)
    starter = threading.Thread(target=run.start)
    starter.start()
    assert _wait(lambda: run._control.thread is not None, 10)
    assert run.join(120)  # no "cannot join thread before it is started"
    starter.join(10)
    assert run.snapshot().status == "finished"


def test_every_live_setting_the_documents_name_exists() -> None:
    """README and the benchmark notes name server settings; each must be one the server reads."""
    import re
    from pathlib import Path

    from etr_core.live.settings import LIMITS

    root = Path(__file__).resolve().parents[2]
    named = set()
    for doc in ("README.md", "docs/benchmarks/live.md", "docs/benchmarks.md"):
        named |= set(re.findall(r"ETR_LIVE_[A-Z_]*[A-Z]", (root / doc).read_text()))
    assert "ETR_LIVE_MAX_RUNS" in named
    # a family written as ETR_LIVE_POLL_* is read as its prefix
    unknown = [n for n in named if n not in LIMITS and not any(k.startswith(n + "_") for k in LIMITS)]
    assert not unknown, unknown
