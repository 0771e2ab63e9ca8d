"""The live-training page under AppTest: start a tiny run, poll until it ends, stop a long one.

AppTest never fires ``run_every`` timers, so the tests poll with ``at.run()`` until a deadline.
Every worker thread is stopped and joined at the end of each test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from etr_core.live import stop_all_runs
from tests.app.support import plotly_figures

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
