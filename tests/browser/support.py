"""Helpers for the real-browser tests: find chromium, wait for a script run, read and decode chart data.

Streamlit shows its running-status widget only some time after a rerun starts, so "no status
widget" does not mean "the rerun finished": a test that reads the chart then can read the previous
run's chart. :func:`wait_run` waits on the app's own script state instead (``data-test-script-state``
on the ``stApp`` element, the attribute Streamlit's own end-to-end tests wait on) and for no element
to be marked stale. Plotly sends coordinate arrays binary-encoded (``{"dtype": "f8", "bdata":
base64}``); :func:`chart_data` decodes them with numpy so tests compare the numbers themselves.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from typing import Any

import numpy as np

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Requests that fail offline by design (font CDN, favicon) or are harmless on deep links.
BENIGN_ERRORS = ("fonts.gstatic.com", "/_stcore/host-config", "/_stcore/health", "favicon",
                 "ERR_NAME_NOT_RESOLVED", "net::ERR_ABORTED")
CHART = '[data-testid="stPlotlyChart"] .main-svg'
_STATE = ("(document.querySelector('[data-testid=\"stApp\"]') || {getAttribute: () => null})"
          ".getAttribute('data-test-script-state')")
_TRACES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => JSON.stringify(
    (gd.data || []).map(t => ({name: t.name === undefined ? null : t.name,
                               x: t.x === undefined ? null : t.x, y: t.y === undefined ? null : t.y}))))"""


_WIDGETS = """() => {
    const out = {};
    document.querySelectorAll('[data-testid="stMainBlockContainer"] [class*="st-key-"]').forEach(el => {
        const key = Array.from(el.classList).find(c => c.startsWith('st-key-')).slice(7);
        const parts = [el.innerText.trim()];
        el.querySelectorAll('input').forEach(i => parts.push(
            i.type === 'checkbox' || i.type === 'radio' ? `${i.value}:${i.checked}` : i.value));
        el.querySelectorAll('[role="slider"]').forEach(s => parts.push(s.getAttribute('aria-valuenow')));
        out[key] = parts.join(' | ');
    });
    return out;
}"""


def widget_values(page) -> dict[str, str]:
    """What every keyed widget of the main area shows: its text (label, selected options, slider
    value), its inputs' values and checked states and its slider thumbs' values, by widget key."""
    return page.evaluate(_WIDGETS)


def chromium() -> str | None:
    """The chromium executable: ``$ETR_CHROMIUM``, else the first of chromium/chromium-browser/chrome."""
    explicit = os.environ.get("ETR_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def wait_run(page, timeout_ms: int = 180_000, start_ms: int = 2_500) -> None:
    """After an interaction: wait up to ``start_ms`` for the rerun to start, then until the script is
    not running and no element is stale (the page shows the finished run)."""
    try:
        page.wait_for_function(f"() => {_STATE} !== 'notRunning'", timeout=start_ms)
    except Exception:  # the rerun may already be over (or none was triggered): the wait below decides
        pass
    page.wait_for_function(
        f"() => {_STATE} === 'notRunning' && !document.querySelector('[data-stale=\"true\"]')",
        timeout=timeout_ms)


def open_page(page, url: str, timeout_ms: int = 180_000) -> None:
    """Go to ``url`` and wait until its first run finished with a chart drawn."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(CHART, timeout=timeout_ms)
    wait_run(page, timeout_ms, start_ms=500)


def decode(value: Any) -> np.ndarray | None:
    """A Plotly coordinate array as float64 numpy: a plain list (None -> NaN), a ``bdata`` dict decoded
    with its numpy ``dtype`` (and ``shape``), or None when the trace has none."""
    if value is None:
        return None
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if value.get("shape"):
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array.astype(float)
    if isinstance(value, dict):  # a typed array serialised by JSON.stringify: {"0": v0, "1": v1, ...}
        return np.array([value[k] for k in sorted(value, key=int)], dtype=float)
    return np.array([np.nan if v is None else v for v in value], dtype=float)


def chart_data(page) -> list[list[tuple[str | None, np.ndarray | None, np.ndarray | None]]]:
    """Every Plotly chart on the page as a list of ``(name, x, y)`` per trace, arrays decoded."""
    return [[(t["name"], decode(t["x"]), decode(t["y"])) for t in json.loads(chart)]
            for chart in page.evaluate(_TRACES)]


def chart_differences(a, b, rtol: float = 1e-9) -> list[str]:
    """Where two :func:`chart_data` results differ (trace count, names, shapes, values to ``rtol``)."""
    if len(a) != len(b):
        return [f"{len(a)} charts vs {len(b)}"]
    out = []
    for i, (ca, cb) in enumerate(zip(a, b)):
        if len(ca) != len(cb):
            out.append(f"chart {i}: {len(ca)} traces vs {len(cb)}")
            continue
        for (na, *xya), (nb, *xyb) in zip(ca, cb):
            if na != nb:
                out.append(f"chart {i}: trace {na!r} vs {nb!r}")
            for axis, u, v in zip("xy", xya, xyb):
                if (u is None) != (v is None) or (u is not None and (
                        u.shape != v.shape or not np.allclose(u, v, rtol=rtol, atol=1e-12, equal_nan=True))):
                    out.append(f"chart {i} trace {na!r} {axis}: {None if u is None else u.shape} vs "
                               f"{None if v is None else v.shape}")
    return out
