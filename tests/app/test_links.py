"""Shared links: every URL value, however hostile, opens the page; the URL the page leaves reproduces it.

For each 2-D page (and the home page with the shared sidebar, and the live page before Start) every
key the page writes to the URL is fed NaN, inf, -inf, a huge number, a negative number, an empty
value, text and a repeated key. The page must run without an exception and write back to the URL
exactly the value each widget uses. For every preset, the URL left after pressing it, opened in a
fresh session, must give the same widget values and the same charts.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.support import APP
from ui.url_values import format_value

pytestmark = pytest.mark.slow

PAGES = {
    "home": "pages/home.py",
    "implicit_trust_regions": "pages/implicit_trust_regions.py",
    "newton_vs_trust_region": "pages/newton_vs_trust_region.py",
    "second_order_2d": "pages/second_order_2d.py",
    "live_training": "pages/live_training.py",
}
HOSTILE = {"nan": "nan", "inf": "inf", "-inf": "-inf", "huge": "9" * 400, "negative": "-5", "empty": "",
           "text": "abc", "repeated": ["3", "abc"]}
PRESET_PREFIX = {"implicit_trust_regions": "itr_preset", "newton_vs_trust_region": "nvt_preset",
                 "second_order_2d": "so_preset"}


def _open(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _url(at: AppTest) -> dict[str, str]:
    out = {}
    for key, value in at.query_params.items():
        out[key] = value[-1] if isinstance(value, list) and len(value) == 1 else value
    return out


def _widget_values(at: AppTest, keys) -> dict:
    return {key: at.session_state[key] for key in keys if key in at.session_state}


def _assert_url_matches_widgets(at: AppTest) -> None:
    url = _url(at)
    assert url, "the page wrote nothing to the URL"
    for key, text in url.items():
        if key in at.session_state:
            assert isinstance(text, str), f"{key}: repeated in the URL after the run: {text!r}"
            assert text == format_value(at.session_state[key]), (key, text, at.session_state[key])


_DEFAULT_KEYS: dict[str, list[str]] = {}


def _keys(name: str) -> list[str]:
    if name not in _DEFAULT_KEYS:
        at = _open(PAGES[name])
        _assert_url_matches_widgets(at)
        _DEFAULT_KEYS[name] = sorted(_url(at))
    return _DEFAULT_KEYS[name]


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("name", list(PAGES))
def test_hostile_values_for_every_key_never_raise(name: str, kind: str) -> None:
    keys = _keys(name)
    assert "seed" in keys
    at = _open(PAGES[name], {key: HOSTILE[kind] for key in keys})
    _assert_url_matches_widgets(at)
    assert set(_url(at)) >= set(keys) - {"itr_check_t", "itr_check_method"}
    assert not at.get("exception")
    assert at.number_input(key="seed").value in (0, 3, 2**31 - 1)
    notes = " ".join(c.value for c in at.get("caption"))
    if kind != "repeated" or name != "home":
        assert "🔗" in notes, f"{name}: no notice about the adjusted link values"


def test_defaults_are_written_and_reproduce() -> None:
    """The URL carries defaults too: a link with kappa = 1 (the slider's first option) keeps it."""
    at = _open(PAGES["implicit_trust_regions"], {"itr_kappa": "1"})
    assert _url(at)["itr_kappa"] == "1"
    assert _url(at)["itr_iters"] == "40"          # the page default is written as well
    assert at.select_slider(key="itr_kappa").value == 1
    at = _open(PAGES["implicit_trust_regions"], {"itr_iters": "500"})
    assert at.slider(key="itr_iters").value == 200 and _url(at)["itr_iters"] == "200"
    assert any("itr_iters=500" in c.value and "200" in c.value for c in at.caption)
    at = _open(PAGES["implicit_trust_regions"], {"itr_kappa": "Infinity"})
    assert at.select_slider(key="itr_kappa").value == 10000


@pytest.mark.parametrize("name", list(PRESET_PREFIX))
def test_every_preset_link_reproduces_the_view(name: str) -> None:
    buttons = [b.key for b in _open(PAGES[name]).button if (b.key or "").startswith(PRESET_PREFIX[name])]
    assert len(buttons) >= 4
    for key in buttons:
        _check_preset(name, key)


def _check_preset(name: str, key: str) -> None:
    at = _open(PAGES[name])
    at.button(key=key).click().run()
    assert not at.exception
    url = _url(at)
    _assert_url_matches_widgets(at)
    fresh = _open(PAGES[name], url)
    assert _url(fresh) == url
    assert _widget_values(fresh, url) == _widget_values(at, url)
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    again = [json.loads(c.proto.spec) for c in fresh.get("plotly_chart")]
    assert figures == again
