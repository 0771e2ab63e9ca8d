"""The Hessian-diagonal ellipsoid and ellipsoidal ARC in the app: the 2-D page and the live page."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from etr_core.live import stop_all_runs
from etr_core.viz.live_plots import is_cubic, is_trust_region, trust_region_figure
from tests.app.support import APP, decode_array, open_page, plotly_figures

SO_PAGE = "pages/second_order_2d.py"


def _figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


def _text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


@pytest.fixture(scope="module")
def rotated() -> AppTest:
    return open_page(SO_PAGE, {"so_methods": "tr_uniform,tr_hess,arc_rms", "so_kappa": "100",
                               "so_theta": "30", "so_cg": "50", "so_radius": "1.0", "so_w0": "2.0",
                               "so_w1": "1.0",
                               "so_step_on": "true", "so_step_method": "arc_rms", "so_step_t": "0"})


def test_second_order_page_offers_and_draws_both_methods(rotated: AppTest) -> None:
    names = [t.get("name") for t in _figure(rotated)["data"]]
    for name in ("TR_uni", "TR_hess", "TR_hess trust regions", "ARC_rms", "cubic-model step at w_0"):
        assert name in names
    assert "ARC_rms trust regions" not in names  # ARC has a cubic penalty, not a region
    table = rotated.dataframe[0].value.set_index("method")
    for label in ("TR_hess", "ARC_rms"):
        assert table.loc[label, "status"] == "converged"
    text = _text(rotated)
    assert "Beyond the paper" in text and "Jacobi" in text and "σ went from 1 to" in text
    assert "ARC_rms, iteration 0:** σ_t = 1," in text
    assert rotated.get("arrow_vega_lite_chart") or rotated.get("vega_lite_chart")  # the sigma chart
    assert "sigma_t}{3}" in rotated.latex[-1].value  # the cubic model and CGT's sigma update


def test_hessian_region_is_the_diagonal_scaled_ellipse(rotated: AppTest) -> None:
    # Q = R diag(1, 100) R^T at 30 degrees: diag(Q) = (cos^2 + 100 sin^2, sin^2 + 100 cos^2). After one exact
    # update (EMA from 0, beta 0.8) m_0 = sqrt(0.2 diag(Q)^2 + 1e-10), and the first region drawn (at the
    # start, radius 1) is {w : sum_i m_0,i (w - w_0)_i^2 = 1}: an axis-parallel ellipse, axis ratio
    # sqrt(q_11 / q_00), whatever the tilt of Q's eigenvectors.
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    diag_q = np.array([c * c + 100 * s * s, s * s + 100 * c * c])
    m0 = np.sqrt(0.2 * diag_q**2 + 1e-10)
    region = _trace(_figure(rotated), "TR_hess trust regions")
    x, y = decode_array(region["x"]), decode_array(region["y"])
    first = np.flatnonzero(np.isnan(x))[0]
    px, py = x[:first] - 2.0, y[:first] - 1.0
    np.testing.assert_allclose(m0[0] * px**2 + m0[1] * py**2, 1.0, rtol=1e-5)
    half_axes = np.array([px.max() - px.min(), py.max() - py.min()]) / 2
    np.testing.assert_allclose(half_axes[0] / half_axes[1], math.sqrt(diag_q[1] / diag_q[0]), rtol=1e-3)


def test_axis_aligned_quadratic_names_the_eigenvalues_and_steps_through_tr_hess() -> None:
    at = open_page(SO_PAGE, {"so_methods": "tr_hess", "so_kappa": "100", "so_theta": "0", "so_cg": "1",
                             "so_step_on": "true", "so_step_method": "tr_hess", "so_step_t": "3"})
    text = _text(at)
    assert "|diag(Q)| = (1, 100)" in text and "holds Q's eigenvalues" in text
    # iteration 3 is the 4th exact update: m = sqrt((1 - 0.8^4) (1, 100)^2 + 1e-10)
    m = np.sqrt((1 - 0.8**4) * np.array([1.0, 100.0]) ** 2 + 1e-10)
    assert "TR_hess, iteration 3:** Δ_t =" in text and f"M_t = diag({m[0]:.3g}" in text
    names = [t.get("name") for t in _figure(at)["data"]]
    assert "region at w_3" in names
    assert all("sigma_t}{3}" not in element.value for element in at.latex)  # no ARC, no cubic model


def test_trust_region_figure_labels_arc_sigma() -> None:
    steps = pd.DataFrame({"method": ["TR_hess", "TR_hess", "ARC_rms", "ARC_rms", "Adam"],
                          "backprops": [3.0, 6.0, 3.0, 6.0, 1.0], "radius": [1e-4, 1.1e-4, 1.0, 0.5, np.nan],
                          "rho": [0.99, 0.5, 0.95, -1.0, np.nan],
                          "accepted": [True, True, True, False, True]})
    fig = trust_region_figure(steps)
    names = [t.name for t in fig.data]
    assert names == ["TR_hess radius", "TR_hess ρ", "ARC_rms sigma (ARC)", "ARC_rms ρ"]
    np.testing.assert_array_equal(fig.data[2].y, [1.0, 0.5])
    assert "sigma (ARC)" in fig.layout.yaxis.title.text
    assert is_cubic("ARC_rms") and is_trust_region("ARC_rms") and not is_cubic("TR_rms")
    tr_only = trust_region_figure(steps[steps.method == "TR_hess"])
    assert [t.name for t in tr_only.data] == ["TR_hess radius", "TR_hess ρ"]
    assert "sigma" not in tr_only.layout.yaxis.title.text


@pytest.fixture
def _stop_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live-training worker outlived its test"


@pytest.mark.slow
def test_live_page_runs_tr_hess_and_arc(_stop_workers) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/live_training.py").run()
    assert {"TR_hess", "ARC_rms"} <= set(at.multiselect(key="lt_methods").options)
    at.multiselect(key="lt_methods").set_value(["TR_hess", "ARC_rms"])
    at.select_slider(key="lt_budget").set_value(100)
    at.run()
    assert "Selected now: TR_hess, ARC_rms." in _text(at)
    at.button(key="lt_start").click().run()
    assert not at.exception, at.exception
    deadline = time.monotonic() + 150
    while not at.success and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    assert at.success and "Run finished" in at.success[0].value
    loss, _acc, cg, tr = plotly_figures(at)
    assert {"TR_hess (mini-batch)", "ARC_rms (mini-batch)"} <= {t["name"] for t in loss["data"]}
    assert [t["name"] for t in tr["data"]] == ["TR_hess radius", "TR_hess ρ", "ARC_rms sigma (ARC)",
                                               "ARC_rms ρ"]
    assert "sigma (ARC)" in tr["layout"]["yaxis"]["title"]["text"]
    assert {t["name"] for t in cg["data"]} == {"TR_hess CG iterations", "ARC_rms CG iterations"}
    assert all(len(decode_array(t["y"])) > 0 for t in tr["data"])
