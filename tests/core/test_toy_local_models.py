"""Local quadratic models and their steps (appendix B, Figs. 7 and 8) against closed forms and a
brute-force minimisation of the model over a dense grid of the disk / ellipse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from etr_core.toy.functions import get_function
from etr_core.toy.local_models import (
    all_local_steps,
    classify_newton_step,
    gauss_newton_step,
    newton_step,
    quadratic_model,
    rms_diagonal_at,
    saddle_free_newton_step,
    trust_region_step,
)

PAPER = get_function("paper")
FIG7_LEFT = (0.1, 0.4)  # Newton ascends
FIG7_RIGHT = (1.0, 0.2)  # Newton is attracted by the saddle at the origin


def _model(g, H, s):
    return s @ g + 0.5 * np.einsum("...i,ij,...j->...", s, H, s)


def _brute_force(g, H, radius, m=None, n_r=500, n_t=2000):
    """Minimise g^T s + 1/2 s^T H s over a polar grid of {||s||_M <= radius}."""
    m = np.ones(2) if m is None else np.asarray(m, dtype=float)
    r = np.linspace(0.0, radius, n_r)[:, None]
    t = np.linspace(0.0, 2 * np.pi, n_t, endpoint=False)[None, :]
    s = np.stack([r * np.cos(t) / np.sqrt(m[0]), r * np.sin(t) / np.sqrt(m[1])], axis=-1).reshape(-1, 2)
    values = _model(g, H, s)
    i = int(np.argmin(values))
    return s[i], float(values[i])


@pytest.mark.parametrize(
    "name, w",
    [
        ("paper", (0.3, 0.2)),
        ("paper", (0.5, 0.9)),
        ("rosenbrock", (-1.2, 1.0)),
        ("himmelblau", (0.5, -0.5)),
        ("monkey_saddle", (0.5, 0.4)),
    ],
)
def test_newton_step_is_the_critical_point_of_the_model(name: str, w) -> None:
    fn = get_function(name)
    st = newton_step(fn, w)
    g, H = fn.gradient(np.array(w)), fn.hessian(np.array(w))
    assert st.defined
    assert np.linalg.norm(H @ st.step + g) <= 1e-12 * max(1.0, np.linalg.norm(g))
    assert np.allclose(st.target, np.array(w) + st.step)
    if np.all(np.linalg.eigvalsh(H) > 0):
        # For a convex model the critical point is its minimiser: an independent optimiser agrees.
        ref = scipy_minimize(
            lambda s: _model(g, H, s),
            np.zeros(2),
            jac=lambda s: g + H @ s,
            method="BFGS",
            options={"gtol": 1e-12},
        ).x
        assert np.allclose(st.step, ref, rtol=1e-6, atol=1e-8)
        assert st.kind == "descent"


def test_damped_newton_solves_the_shifted_system() -> None:
    w = np.array(FIG7_RIGHT)
    st = newton_step(PAPER, w, damping=0.3)
    B = PAPER.hessian(w) + 0.3 * np.eye(2)
    assert np.linalg.norm(B @ st.step + PAPER.gradient(w)) < 1e-14


def test_fig7_left_newton_ascends() -> None:
    w = np.array(FIG7_LEFT)
    st = newton_step(PAPER, w)
    assert st.kind == "ascent"
    g = PAPER.gradient(w)
    assert g @ st.step > 0  # uphill to first order
    assert PAPER.value(w + st.step) > PAPER.value(w)  # and the function really increases
    assert np.linalg.eigvalsh(PAPER.hessian(w))[0] < 0  # the model has negative curvature
    assert st.details["model_critical_point"] == "saddle"
    # Closed form: w0 -> 0 and w1 -> 2 w1^3 / (3 w1^2 - 1).
    w1 = w[1]
    assert np.allclose(st.target, [0.0, 2 * w1**3 / (3 * w1**2 - 1)], atol=1e-15)
    # The trust-region step at the same point decreases f.
    tr = trust_region_step(PAPER, w, 0.5)
    assert PAPER.value(tr.target) < PAPER.value(w)


def test_fig7_right_newton_is_attracted_by_the_saddle() -> None:
    w = np.array(FIG7_RIGHT)
    st = newton_step(PAPER, w)
    assert st.kind == "saddle-attracted"
    assert PAPER.gradient(w) @ st.step < 0  # a descent direction ...
    saddle = np.zeros(2)
    assert np.linalg.norm(st.target - saddle) < 0.1 * np.linalg.norm(w - saddle)  # ... straight at the saddle
    # Iterating Newton converges to the saddle, a point with f = 0 > f_min = -1/4.
    x = w.copy()
    for _ in range(8):
        x = newton_step(PAPER, x).target if np.any(PAPER.gradient(x)) else x
    assert np.linalg.norm(x) < 1e-12
    tr = trust_region_step(PAPER, w, 0.5)
    assert abs(tr.target[1]) > abs(w[1])  # TR moves away from the saddle's w1 = 0


def test_classification_rules() -> None:
    g = np.array([1.0, 1.0])
    assert classify_newton_step(np.zeros(2), np.eye(2), np.zeros(2)) == "stationary"
    assert classify_newton_step(g, np.diag([1.0, 0.0]), None) == "singular"
    assert classify_newton_step(g, np.diag([1.0, 2.0]), -np.array([1.0, 0.5])) == "descent"
    H = -np.eye(2)
    assert classify_newton_step(g, H, np.linalg.solve(H, -g)) == "ascent"
    assert classify_newton_step([np.nan, 1.0], np.eye(2), None) == "nonfinite"


@pytest.mark.parametrize(
    "w, radius, m",
    [
        (FIG7_LEFT, 0.5, None),
        (FIG7_RIGHT, 0.5, None),
        (FIG7_RIGHT, 0.3, (1.0, 4.0)),
        ((0.5, 0.9), 2.0, None),  # convex model, Newton step inside: interior solution
        ((0.05, 0.1), 0.7, (3.0, 0.5)),
        ((0.0, 0.0), 0.5, (1.0, 2.0)),  # on the saddle: the hard case
    ],
)
def test_trust_region_step_matches_brute_force_minimisation(w, radius, m) -> None:
    w = np.array(w)
    st = trust_region_step(PAPER, w, radius, m)
    g, H = PAPER.gradient(w), PAPER.hessian(w)
    mm = np.ones(2) if m is None else np.array(m)
    assert math.sqrt(mm @ st.step**2) <= radius * (1 + 1e-9)
    s_bf, v_bf = _brute_force(g, H, radius, m)
    v = _model(g, H, st.step)
    assert v <= v_bf + 1e-12  # never worse than any grid point
    assert v >= v_bf - 2e-4 * max(1.0, abs(v_bf))  # and the grid gets arbitrarily close
    if np.any(g):
        assert np.linalg.norm(st.step - s_bf) < 0.01 * radius + 1e-3
    else:
        # Two global minimisers +-Delta v_min: the step is one of them.
        assert min(np.linalg.norm(st.step - s_bf), np.linalg.norm(st.step + s_bf)) < 0.01 * radius + 1e-3
    assert st.model_decrease == pytest.approx(-v, rel=1e-10, abs=1e-14)


def test_trust_region_takes_the_newton_step_when_it_fits() -> None:
    w = np.array([0.5, 0.9])
    st = trust_region_step(PAPER, w, 5.0)
    assert st.kind == "converged"
    assert np.allclose(st.step, newton_step(PAPER, w).step, atol=1e-12)


def test_gauss_newton_step_closed_form_on_the_paper_function() -> None:
    # J^T J = diag(1, 2 w1^2) and g = (w0, w1^3 - w1): s = (-w0/(1+lam), -(w1^3 - w1)/(2 w1^2 + lam)).
    for (w0, w1), lam in [((1.0, 0.2), 0.0), ((0.4, -0.7), 0.0), ((1.0, 0.05), 0.1), ((-0.3, 1.3), 1.0)]:
        st = gauss_newton_step(PAPER, (w0, w1), damping=lam)
        expected = np.array([-w0 / (1 + lam), -(w1**3 - w1) / (2 * w1**2 + lam)])
        assert np.allclose(st.step, expected, rtol=1e-13, atol=1e-15)
        assert st.kind == "descent"
    kappa = gauss_newton_step(PAPER, (1.0, 0.05)).details["undamped_condition_number"]
    assert kappa == pytest.approx(1.0 / (2 * 0.05**2))


def test_gauss_newton_step_is_the_linearised_least_squares_solution() -> None:
    fn = get_function("rosenbrock")
    for w in [np.array([-1.2, 1.0]), np.array([0.3, -0.4])]:
        r, J = fn.residuals(w), fn.jacobian(w)
        ref = np.linalg.lstsq(J, -r, rcond=None)[0]  # argmin ||r + J s||
        assert np.allclose(gauss_newton_step(fn, w).step, ref, rtol=1e-10, atol=1e-12)


def test_gauss_newton_edge_cases_return_messages() -> None:
    st = gauss_newton_step(get_function("monkey_saddle"), (0.5, 0.5))
    assert not st.defined and st.kind == "not_least_squares" and "sum of squares" in st.message
    st = gauss_newton_step(PAPER, (1.0, 0.0))  # J^T J = diag(1, 0): singular
    assert not st.defined and st.kind == "singular" and "damping" in st.message
    assert gauss_newton_step(PAPER, (1.0, 0.0), damping=0.1).defined


def test_saddle_free_newton_uses_absolute_eigenvalues() -> None:
    for w in [np.array(FIG7_RIGHT), np.array(FIG7_LEFT), np.array([0.7, -0.1])]:
        st = saddle_free_newton_step(PAPER, w)
        lam = np.linalg.eigvalsh(PAPER.hessian(w))
        assert np.allclose(np.sort(st.model.eigenvalues), np.sort(np.abs(lam)), rtol=1e-12)
        # H is diagonal for this function: |H| = diag(1, |3 w1^2 - 1|).
        expected = -PAPER.gradient(w) / np.array([1.0, abs(3 * w[1] ** 2 - 1)])
        assert np.allclose(st.step, expected, rtol=1e-12)
        assert st.kind == "descent" and PAPER.gradient(w) @ st.step < 0
    # A rotated indefinite Hessian: compare with an explicit eigen-decomposition.
    fn = get_function("himmelblau")
    w = np.array([0.2, 0.3])
    H, g = fn.hessian(w), fn.gradient(w)
    lam, V = np.linalg.eigh(H)
    assert lam[0] < 0 < lam[1] or lam[1] < 0
    expected = -V @ ((V.T @ g) / np.abs(lam))
    assert np.allclose(saddle_free_newton_step(fn, w).step, expected, rtol=1e-10)


def test_start_on_the_saddle_and_singular_points_never_raise() -> None:
    steps = all_local_steps(PAPER, (0.0, 0.0), 0.5)
    assert steps["newton"].kind == "stationary" and not np.any(steps["newton"].step)
    assert steps["saddle_free_newton"].kind == "stationary"
    tr = steps["trust_region"]
    assert tr.kind == "hard_case" and np.allclose(np.abs(tr.step), [0.0, 0.5])
    # Monkey saddle at the origin: g = 0 and H = 0.
    steps = all_local_steps(get_function("monkey_saddle"), (0.0, 0.0), 0.5)
    assert steps["newton"].kind == "stationary"
    assert steps["gauss_newton"].kind == "not_least_squares"
    assert not np.any(steps["trust_region"].step)
    # Singular Hessian with a non-zero gradient: |w1| = 1/sqrt(3).
    st = newton_step(PAPER, (0.5, 1 / math.sqrt(3)))
    assert st.kind == "singular" and st.step is None and "singular" in st.message
    assert trust_region_step(PAPER, (0.5, 1 / math.sqrt(3)), 0.5).defined
    # Overflow: everything reports "nonfinite".
    far = all_local_steps(get_function("rosenbrock"), (1e200, 1e200), 0.5)
    assert all(s.kind == "nonfinite" and not s.defined for s in far.values() if s.method != "gauss_newton")


def test_quadratic_model_values_and_variants() -> None:
    w = np.array([0.3, -0.2])
    model = quadratic_model(PAPER, w)
    s = np.array([0.01, -0.02])
    # Second-order Taylor: error O(|s|^3).
    assert abs(model(s) - PAPER.value(w + s)) < 1e-5
    assert model.at_points(w + s) == pytest.approx(model(s))
    assert np.allclose(quadratic_model(PAPER, w, "gauss_newton", 0.5).matrix, np.diag([1.5, 2 * 0.04 + 0.5]))
    with pytest.raises(ValueError, match="matrix"):
        quadratic_model(PAPER, w, "fisher")
    with pytest.raises(ValueError, match="damping"):
        quadratic_model(PAPER, w, damping=-1.0)


def test_rms_diagonal_closed_form() -> None:
    g = np.array([0.3, -2.0])
    assert np.allclose(rms_diagonal_at(g), np.sqrt(0.2 * g**2 + 1e-10), rtol=1e-12)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="radius"):
        trust_region_step(PAPER, (0.1, 0.1), 0.0)
    with pytest.raises(ValueError, match="m must"):
        trust_region_step(PAPER, (0.1, 0.1), 1.0, m=(1.0, -1.0))
    with pytest.raises(ValueError, match="w must"):
        newton_step(PAPER, (0.1, 0.2, 0.3))
