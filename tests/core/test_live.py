"""The live-training worker (etr_core.live) and its figures (etr_core.viz.live_plots), without Streamlit.

Most tests inject a tiny deterministic ``train`` function so that scheduling, stopping, the
concurrency cap and snapshots are checked exactly; one test runs the real training loop on digits.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from etr_core import live
from etr_core.live import (
    EVAL_COLUMNS,
    STEP_COLUMNS,
    LiveRun,
    RunHolder,
    RunSlots,
    comparison_configs,
    describe_race,
    local_dataset_status,
    metrics_csv,
    read_metrics_csv,
    stop_all_runs,
    summarize,
)
from etr_core.viz import live_plots


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    assert stop_all_runs(timeout=20.0) == 0, "a live-training thread outlived its test"


@dataclass
class FakeConfig:
    """What LiveRun reads from a config, plus knobs for the fake loop."""

    method: str
    max_steps: int | None = 10
    max_epochs: float | None = None
    max_seconds: float | None = None
    device: str = "cpu"
    cost: int = 1  # backprops per step
    eval_every: int = 2
    fail_at: int | None = None
    sleep: float = 0.0
    gate: threading.Event | None = None  # the first step waits for it


class FakeTrain:
    """A stand-in for ``training.train`` honouring the same call contract."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.threads: dict[str, int] = {}

    def __call__(self, config, *, callbacks=(), stop_event=None):
        self.threads[config.method] = torch.get_num_threads()
        step, backprops = 0, 0
        for cb in callbacks:
            cb.on_eval(self._eval(config, step, backprops))
        while config.max_steps is None or step < config.max_steps:
            if stop_event is not None and stop_event.is_set():
                return SimpleNamespace(stop_reason="stopped", summary={})
            if config.gate is not None and step == 0:
                config.gate.wait(30)
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            time.sleep(config.sleep)
            with self.lock:
                self.active -= 1
            step += 1
            backprops += config.cost
            if config.fail_at is not None and step == config.fail_at:
                raise RuntimeError(f"boom in {config.method}")
            record = {
                "event": "step", "step": step, "method": config.method, "forward": step, "backward": step,
                "hvp": backprops - step, "backprops": backprops, "epoch": step / 10, "seconds": step * 0.01,
                "loss": 1.0 / step, "rho": 0.5 if step % 3 else -math.inf, "radius": 1e-3 * step,
                "accepted": step % 3 != 0, "cg_iterations": config.cost - 1, "exit": "boundary",
            }
            for cb in callbacks:
                cb.on_step(record)
            if step % config.eval_every == 0:
                for cb in callbacks:
                    cb.on_eval(self._eval(config, step, backprops))
        return SimpleNamespace(stop_reason="max_steps", summary={})

    @staticmethod
    def _eval(config, step, backprops):
        return {"event": "eval", "step": step, "method": config.method, "backprops": backprops,
                "epoch": step / 10, "seconds": step * 0.01, "train_loss": 1.0 / (1 + step),
                "train_acc": min(1.0, 0.1 * step), "test_loss": 1.2 / (1 + step),
                "test_acc": min(1.0, 0.09 * step)}


def _run(configs, **kwargs) -> tuple[LiveRun, FakeTrain]:
    fake = kwargs.pop("train_fn", None) or FakeTrain()
    kwargs.setdefault("slots", RunSlots(4))
    return LiveRun(configs, train_fn=fake, **kwargs), fake


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# ------------------------------------------------------------------ running to completion


def test_multi_method_run_completes_with_every_record() -> None:
    run, _ = _run([FakeConfig("TR_uni", cost=3), FakeConfig("TR_rms", cost=2), FakeConfig("Adam")])
    assert run.status == "idle"
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "finished" and snap.progress == 1.0 and not snap.running
    assert set(snap.method_status.values()) == {"finished"}
    for method in ("TR_uni", "TR_rms", "Adam"):
        part = snap.steps[snap.steps["method"] == method]
        assert part["step"].tolist() == list(range(1, 11))
        evals = snap.evals[snap.evals["method"] == method]
        assert evals["step"].tolist() == [0, 2, 4, 6, 8, 10]
    assert list(snap.steps.columns[: len(STEP_COLUMNS)]) == list(STEP_COLUMNS)
    assert list(snap.evals.columns[: len(EVAL_COLUMNS)]) == list(EVAL_COLUMNS)


@pytest.mark.parametrize("costs", [(5, 1, 2), (1, 1, 1), (7, 3, 1)])
def test_backprops_schedule_always_advances_the_method_furthest_behind(costs) -> None:
    names = ["A", "B", "C"]
    run, _ = _run([FakeConfig(n, max_steps=12, cost=c) for n, c in zip(names, costs)], schedule="backprops")
    run.start()
    assert run.join(20)
    steps = run.snapshot().steps
    cost = dict(zip(names, costs))
    # independent replay: before each recorded step, its method must have had the fewest backprops
    # among the methods that still had steps left (ties go to the earlier method)
    done = dict.fromkeys(names, 0)
    taken = dict.fromkeys(names, 0)
    for method in steps["method"]:
        active = [n for n in names if taken[n] < 12]
        expected = min(active, key=lambda n: (done[n], names.index(n)))
        assert method == expected
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


def test_only_one_method_computes_at_a_time() -> None:
    fake = FakeTrain()
    configs = [FakeConfig(n, max_steps=15, sleep=0.002) for n in ("A", "B", "C")]
    run, _ = _run(configs, train_fn=fake)
    run.start()
    assert run.join(20)
    assert fake.max_active == 1


def test_worker_uses_the_configured_torch_threads_and_leaves_the_caller_alone() -> None:
    before = torch.get_num_threads()
    fake = FakeTrain()
    run, _ = _run([FakeConfig("A", max_steps=2)], train_fn=fake, torch_threads=1)
    run.start()
    assert run.join(20)
    assert fake.threads["A"] == 1
    assert torch.get_num_threads() == before


def test_threads_started_after_a_run_keep_the_app_thread_count() -> None:
    """torch.set_num_threads in a worker also sets the default of threads started later (the server's
    next script runs); the worker must put it back when it ends."""
    torch.set_num_threads(2)  # restored by the conftest fixture
    run, _ = _run([FakeConfig("A", max_steps=2)], train_fn=FakeTrain(), torch_threads=1)
    run.start()
    assert run.join(20)
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]


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
    assert snap.status == "finished"
    assert "time limit of 0.3 s" in snap.message
    assert len(snap.steps) > 0


# ------------------------------------------------------------------ stop and failures


def test_stop_is_cooperative_and_prompt() -> None:
    run, _ = _run([FakeConfig(n, max_steps=None, sleep=0.005) for n in ("A", "B")], max_seconds=None)
    run.start()
    assert _wait(lambda: len(run.snapshot().steps) >= 10)
    run.stop()
    assert run.join(5.0), "the worker did not stop within 5 s of stop()"
    snap = run.snapshot()
    assert snap.status == "stopped" and snap.message.startswith("Stopped after")
    assert set(snap.method_status.values()) == {"stopped"}
    count = len(snap.steps)
    time.sleep(0.05)
    assert len(run.snapshot().steps) == count  # nothing trains after the stop


def test_exception_is_captured_and_other_methods_finish() -> None:
    run, _ = _run([FakeConfig("A"), FakeConfig("B", fail_at=3), FakeConfig("C")])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "failed: B: RuntimeError: boom in B"
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

    run = LiveRun([FakeConfig("SGD")], train_fn=diverging, slots=RunSlots(1)).start()
    assert run.join(20)
    snap = run.snapshot()
    assert snap.status == "finished" and snap.method_status["SGD"] == "diverged"
    assert "Diverged" in snap.message and "non-finite" in snap.errors["SGD"]


# ------------------------------------------------------------------ concurrency cap


def test_cap_queues_a_second_run_until_the_first_ends() -> None:
    slots = RunSlots(1)
    gate = threading.Event()
    first = LiveRun([FakeConfig("A", max_steps=3, gate=gate)], train_fn=FakeTrain(), slots=slots).start()
    assert _wait(lambda: first.status == "running")
    second = LiveRun([FakeConfig("B", max_steps=3)], train_fn=FakeTrain(), slots=slots).start()
    assert _wait(lambda: "1 of 1" in second.message)
    assert second.status == "queued" and second.snapshot().steps.empty
    gate.set()
    assert first.join(20) and second.join(20)
    assert first.status == "finished" and second.status == "finished"
    assert slots.in_use == 0


def test_cap_refuses_after_the_queue_timeout_and_stop_cancels_a_queued_run() -> None:
    slots = RunSlots(1)
    assert slots.acquire(0)
    try:
        refused = LiveRun([FakeConfig("A")], train_fn=FakeTrain(), slots=slots, queue_timeout=0.2).start()
        assert refused.join(20)
        assert refused.status.startswith("failed: no free training slot after 0.2 s")
        cancelled = LiveRun([FakeConfig("A")], train_fn=FakeTrain(), slots=slots).start()
        assert _wait(lambda: cancelled.status == "queued")
        cancelled.stop()
        assert cancelled.join(5)
        assert cancelled.status == "stopped" and cancelled.snapshot().steps.empty
    finally:
        slots.release()
    assert slots.in_use == 0


def test_global_cap_reads_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(live.MAX_RUNS_ENV, raising=False)
    assert live.max_concurrent_runs() == 2
    monkeypatch.setenv(live.MAX_RUNS_ENV, "3")
    assert live.max_concurrent_runs() == 3
    for bad in ("0", "abc", "1000"):
        monkeypatch.setenv(live.MAX_RUNS_ENV, bad)
        with pytest.raises(ValueError, match=live.MAX_RUNS_ENV):
            live.max_concurrent_runs()
    monkeypatch.delenv(live.MAX_RUNS_ENV)
    assert isinstance(live.global_slots(), RunSlots)


def test_semaphore_is_bounded() -> None:
    slots = RunSlots(1)
    with pytest.raises(ValueError):
        slots.release()


# ------------------------------------------------------------------ snapshots, holder, validation


def test_snapshots_during_a_run_are_consistent_copies() -> None:
    configs = [FakeConfig(n, max_steps=60, eval_every=3, sleep=0.001) for n in ("A", "B")]
    run, _ = _run(configs)
    run.start()
    seen = 0
    while run.is_alive() or seen == 0:
        snap = run.snapshot()
        for method in ("A", "B"):
            steps = snap.steps.loc[snap.steps["method"] == method, "step"].tolist()
            assert steps == list(range(1, len(steps) + 1))  # no gap, no duplicate, in order
            evals = snap.evals.loc[snap.evals["method"] == method, "step"].tolist()
            assert all(e <= len(steps) for e in evals)
        assert 0.0 <= snap.progress <= 1.0
        seen += 1
    final = run.snapshot()
    assert final.status == "finished" and len(final.steps) == 120
    final.steps.loc[:, "loss"] = -1.0  # a snapshot is a copy
    assert (run.snapshot().steps["loss"] > 0).all()


def test_run_holder_replaces_and_releases() -> None:
    holder = RunHolder()
    first, _ = _run([FakeConfig("A", max_steps=None, sleep=0.005)], max_seconds=None)
    holder.replace(first.start())
    second, _ = _run([FakeConfig("B", max_steps=None, sleep=0.005)], max_seconds=None)
    holder.replace(second.start())
    assert first.join(5) and first.status == "stopped"
    live.release_holder(holder)
    assert holder.run is None and second.join(5) and second.status == "stopped"


def test_bad_arguments_fail_early_with_names() -> None:
    with pytest.raises(ValueError, match="configs"):
        LiveRun([])
    with pytest.raises(ValueError, match="repeated"):
        LiveRun([FakeConfig("A"), FakeConfig("A")])
    with pytest.raises(ValueError, match="schedule"):
        LiveRun([FakeConfig("A")], schedule="random")
    with pytest.raises(ValueError, match="max_seconds"):
        LiveRun([FakeConfig("A")], max_seconds=-1)
    with pytest.raises(ValueError, match="max_backprops"):
        LiveRun([FakeConfig("A")], max_backprops=0)
    with pytest.raises(TypeError, match="method"):
        LiveRun([SimpleNamespace(method=3)])
    run, _ = _run([FakeConfig("A", max_steps=1)])
    run.start()
    with pytest.raises(RuntimeError, match="already started"):
        run.start()
    assert run.join(20)


def test_comparison_configs_route_options_by_family() -> None:
    configs = comparison_configs(
        ["TR_uni", "TR_rms", "Adam"], tr_options={"radius": 1e-3, "eta2": 0.9},
        gamma2={"TR_uni": 1.5, "TR_rms": 2.0},
        learning_rates={"Adam": 3e-3}, tr_batch_size=256, first_order_batch_size=16, max_steps=7, seed=3,
    )
    uni, rms, adam = configs
    assert uni.tr_options == {"radius": 1e-3, "eta2": 0.9, "gamma2": 1.5} and uni.batch_size == 256
    assert rms.tr_options["gamma2"] == 2.0
    assert adam.lr == 3e-3 and adam.batch_size == 16 and adam.tr_options == {}
    assert {c.max_steps for c in configs} == {7} and {c.seed for c in configs} == {3}
    with pytest.raises(ValueError, match="method"):
        comparison_configs(["Newton"])
    with pytest.raises(ValueError, match="empty"):
        comparison_configs([])
    with pytest.raises(ValueError, match="eta1"):
        comparison_configs(["TR_rms"], tr_options={"eta1": 0.99, "eta2": 0.5})


def test_server_step_cap_lowers_max_steps(monkeypatch) -> None:
    monkeypatch.setenv(live.MAX_STEPS_CAP_ENV, "40")
    assert live.max_steps_cap() == 40
    configs = comparison_configs(["TR_rms", "SGD"], max_steps=1000)
    assert [c.max_steps for c in configs] == [40, 40]
    assert comparison_configs(["SGD"], max_steps=7)[0].max_steps == 7
    monkeypatch.setenv(live.MAX_STEPS_CAP_ENV, "-1")
    with pytest.raises(ValueError, match=live.MAX_STEPS_CAP_ENV):
        live.max_steps_cap()
    monkeypatch.delenv(live.MAX_STEPS_CAP_ENV)
    assert live.max_steps_cap() is None


def test_local_dataset_status_without_reading_files(tmp_path) -> None:
    ok, message = local_dataset_status("fashion_mnist", tmp_path)
    assert not ok and "train-images-idx3-ubyte.gz" in message and str(tmp_path / "fashion_mnist") in message
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"")
    assert local_dataset_status("fashion_mnist", tmp_path)[0]
    ok, message = local_dataset_status("cifar10", tmp_path)
    assert not ok and "data_batch_1" in message
    assert local_dataset_status("digits", tmp_path)[0]


# ------------------------------------------------------------------ summaries and export


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
    table = summarize(steps, evals, loss_target=0.5, accuracy_target=0.95, statuses={"A": "finished"})
    a, b = table.set_index("method").loc["A"], table.set_index("method").loc["B"]
    assert (a["steps"], a["backprops"], a["epochs"], a["seconds"]) == (2, 8, 1.0, 0.8)
    assert a["final_batch_loss"] == 0.5 and a["final_train_acc"] == 0.97 and a["final_test_acc"] == 0.95
    assert a["backprops_to_loss"] == 4 and a["seconds_to_loss"] == 0.4  # first eval with loss <= 0.5
    assert a["backprops_to_acc"] == 8 and a["seconds_to_acc"] == 0.8  # first eval with acc >= 0.95
    assert math.isnan(b["backprops_to_loss"]) and math.isnan(b["backprops_to_acc"])
    assert a["status"] == "finished" and b["status"] == ""
    untargeted = summarize(steps, evals)
    assert untargeted["backprops_to_acc"].isna().all()


def test_race_sentence_comes_from_the_numbers() -> None:
    table = pd.DataFrame({"method": ["TR_rms", "Adam", "SGD"], "backprops_to_acc": [900.0, 300.0, math.nan]})
    text = describe_race(table, "backprops_to_acc", "95% training accuracy")
    assert text.startswith("**Adam** reached 95% training accuracy first, after 300 backprops.")
    assert "TR_rms needed 900 (3.0x as many)" in text and "Not reached: SGD" in text
    none = table.assign(backprops_to_acc=math.nan)
    assert "No method reached" in describe_race(none, "backprops_to_acc", "x")
    one = pd.DataFrame({"method": ["A"], "seconds_to_loss": [1.234]})
    seconds = describe_race(one, "seconds_to_loss", "t")
    assert "after 1.23 seconds" in seconds


def test_csv_export_round_trips(tmp_path) -> None:
    run, _ = _run([FakeConfig("TR_rms", cost=3), FakeConfig("Adam")])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    data = metrics_csv(snap.steps, snap.evals)
    assert isinstance(data, bytes) and data.startswith(b"record,")
    steps, evals = read_metrics_csv(data)
    expected_steps = snap.steps.replace([np.inf, -np.inf], np.nan).dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(steps[expected_steps.columns], expected_steps.reset_index(drop=True),
                                  check_dtype=False)
    pd.testing.assert_frame_equal(evals[snap.evals.columns].reset_index(drop=True),
                                  snap.evals.reset_index(drop=True), check_dtype=False)
    assert np.isnan(steps["rho"]).sum() == (snap.steps["rho"] == -np.inf).sum() > 0  # -inf -> empty field


# ------------------------------------------------------------------ the real training loop


def test_real_training_loop_tiny_comparison() -> None:
    from etr_core.training import TrainConfig

    configs = [TrainConfig(method=m, max_steps=4, eval_every=2, device="cpu")
               for m in ("TR_uni", "TR_rms", "Adam")]
    run = LiveRun(configs, slots=RunSlots(1), max_seconds=120).start()
    assert run.join(120), "the real tiny run did not finish"
    snap = run.snapshot()
    assert snap.status == "finished", (snap.status, run.tracebacks())
    for method in ("TR_uni", "TR_rms", "Adam"):
        part = snap.steps[snap.steps["method"] == method]
        assert part["step"].tolist() == [1, 2, 3, 4]
        assert (part["backprops"] == part["backward"] + part["hvp"]).all()
        assert part["backprops"].is_monotonic_increasing
        assert snap.evals.loc[snap.evals["method"] == method, "step"].tolist() == [0, 2, 4]
    adam = snap.steps[snap.steps["method"] == "Adam"]
    assert adam["backprops"].tolist() == [1, 2, 3, 4] and adam["rho"].isna().all()
    tr = snap.steps[snap.steps["method"] == "TR_rms"]
    assert tr["radius"].notna().all() and (tr["cg_iterations"] >= 1).all()
    summaries = run.results()
    assert set(summaries) == {"TR_uni", "TR_rms", "Adam"}
    assert {s["stop_reason"] for s in summaries.values()} == {"max_steps"}
    assert summaries["Adam"]["backprops"] == 4


def test_live_module_never_imports_streamlit() -> None:
    import subprocess
    from pathlib import Path

    root = Path(live.__file__).resolve().parents[1]
    code = ("import sys, etr_core.live, etr_core.viz.live_plots; "
            "sys.exit(1 if 'streamlit' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


# ------------------------------------------------------------------ figures


def test_loss_figure_has_two_traces_per_method_in_one_colour() -> None:
    steps, evals = _hand_made()
    fig = live_plots.loss_figure(steps, evals, x="backprops", log_y=True, loss_target=0.5)
    names = [t.name for t in fig.data]
    assert names == ["A (mini-batch)", "A (training set)", "B (mini-batch)", "B (training set)"]
    assert list(fig.data[0].x) == [4, 8] and list(fig.data[1].y) == [2.3, 0.4, 0.2]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert fig.layout.yaxis.type == "log"
    assert live_plots.loss_figure(steps, evals, log_y=False).layout.yaxis.type != "log"
    epochs = live_plots.loss_figure(steps, evals, x="epochs")
    assert list(epochs.data[0].x) == [0.5, 1.0] and "epochs" in epochs.layout.xaxis.title.text
    with pytest.raises(ValueError, match="x"):
        live_plots.loss_figure(steps, evals, x="steps")


def test_method_colours_are_stable_and_distinct() -> None:
    methods = ("TR_uni", "TR_ada", "TR_rms", "SGD", "Adagrad", "RMSprop", "Adam")
    colours = [live_plots.method_color(m) for m in methods]
    assert len(set(colours)) == 7
    assert live_plots.method_color("custom") == live_plots.method_color("custom")


def test_trust_region_figure_clips_rho_and_marks_rejections() -> None:
    run, _ = _run([FakeConfig("TR_rms", max_steps=6, cost=2), FakeConfig("Adam", max_steps=3)])
    run.start()
    assert run.join(20)
    snap = run.snapshot()
    fig = live_plots.trust_region_figure(snap.steps, eta1=1e-4, eta2=0.95)
    assert [t.name for t in fig.data] == ["TR_rms radius", "TR_rms ρ"]  # first-order methods have no radius
    rho = fig.data[1]
    assert list(rho.y) == [0.5, 0.5, live_plots.RHO_CLIP[0], 0.5, 0.5, live_plots.RHO_CLIP[0]]
    assert list(rho.marker.symbol) == ["circle", "circle", "circle-open"] * 2
    cg = live_plots.cg_iterations_figure(snap.steps)
    assert [t.name for t in cg.data] == ["TR_rms CG iterations"] and list(cg.data[0].y) == [1] * 6
    acc = live_plots.accuracy_figure(snap.evals, accuracy_target=0.95)
    assert [t.name for t in acc.data] == ["TR_rms (train)", "TR_rms (test)", "Adam (train)", "Adam (test)"]


def test_downsample_keeps_ends_and_bounds_points() -> None:
    frame = pd.DataFrame({"x": np.arange(10_001)})
    thin = live_plots.downsample(frame, 100)
    assert len(thin) <= 100 and thin["x"].iloc[0] == 0 and thin["x"].iloc[-1] == 10_000
    assert live_plots.downsample(frame.head(5), 100).equals(frame.head(5))
    with pytest.raises(ValueError, match="max_points"):
        live_plots.downsample(frame, 1)


def test_empty_history_draws_placeholders() -> None:
    steps, evals = pd.DataFrame(columns=list(STEP_COLUMNS)), pd.DataFrame(columns=list(EVAL_COLUMNS))
    for fig in (live_plots.loss_figure(steps, evals), live_plots.accuracy_figure(evals),
                live_plots.trust_region_figure(steps), live_plots.cg_iterations_figure(steps)):
        assert fig.layout.annotations  # a message instead of an empty frame


@pytest.mark.cuda
def test_real_run_on_cuda_records_the_device() -> None:
    configs = comparison_configs(["TR_rms", "Adam"], max_steps=6, eval_every=3, device="cuda")
    run = LiveRun(configs, slots=RunSlots(1), max_seconds=300, torch_threads=1).start()
    assert run.join(300)
    snap = run.snapshot()
    assert snap.status == "finished", (snap.status, run.tracebacks())
    assert snap.device == "cuda" and "on cuda" in run._running_message()
    assert snap.steps.groupby("method")["step"].max().to_dict() == {"TR_rms": 6, "Adam": 6}
