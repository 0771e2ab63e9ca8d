"""The 2-D pages in a real browser: every preset's link reproduces the view, and a click on the
landscape moves the start point.

Links: press each preset, take the URL the page leaves, open it in a fresh browser context; the URL
the new page writes back and what every widget shows must be the same, and every trace of every
chart must hold the same x and y (decoded from Plotly's binary encoding, compared to 1e-9 relative).
Clicks: click the landscape at a known pixel, read which data coordinates that pixel is (Plotly's own
axis mapping) and check that the start widgets and the URL now hold that point (to the click grid's
spacing and the widget's step).
"""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.support import chart_data, chart_differences, open_page, wait_run, widget_values

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
VIEWPORT = {"width": 1400, "height": 1000}
PAGES_2D = ["implicit_trust_regions", "newton_vs_trust_region", "second_order_2d"]
# page -> (chart key, x widget key, y widget key, largest allowed distance from the clicked point)
CLICK = {
    "implicit_trust_regions": ("itr_geometry", "itr_x0", "itr_y0", 0.25),    # slider step 0.1
    "newton_vs_trust_region": ("nvt_local_chart", "nvt_w0", "nvt_w1", 0.25),
    "second_order_2d": ("so_paths_chart", "so_w0", "so_w1", 0.25),
}


def _preset_names(page_name: str) -> list[str]:
    """The keys of the page's ``PRESETS`` dict, read from its source (no Streamlit run needed)."""
    tree = ast.parse((ROOT / "pages" / f"{page_name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PRESETS" for t in node.targets):
            return [k.value for k in node.value.keys]
    raise AssertionError(f"pages/{page_name}.py has no PRESETS dict")


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query, keep_blank_values=True)


@pytest.mark.parametrize("name", PAGES_2D)
def test_every_preset_link_reproduces_in_a_fresh_browser(server: str, browser, name: str) -> None:
    presets = _preset_names(name)
    assert len(presets) >= 4, presets
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        open_page(page, f"{server}/{name}")
        main = page.get_by_test_id("stMainBlockContainer")
        for preset in presets:
            main.get_by_role("button", name=preset, exact=True).click()
            wait_run(page)
            url, charts, widgets = page.url, chart_data(page), widget_values(page)
            assert charts and all(charts), f"{name} / {preset}: no chart data"
            assert any(x is not None and x.size for chart in charts for _, x, _ in chart), "empty arrays"
            fresh_context = browser.new_context(viewport=VIEWPORT)
            fresh = fresh_context.new_page()
            try:
                open_page(fresh, url)
                assert _query(fresh.url) == _query(url), (preset, url, fresh.url)
                fresh_widgets = widget_values(fresh)
                assert len(widgets) >= 8, widgets
                changed = {k: (v, fresh_widgets.get(k)) for k, v in widgets.items()
                           if fresh_widgets.get(k) != v}
                assert not changed, f"{name} / {preset}: widgets differ: {changed}"
                differences = chart_differences(charts, chart_data(fresh))
                assert not differences, f"{name} / {preset}: charts differ: {differences[:6]}"
            finally:
                fresh_context.close()
    finally:
        context.close()


_TARGET = """([key, fx, fy]) => {
    const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    return [box.left + xa._offset + fx * xa._length, box.top + ya._offset + (1 - fy) * ya._length,
            xa.p2l(fx * xa._length), ya.p2l((1 - fy) * ya._length)];
}"""


def _widget_value(page, key: str) -> float:
    """The number a start widget shows: a number input's text or a slider thumb's aria-valuenow."""
    box = page.locator(f".st-key-{key}")
    if box.locator("input").count():
        return float(box.locator("input").first.input_value())
    return float(box.locator('[role="slider"]').first.get_attribute("aria-valuenow"))


@pytest.mark.parametrize("name", PAGES_2D)
def test_clicking_the_landscape_moves_the_start_point(server: str, browser, name: str) -> None:
    chart_key, x_key, y_key, tol = CLICK[name]
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        open_page(page, f"{server}/{name}")
        before = (_widget_value(page, x_key), _widget_value(page, y_key))
        chart = page.locator(f".st-key-{chart_key} .js-plotly-plot")
        chart.scroll_into_view_if_needed()
        # A point in the lower right of the plot area, away from the default start.
        px, py, x, y = page.evaluate(_TARGET, [chart_key, 0.8, 0.22])
        assert abs(x - before[0]) + abs(y - before[1]) > 4 * tol, (before, x, y)
        page.mouse.move(px, py)
        page.wait_for_timeout(300)
        page.mouse.click(px, py)
        wait_run(page)
        page.screenshot(path=str(ARTIFACTS / f"{name}_click.png"))
        shown = (_widget_value(page, x_key), _widget_value(page, y_key))
        query = _query(page.url)
        in_url = (float(query[x_key][0]), float(query[y_key][0]))
        for got in (shown, in_url):
            assert abs(got[0] - x) <= tol and abs(got[1] - y) <= tol, \
                f"{name}: clicked ({x:.3f}, {y:.3f}), start is {got} (was {before})"
        assert shown == pytest.approx(in_url, abs=1e-9), (shown, in_url)
    finally:
        context.close()


_FONT = """() => parseFloat(getComputedStyle(
    document.querySelector('[data-testid="stMainBlockContainer"] [data-testid="stMarkdownContainer"] p'))
    .fontSize)"""


def test_presentation_link_enlarges_text_and_collapses_controls(server: str, browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        open_page(page, f"{server}/second_order_2d")
        normal = page.evaluate(_FONT)
        open_page(page, f"{server}/second_order_2d?present=true")
        page.screenshot(path=str(ARTIFACTS / "second_order_2d_presentation.png"))
        assert page.evaluate(_FONT) >= 1.3 * normal
        expander = page.locator('[data-testid="stExpander"]').filter(has_text="Controls")
        assert expander.count() == 1
        assert not page.get_by_label("Start w₀").is_visible(), "the controls are not collapsed"
        expander.locator("summary").click()
        assert page.get_by_label("Start w₀").is_visible()
    finally:
        context.close()
