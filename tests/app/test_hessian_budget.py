"""The Hessian page under the per-browser CPU budget, and its charts in presentation mode."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

import ui.presentation as presentation
from etr_core.cpu_budget import default_budget
from tests.app.support import open_page, plotly_figures

PAGE = "pages/hessian_diagonal.py"
TINY = {"hd_width": "2", "hd_steps": "20", "seed": "11"}  # 64-2-10 on digits: d = 160
OWNER_KEY = "_etr_owner"


def _open(query: dict[str, str], timeout: float = 180) -> AppTest:
    at = open_page(PAGE, query, timeout=timeout)
    deadline = time.monotonic() + timeout
    while ((not at.metric and at.get("progress")) or any(b.key == "hd_cancel" for b in at.button)) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    return at


def test_an_exhausted_budget_starts_nothing_new_but_cached_results_still_show() -> None:
    at = _open(TINY)
    computed = {m.label: m.value for m in at.metric}
    assert computed, "the first answer did not arrive"
    payer = at.session_state[OWNER_KEY]
    assert default_budget().used(payer) > 0  # the jobs' CPU was charged to this browser
    default_budget().charge(payer, default_budget().seconds + 1)
    at.selectbox(key="hd_act").set_value("relu").run()  # a new setting: nothing cached
    assert not at.exception, at.exception
    lines = [w.value for w in at.warning if "CPU" in w.value]
    assert len(lines) == 1 and "can start again in" in lines[0] and not at.metric
    at.selectbox(key="hd_act").set_value("tanh").run()  # back to the computed setting
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric} == computed
    assert plotly_figures(at), "the cached heat map is not drawn"


@pytest.mark.slow
def test_presentation_mode_enlarges_the_hessian_charts() -> None:
    normal = plotly_figures(_open({**TINY, "seed": "12"}))
    shown = plotly_figures(_open({**TINY, "seed": "12", "present": "true"}))
    assert len(normal) == len(shown) == 3  # heat map, Fig. 2 bars, eigenvalues
    for before, after in zip(normal, shown):
        base = before["layout"].get("font", {}).get("size", 12)
        assert after["layout"]["font"]["size"] == pytest.approx(presentation.FONT_SCALE * base)
