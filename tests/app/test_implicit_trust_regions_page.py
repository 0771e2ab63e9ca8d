"""The page "Adaptive methods are trust-region methods" (Fig. 1, Fig. 5, Theorem 1) under AppTest."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.support import decode_array, open_page

PAGE = "pages/implicit_trust_regions.py"
W0 = np.array([-2.5, 1.5])


def _open(query: dict[str, str] | None = None) -> AppTest:
    return open_page(PAGE, query, timeout=90)


@pytest.fixture(scope="module")
def page() -> AppTest:
    return _open()


def _figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _names(at: AppTest) -> list[str]:
    return [t["name"] for t in _figure(at)["data"] if t["name"] != "click to start here"]


_arr = decode_array


def _trace(at: AppTest, name: str) -> tuple[np.ndarray, np.ndarray]:
    trace = next(t for t in _figure(at)["data"] if t["name"] == name)
    return _arr(trace["x"]), _arr(trace["y"])


def _quadratic(kappa: float, theta_deg: float) -> np.ndarray:
    t = math.radians(theta_deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return R @ np.diag([1.0, kappa]) @ R.T


def _gd_closed_form(Q: np.ndarray, eta: float, n: int) -> np.ndarray:
    M = np.eye(2) - eta * Q
    return np.stack([np.linalg.matrix_power(M, t) @ W0 for t in range(n + 1)])


def test_page_loads_with_default_picture(page: AppTest) -> None:
    assert page.title[0].value == "Adaptive methods are trust-region methods"
    assert _names(page) == ["level sets of f", "w*", "GD: trust regions", "GD",
                            "Adagrad (diagonal): trust regions", "Adagrad (diagonal)"]
    assert len(page.get("plotly_chart")) == 2
    assert page.toggle(key="itr_show_tr").label == "Show trust regions"
    assert not page.warning


def test_point_counts_follow_the_iterations() -> None:
    at = _open()
    x, _ = _trace(at, "GD")
    assert len(x) == 41
    at.slider(key="itr_iters").set_value(17).run()
    assert not at.exception
    for name in ("GD", "Adagrad (diagonal)"):
        x, _ = _trace(at, name)
        assert len(x) == 18
    frames = _figure(at)["frames"]
    assert len(frames) == 18


def test_gd_path_and_circles_match_the_closed_form(page: AppTest) -> None:
    """GD at kappa = 20, eta = 0.5/L: w_t = (I - eta Q)^t w0; its trust regions are circles of radius
    eta ||g_t|| around w_t (Theorem 1 with A = I), drawn every k-th step, at most 12 (40 steps: k = 4)."""
    Q = _quadratic(20.0, 0.0)
    eta = 0.5 / 20.0
    w = _gd_closed_form(Q, eta, 40)
    x, y = _trace(page, "GD")
    assert np.allclose(np.stack([x, y], 1), w, rtol=1e-5, atol=1e-6)
    ex, ey = _trace(page, "GD: trust regions")
    pts = np.stack([ex, ey], 1)
    segments = [s[~np.isnan(s[:, 0])] for s in np.split(pts, np.where(np.isnan(ex))[0])]
    segments = [s for s in segments if len(s)]
    drawn = list(range(0, 40, 4))
    assert len(segments) == len(drawn)
    for seg, t in zip(segments, drawn):
        radius = eta * np.linalg.norm(Q @ w[t])
        dist = np.linalg.norm(seg - w[t], axis=1)
        assert np.allclose(dist, radius, rtol=1e-5, atol=1e-6)


def test_adagrad_ellipse_axes_match_the_closed_form(page: AppTest) -> None:
    """First Adagrad trust region: A_0 = diag(|g_0|) (+eps), radius eta ||g_0||_{A^-1}, so the semi-axes
    are eta sqrt(|g_1| + |g_2|) / sqrt(|g_i|) along the coordinate axes."""
    g = _quadratic(20.0, 0.0) @ W0
    eta = 0.5
    r = eta * math.sqrt(np.sum(np.abs(g)))
    axes = r / np.sqrt(np.abs(g))
    ex, ey = _trace(page, "Adagrad (diagonal): trust regions")
    first = np.where(np.isnan(ex))[0][0]
    dx, dy = ex[:first] - W0[0], ey[:first] - W0[1]
    assert np.max(np.abs(dx)) == pytest.approx(axes[0], rel=1e-4)
    assert np.max(np.abs(dy)) == pytest.approx(axes[1], rel=1e-4)


def test_toggles_add_and_remove_traces() -> None:
    at = _open()
    at.toggle(key="itr_show_tr").set_value(False).run()
    assert _names(at) == ["level sets of f", "w*", "GD", "Adagrad (diagonal)"]
    at.checkbox(key="itr_use_rmsprop").set_value(True).run()
    assert "RMSProp" in _names(at)
    at.checkbox(key="itr_use_gd").set_value(False).run()
    names = _names(at)
    assert "GD" not in names and "RMSProp" in names
    at.toggle(key="itr_show_tr").set_value(True).run()
    assert "RMSProp: trust regions" in _names(at)
    assert not at.exception


@pytest.mark.parametrize("preset,expected", [
    ("Fig. 1 left", {"itr_kappa": 1, "itr_theta": 0, "itr_use_adagrad_full": False}),
    ("Fig. 1 right", {"itr_kappa": 20, "itr_theta": 30, "itr_use_adagrad_full": True}),
    ("Fig. 5", {"itr_kappa": 100, "itr_theta": 0, "itr_use_tr_sphere": True, "itr_use_tr_adagrad": True,
                "itr_x0": 2.0, "itr_y0": 1.0, "itr_iters": 60}),
])
def test_presets_set_the_widgets(preset: str, expected: dict) -> None:
    at = _open()
    at.button(key=f"itr_preset_{preset}").click().run()
    assert not at.exception
    for key, value in expected.items():
        assert at.session_state[key] == value, key
    if preset == "Fig. 5":
        assert at.select_slider(key="itr_kappa").value == 100
        names = _names(at)
        assert "1st-order TR (sphere)" in names and "1st-order TR (Adagrad ellipse)" in names
        x, _ = _trace(at, "1st-order TR (sphere)")
        assert len(x) == 61


def test_query_params_are_clamped_not_crashing() -> None:
    at = _open({"itr_kappa": "1e9", "itr_iters": "1e9", "itr_theta": "-50", "itr_x0": "abc",
                "itr_lr_gd": "99"})
    assert at.select_slider(key="itr_kappa").value == 10000
    assert at.slider(key="itr_iters").value == 200
    assert at.slider(key="itr_theta").value == 0
    assert at.slider(key="itr_x0").value == -2.5
    assert at.select_slider(key="itr_lr_gd").value == 3.0
    x, _ = _trace(at, "Adagrad (diagonal)")
    assert len(x) == 201


def test_divergence_message_is_shown() -> None:
    at = _open()
    at.select_slider(key="itr_lr_gd").set_value(2.5).run()
    assert not at.exception
    messages = [w.value for w in at.warning]
    assert any(m.startswith("GD diverged at iteration") and "step size above 2/L = 0.1" in m
               for m in messages)
    at.select_slider(key="itr_lr_gd").set_value(2.05).run()
    assert any("above 2/L" in i.value for i in at.info)


def test_theorem1_panel_numbers(page: AppTest) -> None:
    """At t = 0 the GD step is -eta Q w0; the panel shows it next to the closed-form minimiser."""
    eta = 0.5 / 20.0
    s = -eta * _quadratic(20.0, 0.0) @ W0
    latex = [el.value for el in page.latex]
    first = latex[0]
    assert f"{s[0]:.6g}" in first and f"{s[1]:.6g}" in first
    assert first.count(f"{s[1]:.6g}") == 2          # the method's step and the argmin agree
    r = eta * np.linalg.norm(_quadratic(20.0, 0.0) @ W0)
    assert f"{r:.6g}" in latex[1]
    table = next(m.value for m in page.markdown if "closed form" in m.value)
    assert f"{s[0]:.10g}" in table
    assert any("Theorem 1 holds" in c.value for c in page.caption)


def test_theorem1_panel_follows_method_and_iteration() -> None:
    at = _open()
    at.selectbox(key="itr_check_method").set_value("adagrad").run()
    at.slider(key="itr_check_t").set_value(7).run()
    assert not at.exception
    assert any("Step 7 of Adagrad (diagonal)" in c.value and "Theorem 1 holds" in c.value for c in at.caption)
    # shrinking the run below the chosen iteration clamps it instead of failing
    at.slider(key="itr_iters").set_value(3).run()
    assert not at.exception
    assert at.slider(key="itr_check_t").value <= 2


def test_suboptimality_band_caption_and_traces(page: AppTest) -> None:
    spec = _figure(page, 1)
    names = [t["name"] for t in spec["data"]]
    assert "GD" in names and "GD: 90% band" in names and "Adagrad (diagonal)" in names
    assert any("30 starts" in c.value for c in page.caption)


def test_figure_payload_is_modest(page: AppTest) -> None:
    sizes = [chart.proto.ByteSize() for chart in page.get("plotly_chart")]
    assert sizes[0] < 600_000 and sizes[1] < 100_000


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"itr_kappa": "20", "itr_theta": "0"}, "axis-aligned"),
        ({"itr_kappa": "20", "itr_theta": "30"}, "tilted 30°"),
        ({"itr_kappa": "20", "itr_theta": "60"}, "tilted 30°"),
        ({"itr_kappa": "20", "itr_theta": "90"}, "axis-aligned"),  # a quarter turn is axis-aligned again
        ({"itr_kappa": "1", "itr_theta": "45"}, "κ = 1"),
    ],
)
def test_why_text_follows_the_geometry(query: dict[str, str], expected: str) -> None:
    at = _open(query)
    why = next(m.value for m in at.markdown if m.value.startswith("**Why.**"))
    assert expected in why


def _step(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label.startswith("Step")).click().run()
    assert not at.exception, at.exception
    return at


def test_step_button_draws_the_next_iterations_region_and_step() -> None:
    at = _step(_open())
    assert at.session_state["itr_check_t"] == 1 and at.session_state["itr_step_on"] is True
    assert at.query_params["itr_check_t"] in ("1", ["1"])
    assert at.query_params["itr_step_on"] in ("true", ["true"])
    # GD on the default problem (kappa = 20, theta = 0, eta = 0.5 / L): closed-form iterates.
    Q = _quadratic(20.0, 0.0)
    eta = 0.5 / 20.0
    w = _gd_closed_form(Q, eta, 2)
    x, y = _trace(at, "GD: region at t = 1")
    radius = eta * np.linalg.norm(Q @ w[1])  # Theorem 1: r_t = eta ||g_t|| for GD (A = I)
    np.testing.assert_allclose(np.hypot(x - w[1, 0], y - w[1, 1]), radius, rtol=1e-6)
    sx, sy = _trace(at, "GD: step 1")
    np.testing.assert_allclose([sx[0], sy[0], sx[-1], sy[-1]], [*w[1], *w[2]], rtol=1e-6, atol=1e-9)
    assert "Step 1 of GD" in " ".join(c.value for c in at.caption)


def test_step_wraps_after_the_last_iteration_and_is_off_by_default() -> None:
    at = _open({"itr_iters": "2"})
    assert at.session_state["itr_step_on"] is False
    assert not [n for n in _names(at) if "region at t" in n]
    assert _step(at).session_state["itr_check_t"] == 1
    assert _step(at).session_state["itr_check_t"] == 0
    assert "GD: region at t = 0" in _names(at)
