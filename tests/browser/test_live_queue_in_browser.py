"""The live page's poll timers in a real browser: a queued tab polls rarely and says so, and once its
run gets the training slot it switches by itself to the (faster) training interval.

One training slot (``ETR_LIVE_MAX_RUNS=1``), queued tabs poll every 10 s, training tabs every 1 s.
Browser A starts a long run; browser B starts one too and waits in the queue: its page names the
10 s interval, and in 6 s its status line changes at most once (one poll at most). A presses Stop;
without any click in B its run starts and B's status line then changes at least three times within
6 s, which a tab still on the 10 s timer cannot do: the page reran itself to set the training timer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.browser.conftest import streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

CHART = '[data-testid="stPlotlyChart"] .main-svg'
LONG_RUN = "lt_methods=Adam&lt_budget=20000&lt_max_steps=20000&lt_max_seconds=300&lt_eval_every=10"
QUEUED_S = 10


@pytest.fixture(scope="module")
def server(chromium_path: str) -> Iterator[str]:
    env = dict(os.environ, ETR_LIVE_MAX_RUNS="1", ETR_LIVE_POLL_QUEUED_SECONDS=str(QUEUED_S),
               ETR_LIVE_POLL_SECONDS="1", ETR_LIVE_POLL_MAX_SECONDS="1", ETR_SESSION_CPU_SECONDS="100000")
    with streamlit_server("streamlit_live_queue.log", env) as url:
        yield url


def _status(page) -> str:
    """The text of the run's progress bar (status, seconds trained, message); '' when there is none."""
    bar = page.get_by_test_id("stProgress")
    return bar.first.inner_text() if bar.count() else ""


def _distinct_statuses(page, seconds: float) -> int:
    """How many different progress texts the page shows within ``seconds`` (sampled every 0.2 s)."""
    seen, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = _status(page)
        if text:
            seen.add(text)
        page.wait_for_timeout(200)
    return len(seen)


def _start(page, url: str) -> None:
    page.goto(f"{url}/live_training?{LONG_RUN}", wait_until="domcontentloaded")
    start = page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start")
    start.wait_for(timeout=180_000)
    deadline = time.monotonic() + 120
    while not start.is_enabled() and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    start.click(no_wait_after=True)
    page.wait_for_function("() => location.search.includes('run=')", timeout=60_000)


def test_a_queued_tab_polls_rarely_then_switches_to_the_training_timer(server: str, browser) -> None:
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    second = browser.new_context(viewport={"width": 1400, "height": 1000})  # another browser
    errors: list[str] = []
    try:
        owner, waiting = first.new_page(), second.new_page()
        for page in (owner, waiting):
            page.on("pageerror", lambda e: errors.append(str(e)))
        _start(owner, server)
        owner.wait_for_selector(CHART, timeout=180_000)
        _start(waiting, server)
        waiting.get_by_text(f"this page checks every {QUEUED_S} s").wait_for(timeout=120_000)
        # the note can be drawn a moment before the progress bar of the same rerun
        waiting.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stProgress\"]')]"
            ".some(e => e.innerText.includes('Queued:'))", timeout=30_000)
        assert "Queued:" in _status(waiting)
        assert _distinct_statuses(waiting, 6) <= 2  # the queued text, and at most one poll's change

        stop = owner.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop")
        deadline = time.monotonic() + 60
        while not stop.is_enabled() and time.monotonic() < deadline:
            owner.wait_for_timeout(300)
        stop.click(no_wait_after=True)

        waiting.wait_for_selector(CHART, timeout=3 * QUEUED_S * 1000 + 60_000)  # no click in this tab
        waiting.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stProgress\"]')]"
            ".some(e => e.innerText.startsWith('running'))", timeout=120_000)
        assert _distinct_statuses(waiting, 6) >= 3, "the tab kept polling at the queued interval"
        assert waiting.locator('[data-testid="stException"]').count() == 0
        assert not errors, errors
    finally:
        first.close()
        second.close()
