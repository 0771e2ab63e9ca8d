"""Who may stop a live run, the CPU budget on the live page, presentation fonts and the TR preset.

Two AppTest sessions play two browsers: the one that pressed Start owns the run; the other opens the
run's link and sees every curve but no Stop, and may start a copy that it owns. The browser id itself
(``ui.owner``) is tested as a pure function of the cookie Streamlit sets; here a session that holds
the owner's id plays "a new tab of the same browser".
"""

from __future__ import annotations

import binascii
import os
import time

import pytest
from streamlit.testing.v1 import AppTest

import ui.presentation as presentation
from etr_core.cpu_budget import default_budget
from etr_core.live import default_registry, stop_all_runs
from tests.app.support import APP, plotly_figures
from tests.core.live_fakes import FakeConfig, FakeTrain
from ui.owner import XSRF_COOKIE, owner_from_cookies

PAGE = "pages/live_training.py"
OWNER_KEY = "_etr_owner"
# long enough to be watched, stopped and copied: one cheap method, a large budget
LONG = {"lt_methods": "SGD", "lt_budget": "20000", "lt_max_steps": "20000", "lt_max_seconds": "120",
        "lt_eval_every": "50"}


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live-training worker outlived its test"


def _page(query: dict[str, str] | None = None, owner: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if owner is not None:
        at.session_state[OWNER_KEY] = owner
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _poll(at: AppTest, done, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        time.sleep(0.3)
    pytest.fail("the page did not reach the expected state before the deadline")


def _keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def _xsrf(token: bytes, mask: bytes) -> str:
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(token))
    return f"2|{binascii.b2a_hex(mask).decode()}|{binascii.b2a_hex(masked).decode()}|1700000000"


def test_the_browser_id_is_the_unmasked_cookie_token_hashed() -> None:
    token, other = os.urandom(16), os.urandom(16)
    first = owner_from_cookies({XSRF_COOKIE: _xsrf(token, b"\x01\x02\x03\x04")})
    # Streamlit re-masks the same token on every response: a reload or a new tab sends another value
    assert owner_from_cookies({XSRF_COOKIE: _xsrf(token, b"\xaa\xbb\xcc\xdd")}) == first
    assert owner_from_cookies({XSRF_COOKIE: binascii.b2a_hex(token).decode()}) == first  # version 1
    assert first.startswith("b-") and binascii.b2a_hex(token).decode() not in first
    assert owner_from_cookies({XSRF_COOKIE: _xsrf(other, b"\x01\x02\x03\x04")}) != first
    for bad in ({}, {XSRF_COOKIE: ""}, {XSRF_COOKIE: "2|zz|yy|1"}, {XSRF_COOKIE: "2|01|0102|1"},
                {XSRF_COOKIE: "not hex"}, {XSRF_COOKIE: None}, {"other": "x"}):
        assert owner_from_cookies(bad) is None


@pytest.mark.slow
def test_only_the_owner_may_stop_others_watch_and_start_a_copy_of_their_own() -> None:
    owner = _page(LONG)
    owner.button(key="lt_start").click().run()
    run_id = owner.query_params.get("run")
    run = default_registry().get(run_id)
    assert run is not None and run.owner == owner.session_state[OWNER_KEY]
    _poll(owner, lambda a: len(plotly_figures(a)[0]["data"][0]["x"]) > 0)

    student = _page({"run": run_id})  # another browser opens the link
    keys = _keys(student)
    assert "lt_stop" not in keys and "lt_copy" in keys, keys
    assert any("started in another browser" in c.value for c in student.caption)
    assert plotly_figures(student)[0]["data"], "the other browser does not see the curves"
    assert not default_registry().stop(run_id, student.session_state[OWNER_KEY])  # nor via the server
    assert run.running

    same_browser = _page({"run": run_id}, owner=owner.session_state[OWNER_KEY])  # a new tab of the owner
    assert not same_browser.button(key="lt_stop").disabled and "lt_copy" not in _keys(same_browser)

    student.button(key="lt_copy").click().run()
    assert not student.exception, student.exception
    copy_id = student.query_params.get("run")
    copy = default_registry().get(copy_id)
    assert copy_id != run_id and copy.owner == student.session_state[OWNER_KEY]
    configs, options = run.copy_arguments()
    copy_configs, copy_options = copy.copy_arguments()
    assert copy_configs == configs and copy_options == options  # the same settings
    assert not student.button(key="lt_stop").disabled  # the copy is the student's to stop

    owner.button(key="lt_stop").click().run()
    assert run.join(60) and run.status == "stopped"
    student.button(key="lt_stop").click().run()
    assert copy.join(60) and copy.status == "stopped"


def test_an_exhausted_cpu_budget_disables_start_with_one_line_saying_when() -> None:
    at = _page()
    owner = at.session_state[OWNER_KEY]
    default_budget().charge(owner, default_budget().seconds + 1)
    at.run()
    assert at.button(key="lt_start").disabled
    (line,) = [w.value for w in at.warning if "CPU" in w.value]
    assert "can start again in" in line and "UTC" in line


def _fake_finished_run():
    configs = [FakeConfig("TR_rms", max_steps=12, eval_every=4),
               FakeConfig("Adam", max_steps=12, eval_every=4)]
    run = default_registry().submit(configs, owner="elsewhere", train_fn=FakeTrain(), in_process=True,
                                    stall_rule=None, settings={"accuracy_target": 0.5, "loss_target": 0.1})
    assert run.join(30)
    return run


@pytest.mark.slow
def test_presentation_mode_enlarges_the_fonts_of_every_live_chart() -> None:
    run = _fake_finished_run()
    normal = [f["layout"] for f in plotly_figures(_page({"run": run.id}))]
    shown = [f["layout"] for f in plotly_figures(_page({"run": run.id, "present": "true"}))]
    assert len(normal) == len(shown) == 4
    for before, after in zip(normal, shown):
        base = before.get("font", {}).get("size", 12)
        assert after["font"]["size"] == pytest.approx(presentation.FONT_SCALE * base)
        assert after["xaxis"]["tickfont"]["size"] >= after["font"]["size"]
    empty = plotly_figures(_page({"present": "true"}))[0]["layout"]  # the chart before any run
    assert empty["font"]["size"] == pytest.approx(presentation.FONT_SCALE * 12)
