"""The live-training page under AppTest: runs that belong to the server, re-attaching by link,
the queue, converged/stalled methods, hostile URLs, and the server's thread count.

AppTest never fires ``run_every`` timers, so the tests poll with ``at.run()`` until a deadline.
Every run is stopped and its worker joined at the end of each test.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from etr_core.live import StallRule, default_registry, stop_all_runs
from tests.app.support import plotly_figures
from tests.core.live_fakes import FakeConfig, FakeTrain

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGE = "pages/live_training.py"
LOG_TOGGLE = "Log-scale loss axis"


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live-training worker outlived its test"


def _page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


_figures = plotly_figures


def _poll(at: AppTest, done, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        time.sleep(0.3)
    pytest.fail("the live run did not reach the expected state before the deadline")


def test_default_page_shows_controls_and_an_empty_chart() -> None:
    at = _page()
    assert "Live training" in at.title[0].value
    assert at.multiselect(key="lt_methods").value == ["TR_uni", "TR_rms", "Adam"]
    assert at.selectbox(key="lt_dataset").value == "digits"
    assert at.toggle(key="lt_log").label == LOG_TOGGLE and at.toggle(key="lt_log").value is True
    assert not at.button(key="lt_start").disabled and at.button(key="lt_stop").disabled
    figures = _figures(at)
    assert len(figures) == 1 and figures[0]["layout"]["yaxis"]["type"] == "log"
    assert "Press Start" in figures[0]["layout"]["annotations"][0]["text"]
    latex = " ".join(element.value for element in at.latex)
    assert "0.95" in latex and "0.0001" in latex and "1.75" in latex  # Table 1 numbers plugged in


def test_tiny_run_finishes_with_charts_summary_and_download() -> None:
    at = _page()
    at.multiselect(key="lt_methods").set_value(["TR_rms", "Adam"])
    at.select_slider(key="lt_budget").set_value(100)
    at.select_slider(key="lt_eval_every").set_value(2)
    at.select_slider(key="lt_acc_target").set_value(0.5)
    at.run()
    at.button(key="lt_start").click().run()
    assert not at.exception, at.exception
    assert at.session_state["lt_start_error"] is None
    _poll(at, lambda a: len(a.success) > 0)
    assert "Run finished" in at.success[0].value
    assert at.get("progress")[0].value == 100
    loss, acc, cg, tr = _figures(at)
    names = [trace["name"] for trace in loss["data"]]
    assert names == ["TR_rms (mini-batch)", "TR_rms (training set)",
                     "Adam (mini-batch)", "Adam (training set)"]
    assert all(len(trace["x"]) > 0 for trace in loss["data"])
    assert max(loss["data"][0]["x"]) >= 100 and max(loss["data"][2]["x"]) >= 100  # the backprop budget
    assert {t["name"] for t in acc["data"]} == {"TR_rms (train)", "TR_rms (test)",
                                                "Adam (train)", "Adam (test)"}
    assert [t["name"] for t in cg["data"]] == ["TR_rms CG iterations"]
    assert [t["name"] for t in tr["data"]] == ["TR_rms radius", "TR_rms ρ"]
    summary = at.dataframe[0].value
    assert list(summary["method"]) == ["TR_rms", "Adam"]
    assert (summary["backprops"] >= 100).all()
    text = " ".join(m.value for m in at.markdown)
    assert "50% training accuracy" in text
    assert at.get("download_button"), "no CSV download button"
    assert not at.button(key="lt_start").disabled and at.button(key="lt_stop").disabled


def test_axis_switch_and_log_toggle_change_the_chart() -> None:
    at = _page()
    at.radio(key="lt_x").set_value("epochs").run()
    assert "epochs" in _figures(at)[0]["layout"]["xaxis"]["title"]["text"]
    at.toggle(key="lt_log").set_value(False).run()
    assert _figures(at)[0]["layout"]["yaxis"].get("type") != "log"
    assert not at.exception


def test_stop_ends_a_long_run() -> None:
    at = _page()
    at.multiselect(key="lt_methods").set_value(["TR_uni", "SGD"])
    at.select_slider(key="lt_budget").set_value(20000)
    at.select_slider(key="lt_max_steps").set_value(5000)
    at.select_slider(key="lt_max_seconds").set_value(300)
    at.run()
    at.button(key="lt_start").click().run()
    assert at.button(key="lt_start").disabled and not at.button(key="lt_stop").disabled
    _poll(at, lambda a: len(_figures(a)[0]["data"][0]["x"]) > 0)
    at.button(key="lt_stop").click().run()
    _poll(at, lambda a: len(a.info) > 0 and "Run stopped" in " ".join(i.value for i in a.info), 60)
    assert at.get("progress")[0].value == 100
    assert "stopped" in at.dataframe[0].value["status"].tolist()


def test_no_method_selected_disables_start_with_a_message() -> None:
    at = _page()
    at.multiselect(key="lt_methods").set_value([]).run()
    assert at.button(key="lt_start").disabled
    assert any("at least one method" in w.value for w in at.warning)


def test_invalid_query_params_are_clamped_not_crashing() -> None:
    at = _page({"lt_budget": "1e9", "lt_methods": "TR_rms,Newton", "lt_x": "steps", "lt_log": "maybe",
                "lt_dataset": "imagenet", "lt_radius": "-3", "lt_eval_every": "nan"})
    assert not at.exception
    assert at.select_slider(key="lt_budget").value == 20000
    assert at.multiselect(key="lt_methods").value == ["TR_rms"]
    assert at.radio(key="lt_x").value == "backprops"
    assert at.toggle(key="lt_log").value is True
    assert at.selectbox(key="lt_dataset").value == "digits"
    assert at.select_slider(key="lt_radius").value == 1e-5
    assert at.select_slider(key="lt_eval_every").value == 5
    # valid values from a shared link are taken as they are
    at = _page({"lt_budget": "500", "lt_methods": "TR_ada,Adam", "lt_x": "seconds", "lt_log": "false"})
    assert at.select_slider(key="lt_budget").value == 500
    assert at.multiselect(key="lt_methods").value == ["TR_ada", "Adam"]
    assert at.radio(key="lt_x").value == "seconds" and at.toggle(key="lt_log").value is False


def _finished_tiny_run() -> tuple[AppTest, str]:
    at = _page()
    at.multiselect(key="lt_methods").set_value(["TR_rms", "Adam"])
    at.select_slider(key="lt_budget").set_value(100)
    at.select_slider(key="lt_eval_every").set_value(2)
    at.run()
    at.button(key="lt_start").click().run()
    run_id = at.query_params.get("run")
    assert isinstance(run_id, str) and default_registry().get(run_id) is not None
    _poll(at, lambda a: len(a.success) > 0)
    return at, run_id


def test_a_second_tab_with_the_link_reattaches_to_the_finished_run() -> None:
    first, run_id = _finished_tiny_run()
    second = _page({"run": run_id})  # a fresh session: a reloaded tab, or a student opening the link
    assert "Run finished" in second.success[0].value
    snap = default_registry().get(run_id).snapshot()  # oracle: what the server holds
    for at in (first, second):
        loss = _figures(at)[0]
        counts = {t["name"]: len(t["x"]) for t in loss["data"]}
        for method in ("TR_rms", "Adam"):
            assert counts[f"{method} (mini-batch)"] == (snap.steps["method"] == method).sum()
            assert counts[f"{method} (training set)"] == (snap.evals["method"] == method).sum()
        assert list(at.dataframe[0].value["method"]) == ["TR_rms", "Adam"]
        assert at.get("download_button"), "no CSV download after re-attaching"
    assert _figures(first)[0]["data"] == _figures(second)[0]["data"]
    assert not second.button(key="lt_start").disabled  # a finished run: a new one may start


def test_file_data_sets_are_offered_when_their_files_are_present(monkeypatch) -> None:
    shared = ROOT.parent / "shared" / "data"
    if not (shared / "mnist").is_dir():
        pytest.skip("the shared MNIST files are not next to this checkout")
    monkeypatch.setenv("ETR_DATA", str(shared))
    options = _page().selectbox(key="lt_dataset").options
    assert "MNIST (local files)" in options and "Fashion-MNIST (local files)" in options
    monkeypatch.setenv("ETR_DATA", str(ROOT / "no-such-folder"))
    assert "MNIST (local files)" not in _page().selectbox(key="lt_dataset").options


def test_unknown_or_malformed_run_ids_explain_and_show_a_fresh_page() -> None:
    at = _page({"run": "AAAAAAAAAAA"})
    assert any("not on this server" in w.value for w in at.warning)
    at = _page({"run": "../../etc/passwd"})
    assert any("not a run id" in w.value for w in at.warning)
    assert "Press Start" in _figures(at)[0]["layout"]["annotations"][0]["text"]


def test_a_live_run_leaves_the_server_thread_count_alone_for_every_session() -> None:
    torch.set_num_threads(2)  # the server's setting; restored by the conftest fixture
    other = _page()
    device_line = [c.value for c in other.sidebar.caption if "Device in use" in c.value]
    _finished_tiny_run()
    other.run()
    assert not other.exception
    assert [c.value for c in other.sidebar.caption if "Device in use" in c.value] == device_line
    assert torch.get_num_threads() == 2
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]


def _blockers(count: int) -> list[threading.Event]:
    gates = []
    for i in range(count):
        gate = threading.Event()
        default_registry().submit([FakeConfig("SGD", max_steps=2, gate=gate)], owner=f"blocker{i}",
                                  train_fn=FakeTrain(), in_process=True, stall_rule=None)
        gates.append(gate)
    return gates


def test_a_run_waits_visibly_in_the_queue_and_starts_when_a_slot_frees() -> None:
    gates = _blockers(default_registry().max_running)
    try:
        at = _page()
        at.multiselect(key="lt_methods").set_value(["Adam"])
        at.select_slider(key="lt_budget").set_value(100)
        at.run()
        at.button(key="lt_start").click().run()
        progress = at.get("progress")[0]
        assert progress.value == 0 and "Queued: 1st of 1 waiting" in progress.proto.text
        assert "this page checks every 5 s" in " ".join(i.value for i in at.info)  # the default
        assert not _figures(at), "a queued run draws no charts"
        assert not at.button(key="lt_stop").disabled and at.button(key="lt_start").disabled
        again = _page()  # the same person in another session may not jump the queue twice...
        again.multiselect(key="lt_methods").set_value(["SGD"]).run()
        again.button(key="lt_start").click().run()
        assert again.query_params.get("run") is not None  # ...but another session may queue
    finally:
        for gate in gates:
            gate.set()
    _poll(at, lambda a: len(a.success) > 0)
    assert (at.dataframe[0].value["backprops"] >= 100).all()


def test_a_queued_tab_names_its_poll_interval_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ETR_LIVE_POLL_QUEUED_SECONDS", "8")
    gates = _blockers(default_registry().max_running)
    try:
        at = _page()
        at.multiselect(key="lt_methods").set_value(["Adam"]).run()
        at.button(key="lt_start").click().run()
        assert not at.exception, at.exception
        notes = " ".join(i.value for i in at.info)
        assert "this page checks every 8 s" in notes and "waits for a training slot" in notes
    finally:
        for gate in gates:
            gate.set()


def test_polls_without_new_rows_do_not_recompute_the_summary(monkeypatch) -> None:
    import ui.live_panels

    calls: list[int] = []
    real = ui.live_panels.summarize

    def counted(steps, evals, **kwargs):
        calls.append(len(steps))
        return real(steps, evals, **kwargs)

    monkeypatch.setattr(ui.live_panels, "summarize", counted)
    run = default_registry().submit([FakeConfig("Adam", max_steps=6, eval_every=2)], owner="elsewhere",
                                    train_fn=FakeTrain(), in_process=True, stall_rule=None,
                                    settings={"accuracy_target": 0.5, "loss_target": 0.01})
    assert run.join(30)
    at = _page({"run": run.id})
    assert calls == [6] and list(at.dataframe[0].value["method"]) == ["Adam"]
    at.run()
    at.run()  # two more polls: nothing new arrived, the table is the one computed before
    assert not at.exception, at.exception
    assert calls == [6] and at.dataframe[0].value["backprops"].tolist() == [6]


def test_a_stalled_and_a_converged_method_are_marked_in_chart_table_and_sentence() -> None:
    configs = [FakeConfig("TR_ada", max_steps=None, losses=(1.0, 0.5, *([1e-9] * 500)), eval_every=4),
               FakeConfig("TR_rms", max_steps=None, reject_from=5, eval_every=4),
               FakeConfig("Adam", max_steps=None, eval_every=4)]
    run = default_registry().submit(configs, owner="elsewhere", train_fn=FakeTrain(), in_process=True,
                                    max_backprops=200, stall_rule=StallRule(reject_patience=20),
                                    settings={"accuracy_target": 0.5, "loss_target": 0.01})
    assert run.join(30)
    at = _page({"run": run.id})
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["TR_ada", "status"] == "converged" and table.loc["TR_rms", "status"] == "stalled"
    assert "rejected" in table.loc["TR_rms", "why it ended early"]
    assert table.loc["Adam", "backprops"] == 200 and table.loc["TR_rms", "backprops"] == 24
    text = " ".join(m.value for m in at.markdown)
    assert "TR_rms stalled after 24 backprops" in text and "TR_ada converged" in text
    names = [t["name"] for t in _figures(at)[0]["data"]]
    assert "TR_ada converged" in names and "TR_rms stalled" in names and "Adam finished" not in names
    assert "TR_rms stalled" in [t["name"] for t in _figures(at)[3]["data"]]  # the radius chart


PAGE_KEYS = (
    "lt_dataset", "lt_max_train", "lt_model", "lt_device", "lt_methods", "lt_tr_batch", "lt_fo_batch",
    "lt_schedule", "lt_budget", "lt_max_steps", "lt_max_seconds", "lt_eval_every", "lt_acc_target",
    "lt_loss_target", "lt_radius", "lt_max_radius", "lt_eta1", "lt_eta2", "lt_gamma1", "lt_gamma2_uni",
    "lt_gamma2_rms", "lt_lr_Adam", "lt_lr_SGD", "lt_x", "lt_log", "run", "seed",
)
HOSTILE = ["nan", "-inf", "Infinity", "9" * 400, "-5", "", "text", ["1", "text", "inf"]]


@pytest.mark.slow
@pytest.mark.parametrize("value", HOSTILE, ids=[str(v)[:12] for v in HOSTILE])
def test_no_url_value_raises(value) -> None:
    at = _page(dict.fromkeys(PAGE_KEYS, value))
    assert not at.exception
    assert at.title and at.button(key="lt_start") is not None
    assert at.select_slider(key="lt_budget").value in (100, 200, 500, 1000, 2000, 5000, 10000, 20000)
