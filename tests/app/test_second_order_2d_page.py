"""The "Second-order TR in 2-D" page (section 4, Algorithm 1) through Streamlit's AppTest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.support import decode_array, open_page

PAGE = "pages/second_order_2d.py"


def _page(query: dict[str, str] | None = None) -> AppTest:
    return open_page(PAGE, query)


def _figure(at: AppTest, index: int) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _names(fig: dict) -> list[str]:
    return [trace.get("name") for trace in fig["data"]]


def _trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


_array = decode_array


def _text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def _click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def page() -> AppTest:
    return _page()


def test_default_page_compares_sphere_and_ellipses(page: AppTest) -> None:
    fig = _figure(page, 0)
    names = _names(fig)
    for label in ("TR_uni", "TR_ada", "TR_rms"):
        assert label in names and f"{label} trust regions" in names
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"
    table = page.dataframe[0].value.set_index("method")
    for label in ("TR_uni", "TR_ada", "TR_rms"):
        assert len(_array(_trace(fig, label)["x"])) == table.loc[label, "iterations"] + 1
    # Axis-aligned kappa = 100 with one CG step: both ellipsoids reach the tolerance within the default
    # 200 iterations, the sphere does not, and the generated text says so with the numbers.
    reach = table["to f − f* ≤ ftol"]
    assert reach["TR_rms"] <= 20 and reach["TR_ada"] <= 20
    assert np.isnan(reach["TR_uni"]) or reach["TR_uni"] is None
    text = _text(page)
    assert "converged where the sphere did not" in text and f"TR_rms {int(reach['TR_rms'])}" in text
    history = _names(_figure(page, 1))
    assert {"TR_uni radius", "TR_ada rho", "TR_rms CG"} <= set(history)


def test_regions_are_exact_m_norm_balls() -> None:
    at = _page({"so_iters": "50"})
    fig = _figure(at, 0)
    x, y = _array(_trace(fig, "TR_uni trust regions")["x"]), _array(_trace(fig, "TR_uni trust regions")["y"])
    first = slice(0, 65)  # 64 points + closing point, then a NaN gap
    assert np.isnan(x[65])
    start = np.array([2.0, 1.0])
    assert np.allclose(np.hypot(x[first] - start[0], y[first] - start[1]), 1.0, rtol=1e-6)  # Delta_0 = 1
    # TR_rms: the first region is ||s||_M <= 1 with m = sqrt(0.2 g^2 + eps), g = Q (w - w*) = (2, 100).
    xr, yr = (
        _array(_trace(fig, "TR_rms trust regions")["x"]),
        _array(_trace(fig, "TR_rms trust regions")["y"]),
    )
    m = np.sqrt(0.2 * np.array([2.0, 100.0]) ** 2 + 1e-10)
    norm = np.sqrt(m[0] * (xr[first] - 2.0) ** 2 + m[1] * (yr[first] - 1.0) ** 2)
    assert np.allclose(norm, 1.0, rtol=1e-5)


def test_toggle_and_widgets_change_the_picture() -> None:
    at = _page({"so_iters": "50"})
    at.toggle(key="so_regions").set_value(False).run()
    assert not any("trust regions" in n for n in _names(_figure(at, 0)))
    at.multiselect(key="so_methods").set_value(["tr_rms"]).run()
    assert [n for n in _names(_figure(at, 0)) if n.startswith("TR") and "region" not in n] == ["TR_rms"]
    at.multiselect(key="so_methods").set_value([]).run()
    assert not at.exception and any("at least one method" in i.value for i in at.info)


def test_presets_set_values_and_text_follows_the_numbers() -> None:
    at = _page()
    _click(at, "Rotated 45°, κ = 100")
    assert at.slider(key="so_theta").value == 45 and at.select_slider(key="so_kappa").value == 100
    assert "45°" in _text(at) and "diagonal" in _text(at)
    _click(at, "Full CG solve")
    assert at.radio(key="so_cg").value == 50 and at.slider(key="so_theta").value == 0
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["TR_uni", "to f − f* ≤ ftol"] <= table.loc["TR_rms", "to f − f* ≤ ftol"]
    assert "sphere needed" in _text(at) or "same number" in _text(at)
    _click(at, "Rosenbrock")
    assert at.radio(key="so_problem").value == "rosenbrock"
    assert at.number_input(key="so_w0").value == -1.2
    assert "Rosenbrock" in _text(at)
    table = at.dataframe[0].value
    assert (table["status"] == "converged").all()


def test_query_params_are_clamped() -> None:
    at = _page(
        {
            "so_kappa": "1e9",
            "so_theta": "400",
            "so_w0": "-99",
            "so_radius": "0",
            "so_iters": "50",
            "so_cg": "7",
            "so_problem": "bogus",
        }
    )
    assert at.select_slider(key="so_kappa").value == 1000
    assert at.slider(key="so_theta").value == 90
    assert at.number_input(key="so_w0").value == -2.5
    assert at.select_slider(key="so_radius").value == 0.001
    assert at.radio(key="so_cg").value == 1
    assert at.radio(key="so_problem").value == "quadratic"
    assert len(at.get("plotly_chart")) == 2


def test_step_button_shows_one_iteration_with_its_cg_iterates() -> None:
    at = _page({"so_iters": "50", "so_step_method": "tr_rms"})
    at.button(key="so_step_next").click().run()
    assert not at.exception
    assert at.toggle(key="so_step_on").value is True and at.slider(key="so_step_t").value == 1
    fig = _figure(at, 0)
    path = _trace(fig, "TR_rms")
    w1 = np.array([_array(path["x"])[1], _array(path["y"])[1]])
    cg = _trace(fig, "CG iterates of step 1")
    start = np.array([_array(cg["x"])[0], _array(cg["y"])[0]])
    assert np.allclose(start, w1, atol=1e-5)          # the CG solve starts at w_1 (float32 path)
    text = _text(at)
    assert "iteration 1" in text and "ρ_t =" in text and ("accepted" in text or "rejected" in text)
    assert {"model at w_1", "region at w_1"} <= set(_names(fig))
    # Play: one frame per iteration (50 iterations or fewer, at most 40 frames), the last one complete
    assert 2 <= len(fig["frames"]) <= 40
    assert fig["layout"]["updatemenus"][0]["buttons"][0]["label"] == "▶ Play"


def test_click_on_the_landscape_moves_the_start() -> None:
    """The chart's on_select callback writes the clicked point, clamped and rounded, into the start."""

    def script() -> None:
        import streamlit as st

        from ui.interaction import start_setter

        st.session_state["chart"] = {"selection": {"points": [{"x": 1.23456, "y": -9.0}]}}
        start_setter("chart", "x", "y", -2.5, 2.5)()
        st.session_state["empty"] = {"selection": {"points": []}}
        start_setter("empty", "ex", "ey", -2.5, 2.5)()
        st.write(st.session_state["x"], st.session_state["y"], "ex" in st.session_state)

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert at.session_state["x"] == 1.235 and at.session_state["y"] == -2.5
    assert "ex" not in at.session_state
    fig = _figure(_page({"so_iters": "50"}), 0)
    grid = _trace(fig, "click to start here")
    assert grid["marker"]["opacity"] == 0 and len(_array(grid["x"])) >= 1000
