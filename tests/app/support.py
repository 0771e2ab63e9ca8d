"""AppTest helpers shared by the page tests: open a page inside the app frame, read Plotly figures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def open_page(page: str, query: dict[str, str] | None = None, timeout: float = 120) -> AppTest:
    """Run ``app.py`` with ``query`` as the URL's query string, switch to ``page``, assert no exception."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def plotly_figures(at: AppTest) -> list[dict]:
    """Every Plotly chart on the page as its figure JSON."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def decode_array(value) -> np.ndarray:
    """A trace coordinate array as float numpy: plain lists (None -> NaN) or Plotly's binary ``bdata``."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(float)
    return np.array([np.nan if v is None else v for v in value], dtype=float)
