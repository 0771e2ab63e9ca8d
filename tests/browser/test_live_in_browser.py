"""The live page in a real browser: a run survives a reload, a dropped connection and a second tab.

Debian's chromium driven by playwright against ``streamlit run app.py`` (the recipe of
``test_pages_in_browser.py``). One run trains in a worker process while the page is reloaded, the
browser goes offline and back (the websocket drops and reconnects), and a second tab opens the
page's link: every time the curves come back with at least the points seen before, and after Stop
the summary and the CSV download are there. Screenshots go to ``artifacts/browser/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CHART = '[data-testid="stPlotlyChart"] .main-svg'
# a run long enough to be interrupted: two methods, a large budget, at most 300 s
LONG_RUN = "lt_methods=TR_rms,Adam&lt_budget=20000&lt_max_steps=20000&lt_max_seconds=300&lt_eval_every=10"


def _chromium() -> str | None:
    explicit = os.environ.get("ETR_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        print("\n!! BROWSER TESTS SKIPPED: no chromium found "
              "(install Debian's 'chromium' or set ETR_CHROMIUM)", file=sys.stderr)
        pytest.skip("no chromium binary available")
    pytest.importorskip("playwright.sync_api")
    return path


@pytest.fixture(scope="module")
def server(chromium_path: str) -> Iterator[str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(ARTIFACTS / "streamlit_live.log", "w")  # closed in teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        log.close()
        pytest.fail("streamlit server did not become healthy within 120 s; "
                    "see artifacts/browser/streamlit_live.log")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _points(page) -> int:
    """x values over the traces of the first Plotly chart (the loss chart)."""
    return page.evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd.data) return 0;
            return gd.data.reduce((n, t) => n + ((t.x && t.x.length) ? t.x.length : 0), 0);
        }"""
    )


def _wait_points(page, at_least: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = _points(page)
        if count >= at_least:
            return count
        page.wait_for_timeout(500)
    pytest.fail(f"the loss chart did not come back with at least {at_least} points (has {_points(page)})")


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
        seen = _wait_points(page, 20)

        page.reload(wait_until="domcontentloaded")  # a refreshed tab re-attaches by the link
        page.wait_for_selector(CHART, timeout=180_000)
        seen = _wait_points(page, seen + 1)
        assert "run=" in page.url and "running" in _text(page)

        context.set_offline(True)  # the websocket drops ...
        page.wait_for_timeout(4000)
        context.set_offline(False)  # ... and reconnects: the run went on meanwhile
        seen = _wait_points(page, seen + 1)

        other = context.new_page()  # a second tab (a student) with the same link
        other.goto(link, wait_until="domcontentloaded")
        other.wait_for_selector(CHART, timeout=180_000)
        _wait_points(other, seen)
        other.close()

        stop = main.get_by_role("button", name="Stop")
        ended = "Run stopped" if stop.is_enabled() else "Run finished"  # a slow machine may finish first
        if ended == "Run stopped":
            stop.click(no_wait_after=True)
        page.get_by_text(ended).wait_for(timeout=120_000)
        stopped = _wait_points(page, seen)
        page.reload(wait_until="domcontentloaded")
        page.get_by_text(ended).wait_for(timeout=180_000)
        assert _wait_points(page, stopped) == stopped  # Stop kept every point; nothing trains after it
        assert page.get_by_test_id("stDownloadButton").count() == 1
        assert page.get_by_test_id("stDataFrame").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "live_after_reload.png"), full_page=True, timeout=120_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not errors, errors
    finally:
        context.close()
