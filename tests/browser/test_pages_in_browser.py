"""Every page in a real browser: Debian's chromium driven by playwright against ``streamlit run``.

For each page: it loads, the main Plotly chart is drawn (SVG present), one interaction round-trips
(a toggle click, or Start/Stop on the live page), no ``stException`` appears and the console shows
no errors except the known offline font/favicon/host-config requests. Screenshots go to
``artifacts/browser/``. The server and browser fixtures are in ``conftest.py``; links and clicks on
the 2-D pages are tested in ``test_2d_pages_in_browser.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser.support import BENIGN_ERRORS, CHART, wait_run
from ui.registry import PAGES

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"


def _wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the script run finished (see :func:`tests.browser.support.wait_run`)."""
    wait_run(page, timeout_ms, start_ms=500)


def _chart_points(page) -> int:
    """Total number of x values over the traces of the first Plotly chart on the page."""
    return page.evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd.data) return 0;
            return gd.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0);
        }"""
    )


def _watch(page) -> list[str]:
    """Collect page errors, console errors and failed HTTP responses (with their URLs)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: errors.append(f"{r.url} {r.failure}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    return errors


def _assert_clean(page, errors: list[str], name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: the page shows an exception"
    real = [e for e in errors if not any(b in e for b in BENIGN_ERRORS)]
    # Chromium's console line for a failed resource has no URL; the HTTP entry above has it.
    if not any(e.startswith("HTTP ") for e in real):
        real = [e for e in real if not e.startswith("Failed to load resource")]
    assert not real, f"{name}: browser console errors: {real}"


GEOMETRY_AND_CURVATURE = [p for p in PAGES if p.url_path not in ("home", "live_training")]


@pytest.mark.parametrize("entry", GEOMETRY_AND_CURVATURE, ids=lambda e: e.url_path)
def test_page_draws_and_toggle_round_trips(server: str, browser, entry) -> None:
    if not (ROOT / entry.path).exists():
        pytest.fail(f"page file {entry.path} is listed in ui/registry.py but missing")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = _watch(page)
    try:
        page.goto(f"{server}/{entry.url_path}", wait_until="domcontentloaded")
        page.wait_for_selector(CHART, timeout=180_000)
        _wait_idle(page)
        # The shared frame (sidebar with the device) must be there even on a deep link to a fresh server.
        framed = page.get_by_text("Device in use").count() >= 1
        assert framed, f"{entry.url_path}: rendered without the app frame"
        toggles = page.locator('[data-testid="stCheckbox"] label')
        assert toggles.count() >= 1, f"{entry.url_path}: no toggle/checkbox to interact with"
        toggles.first.click()
        wait_run(page)
        page.wait_for_selector(CHART, timeout=120_000)
        _assert_clean(page, errors, entry.url_path)
    finally:
        page.close()


def test_home_page_links_every_page(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = _watch(page)
    try:
        page.goto(server, wait_until="domcontentloaded")
        page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
        _wait_idle(page)
        for entry in PAGES:
            if entry.url_path != "home" and (ROOT / entry.path).exists():
                assert page.get_by_text(entry.title).count() >= 1, f"home does not link {entry.title}"
        _assert_clean(page, errors, "home")
    finally:
        page.close()


def test_live_training_start_grows_chart_then_stop(server: str, browser) -> None:
    entry = next(p for p in PAGES if p.url_path == "live_training")
    if not (ROOT / entry.path).exists():
        pytest.fail("pages/live_training.py is missing")
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    errors = _watch(page)
    try:
        page.goto(f"{server}/{entry.url_path}", wait_until="domcontentloaded")
        main = page.get_by_test_id("stMainBlockContainer")
        start = main.get_by_role("button", name="Start")
        start.wait_for(timeout=180_000)
        _wait_idle(page)
        start.click()
        page.wait_for_selector(CHART, timeout=180_000)
        first = _chart_points(page)
        grew = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            if _chart_points(page) > first:
                grew = True
                break
        assert grew, "the live chart did not grow after Start"
        stop = main.get_by_role("button", name="Stop")
        if stop.count() and stop.first.is_enabled():
            stop.first.click()
            page.wait_for_timeout(1500)
        _assert_clean(page, errors, entry.url_path)
    finally:
        page.close()
