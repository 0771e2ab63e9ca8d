"""The "Newton vs trust region" page (appendix B, Figs. 7 and 8) through Streamlit's AppTest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.support import decode_array, open_page

PAGE = "pages/newton_vs_trust_region.py"


def _page(query: dict[str, str] | None = None) -> AppTest:
    return open_page(PAGE, query)


def _figure(at: AppTest, index: int) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _names(fig: dict) -> list[str]:
    return [trace.get("name") for trace in fig["data"]]


def _trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


_array = decode_array


def _click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def page() -> AppTest:
    return _page()


def test_default_figure_shows_fig7_left_with_exact_geometry(page: AppTest) -> None:
    fig = _figure(page, 0)
    names = _names(fig)
    for expected in (
        "level sets of f",
        "model of Newton (B = H)",
        "trust region (sphere)",
        "Newton step",
        "TR step",
        "current point w",
        "saddle of f",
        "minimum of f",
    ):
        assert expected in names, names
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"
    w = np.array([0.1, 0.4])
    region = _trace(fig, "trust region (sphere)")
    x, y = _array(region["x"]), _array(region["y"])
    assert len(x) == 181
    assert np.allclose(np.hypot(x - w[0], y - w[1]), 0.5, rtol=1e-12)
    # The Newton arrow ends at the model's critical point, closed form (0, 2 w1^3 / (3 w1^2 - 1)).
    newton = _trace(fig, "Newton step")
    end = np.array([_array(newton["x"])[-1], _array(newton["y"])[-1]])
    assert np.allclose(end, [0.0, 2 * 0.4**3 / (3 * 0.4**2 - 1)], atol=1e-12)
    tr = _trace(fig, "TR step")
    tr_end = np.array([_array(tr["x"])[-1], _array(tr["y"])[-1]])
    assert np.linalg.norm(tr_end - w) == pytest.approx(0.5, rel=1e-8)
    text = " ".join(m.value for m in page.markdown)
    assert "Newton step: ascent" in text and "saddle" in text
    latex = " ".join(el.value for el in page.get("latex"))
    assert "0.1" in latex and "-0.336" in latex  # g = (w0, w1^3 - w1) = (0.1, -0.336)


def test_toggles_change_traces() -> None:
    at = _page()
    at.toggle(key="nvt_show_tr").set_value(False).run()
    names = _names(_figure(at, 0))
    assert "TR step" not in names and "trust region (sphere)" not in names and "Newton step" in names
    at.toggle(key="nvt_show_gn").set_value(True).run()
    at.toggle(key="nvt_show_sfn").set_value(True).run()
    names = _names(_figure(at, 0))
    assert {"GN step", "SFN step", "model of GN (B = JᵀJ)", "model of SFN (B = |H|)"} <= set(names)
    at.toggle(key="nvt_show_model").set_value(False).run()
    assert not any(n.startswith("model of") for n in _names(_figure(at, 0)))
    at.toggle(key="nvt_regions").set_value(False).run()
    assert not any("trust regions" in n for n in _names(_figure(at, 1)))
    assert not at.exception


def test_ellipsoidal_norm_draws_the_rms_ellipse() -> None:
    at = _page()
    at.radio(key="nvt_norm").set_value("ellipsoidal: RMSProp diagonal at w").run()
    fig = _figure(at, 0)
    region = _trace(fig, "trust region (ellipse)")
    w = np.array([0.1, 0.4])
    g = np.array([w[0], w[1] ** 3 - w[1]])
    m = np.sqrt(0.2 * g**2 + 1e-10)  # RMSProp ellipsoid after one gradient, beta = 0.8
    dx, dy = _array(region["x"]) - w[0], _array(region["y"]) - w[1]
    assert np.allclose(np.sqrt(m[0] * dx**2 + m[1] * dy**2), 0.5, rtol=1e-10)
    at.radio(key="nvt_norm").set_value("ellipsoidal: custom diagonal").run()
    at.select_slider(key="nvt_ratio").set_value(4.0).run()
    region = _trace(_figure(at, 0), "trust region (ellipse)")
    dx, dy = _array(region["x"]) - w[0], _array(region["y"]) - w[1]
    assert np.allclose(np.sqrt(dx**2 + 4.0 * dy**2), 0.5, rtol=1e-10)


def test_presets_set_values() -> None:
    at = _page()
    _click(at, "Fig. 7 right")
    assert at.number_input(key="nvt_w0").value == 1.0 and at.number_input(key="nvt_w1").value == 0.2
    assert "Newton step: saddle-attracted" in " ".join(m.value for m in at.markdown)
    _click(at, "Fig. 8")
    assert at.select_slider(key="nvt_damping").value == 0.1
    assert at.toggle(key="nvt_show_gn").value and at.toggle(key="nvt_show_sfn").value
    names = _names(_figure(at, 0))
    assert "GN (λ = 0.1) step" in names and "SFN (λ = 0.1) step" in names
    _click(at, "Fig. 7 left")
    assert at.number_input(key="nvt_w1").value == 0.4


def test_saddle_start_explains_itself() -> None:
    at = _page()
    _click(at, "Start on the saddle")
    info = " ".join(i.value for i in at.info)
    assert "gradient is exactly zero" in info and "saddle" in info and "hard case" in info
    fig = _figure(at, 0)
    tr = _trace(fig, "TR step")
    assert abs(_array(tr["y"])[-1]) == pytest.approx(0.5)  # along the negative-curvature eigenvector
    # Every run stops at once; the paths are single points.
    paths = _figure(at, 1)
    for label in ("Newton", "TR_uni", "TR_rms", "GD"):
        assert len(_array(_trace(paths, label)["x"])) == 1


def test_run_paths_match_the_table() -> None:
    at = _page()
    table = at.dataframe[0].value
    paths = _figure(at, 1)
    for _, row in table.iterrows():
        assert len(_array(_trace(paths, row["method"])["x"])) == row["iterations"] + 1
    assert "TR_uni trust regions" in _names(paths)
    history = _figure(at, 2)
    assert {"TR_uni radius", "TR_rms rho", "TR_rms CG"} <= set(_names(history))


def test_query_params_are_clamped_and_functions_switch_without_errors() -> None:
    at = _page({"nvt_w0": "1e9", "nvt_radius": "-3", "nvt_function": "bogus", "nvt_iters": "nan"})
    assert at.number_input(key="nvt_w0").value == 5.0
    assert at.select_slider(key="nvt_radius").value == 0.05
    assert at.selectbox(key="nvt_function").value == "paper"
    for name in ("rosenbrock", "himmelblau", "monkey_saddle"):
        at.selectbox(key="nvt_function").set_value(name).run()
        assert not at.exception, (name, at.exception)
        assert len(at.get("plotly_chart")) == 3
    at.number_input(key="nvt_w0").set_value(-5.0).run()
    at.number_input(key="nvt_w1").set_value(5.0).run()
    assert not at.exception
    assert any("diverged" in m.value for m in at.markdown)


@pytest.mark.parametrize(
    "query",
    [
        {"nvt_w0": "0", "nvt_w1": "0", "nvt_norm": "ellipsoidal: RMSProp diagonal at w"},
        {"nvt_function": "monkey_saddle", "nvt_w0": "0", "nvt_w1": "0", "nvt_show_gn": "true"},
        {"nvt_function": "himmelblau", "nvt_w0": "-0.270844590667", "nvt_w1": "-0.92303855648"},
        {"nvt_function": "paper", "nvt_w0": "0.5", "nvt_w1": "0.5773502691896258", "nvt_show_sfn": "1"},
    ],
    ids=["saddle-rms-ellipse", "monkey-origin", "himmelblau-maximum", "singular-hessian"],
)
def test_degenerate_points_render_with_explanations(query: dict[str, str]) -> None:
    at = _page(query)
    assert len(at.get("plotly_chart")) == 3
    text = " ".join(m.value for m in at.markdown) + " ".join(i.value for i in at.info)
    if query["nvt_w0"] == "0":
        assert "gradient is exactly zero" in text
    if query.get("nvt_show_sfn"):
        assert "Newton step: singular" in text
