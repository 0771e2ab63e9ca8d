"""Presentation mode: the sidebar toggle is bound to the URL, folds every 2-D page's controls into a
collapsed "Controls" expander and makes chart and text fonts larger."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

import ui.presentation as presentation
from tests.app.support import open_page

pytestmark = pytest.mark.slow

# page -> (main chart key, a start widget key inside the controls)
PAGES = {
    "pages/implicit_trust_regions.py": ("itr_geometry", "itr_x0"),
    "pages/newton_vs_trust_region.py": ("nvt_local_chart", "nvt_w0"),
    "pages/second_order_2d.py": ("so_paths_chart", "so_w0"),
}


def _chart(at, key: str) -> dict:
    chart = next(c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id)
    return json.loads(chart.proto.spec)


def _expander_keys(at) -> set[str]:
    keys: set[str] = set()
    for expander in at.expander:
        if expander.label == "Controls":
            for kind in ("slider", "number_input", "select_slider", "radio", "toggle", "checkbox"):
                keys |= {w.key for w in getattr(expander, kind)}
    return keys


@pytest.mark.parametrize("page", list(PAGES))
def test_presentation_link_folds_controls_and_enlarges_chart_fonts(page: str) -> None:
    chart_key, start_key = PAGES[page]
    normal = open_page(page)
    assert normal.session_state["present"] is False
    assert normal.query_params["present"] in ("false", ["false"])
    assert not [e for e in normal.expander if e.label == "Controls"]
    normal_font = _chart(normal, chart_key)["layout"]["font"]["size"]

    shown = open_page(page, {"present": "true"})
    assert shown.session_state["present"] is True
    assert shown.query_params["present"] in ("true", ["true"])
    assert start_key in _expander_keys(shown), "the start widget is not inside the Controls expander"
    layout = _chart(shown, chart_key)["layout"]
    assert layout["font"]["size"] == pytest.approx(presentation.FONT_SCALE * normal_font)
    assert layout["xaxis"]["tickfont"]["size"] >= layout["font"]["size"]
    assert any("font-size" in m.value for m in shown.markdown), "no larger text style injected"


def test_toggle_switches_presentation_on_in_a_session() -> None:
    at = open_page("pages/second_order_2d.py")
    at.toggle(key="present").set_value(True).run()
    assert not at.exception, at.exception
    assert at.query_params["present"] in ("true", ["true"])
    assert "so_w0" in _expander_keys(at)


def test_presentable_scales_every_font(monkeypatch: pytest.MonkeyPatch) -> None:
    fig = go.Figure(go.Contour(z=[[0, 1], [1, 0]]), layout={"font": {"size": 15}})
    fig.add_annotation(text="a", font={"size": 10}, x=0, y=0)
    fig.update_layout(legend_font_size=11)
    monkeypatch.setattr(presentation, "presenting", lambda: False)
    assert presentation.presentable(fig).layout.font.size == 15  # off: unchanged
    monkeypatch.setattr(presentation, "presenting", lambda: True)
    presentation.presentable(fig, scale=2.0)
    assert fig.layout.font.size == 30
    assert fig.layout.legend.font.size == 22
    assert fig.layout.annotations[0].font.size == 20
    assert fig.layout.xaxis.tickfont.size == 30 and fig.layout.yaxis.title.font.size == 30
    assert fig.layout.title.font.size == 36  # unset title: 1.2 x the base font
    assert fig.data[0].colorbar.tickfont.size == 30
