"""The live page in a real browser: a run survives a reload, a dropped connection and a second tab.

Debian's chromium driven by playwright against ``streamlit run app.py`` (the recipe of
``test_pages_in_browser.py``). One run trains in a worker process while the page is reloaded, the
browser goes offline and back (the websocket drops and reconnects), and a second tab opens the
page's link: every time the curves come back with at least the points seen before, and the second
tab, being the same browser, is offered Stop. A second browser context (another browser) opening the
link sees the curves but no Stop, only "Start a copy of this run". After Stop (pressed after the
reload and the reconnect: the owner kept it) the summary and the CSV download are there.
Screenshots go to ``artifacts/browser/``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHART = '[data-testid="stPlotlyChart"] .main-svg'
# a run long enough to be interrupted on a quiet machine too: three methods, the largest budget and
# first-order batch, an evaluation on the full data after every step; at most 300 s
LONG_RUN = ("lt_methods=TR_rms,Adam,SGD&lt_budget=20000&lt_max_steps=20000&lt_max_seconds=300"
            "&lt_eval_every=1&lt_fo_batch=256")


@pytest.fixture(scope="module")
def server(chromium_path: str) -> Iterator[str]:
    """A server of this module's own, without the shared one's step cap: the run must be long (and
    not cut by the per-browser CPU budget, which the unit tests check)."""
    with streamlit_server("streamlit_live.log", dict(os.environ, ETR_SESSION_CPU_SECONDS="100000")) as url:
        yield url


def _points(page) -> float:
    """How far the curves of the first Plotly chart (the loss chart) reach: the sum over its traces of
    the largest x (backprops). It grows with every recorded step, unlike the number of points, which
    the page thins to a fixed number per curve on long runs; re-attached tabs must reach as far."""
    return page.evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd.data) return 0;
            return gd.data.reduce((n, t) => {
                let far = -Infinity;
                for (const v of (t.x || [])) if (v !== null && v > far) far = v;
                return n + (Number.isFinite(far) ? far : 0);
            }, 0);
        }"""
    )


def _wait_points(page, at_least: float, timeout_s: float = 120.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = _points(page)
        if count >= at_least:
            return count
        page.wait_for_timeout(500)
    pytest.fail(f"the loss chart did not come back reaching {at_least} backprops (reaches {_points(page)})")


def _text(page) -> str:
    return page.get_by_test_id("stMainBlockContainer").inner_text()


def test_a_live_run_survives_reload_reconnect_and_a_second_tab(server: str, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{server}/live_training?{LONG_RUN}", wait_until="domcontentloaded")
        main = page.get_by_test_id("stMainBlockContainer")
        start = main.get_by_role("button", name="Start")
        start.wait_for(timeout=180_000)
        start.click(no_wait_after=True)
        page.wait_for_function("() => location.search.includes('run=')", timeout=60_000)
        link = page.url
        page.wait_for_selector(CHART, timeout=180_000)
        seen = _wait_points(page, 200)

        stranger = browser.new_context(viewport={"width": 1400, "height": 1200})  # another browser
        try:
            watcher = stranger.new_page()
            watcher.on("pageerror", lambda e: errors.append(str(e)))
            watcher.goto(link, wait_until="domcontentloaded")
            watcher.wait_for_selector(CHART, timeout=180_000)
            _wait_points(watcher, seen)  # every curve, while the run trains ...
            watcher_main = watcher.get_by_test_id("stMainBlockContainer")
            watcher_main.get_by_role("button", name="Start a copy of this run").wait_for(timeout=60_000)
            assert watcher_main.get_by_role("button", name="Stop").count() == 0  # ... but no Stop
            assert "started in another browser" in _text(watcher) and "running" in _text(watcher)
            watcher.screenshot(path=str(ARTIFACTS / "live_other_browser.png"), full_page=True,
                               timeout=120_000)
        finally:
            stranger.close()

        page.reload(wait_until="domcontentloaded")  # a refreshed tab re-attaches by the link
        page.wait_for_selector(CHART, timeout=180_000)
        seen = _wait_points(page, seen + 1)
        assert "run=" in page.url and "running" in _text(page)

        context.set_offline(True)  # the websocket drops ...
        page.wait_for_timeout(4000)
        context.set_offline(False)  # ... and reconnects: the run went on meanwhile
        seen = _wait_points(page, seen + 1)

        other = context.new_page()  # a second tab of the same browser with the link: the owner's again
        other.goto(link, wait_until="domcontentloaded")
        other.wait_for_selector(CHART, timeout=180_000)
        _wait_points(other, seen)
        other_main = other.get_by_test_id("stMainBlockContainer")
        other_main.get_by_role("button", name="Stop").wait_for(timeout=60_000)
        assert other_main.get_by_role("button", name="Start a copy of this run").count() == 0
        other.close()

        # the Stop button is briefly disabled while a rerun redraws it: wait for it rather than read it
        # once (a fast machine may still finish the run first). After the reload and the reconnect the
        # owner must still be offered Stop while the run trains.
        stop = main.get_by_role("button", name="Stop")
        deadline, clicked = time.monotonic() + 60, False
        while time.monotonic() < deadline and not clicked:
            if stop.is_enabled():
                stop.click(no_wait_after=True)
                clicked = True
            else:
                page.wait_for_timeout(500)
        ended = re.compile(r"Run (stopped|finished)\.")
        assert clicked or page.get_by_text(ended).count(), "the owner lost Stop while the run trained"
        page.get_by_text(ended).wait_for(timeout=180_000)  # "finished" if the run ended as Stop came
        stopped = _wait_points(page, seen)
        page.reload(wait_until="domcontentloaded")
        page.get_by_text(ended).wait_for(timeout=180_000)
        assert _wait_points(page, stopped) == stopped  # Stop kept every point; nothing trains after it
        # the summary and the CSV are drawn after the status line: wait for them, then count
        page.get_by_test_id("stDownloadButton").first.wait_for(timeout=120_000)
        page.get_by_test_id("stDataFrame").first.wait_for(timeout=120_000)
        assert page.get_by_test_id("stDownloadButton").count() == 1
        page.screenshot(path=str(ARTIFACTS / "live_after_reload.png"), full_page=True, timeout=120_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not errors, errors
    finally:
        context.close()
