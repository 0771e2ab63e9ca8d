"""Shared real-browser fixtures: one ``streamlit run app.py`` server and one headless chromium per
test session (a module may still define its own). Skips, loudly, only when no chromium is found."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.browser.support import CHROMIUM_ARGS, chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium()
    if path is None:
        banner = "!" * 78
        message = (f"\n{banner}\n!! BROWSER TESTS SKIPPED: no chromium found "
                   f"(install Debian's 'chromium' or set ETR_CHROMIUM)\n{banner}")
        print(message, file=sys.stderr)
        pytest.skip("no chromium binary available")
    pytest.importorskip("playwright.sync_api")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(log_name: str, env: dict[str, str]) -> Iterator[str]:
    """``streamlit run app.py`` on a free port with ``env``, output in ``artifacts/browser/log_name``;
    yields the base URL once the server answers its health check, and stops it afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(ARTIFACTS / log_name, "w")  # closed in teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
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
        pytest.fail(f"streamlit server did not become healthy within 120 s; see artifacts/browser/{log_name}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def server(chromium_path: str) -> Iterator[str]:
    with streamlit_server("streamlit.log", dict(os.environ, ETR_LIVE_MAX_STEPS_CAP="400")) as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
