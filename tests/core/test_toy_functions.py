"""Non-convex 2-D test functions: derivatives against finite differences and torch autograd, the
sum-of-squares form against the Gauss-Newton decomposition (Eq. 38), known critical points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.toy.functions import FUNCTION_NAMES, FUNCTIONS, get_function, quadratic_function
from etr_core.toy.quadratics import make_quadratic

H_FD = 1e-6


def _points(fn, n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0, x1, y0, y1 = fn.view
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def _fd_gradient(f, w: np.ndarray, h: float = H_FD) -> np.ndarray:
    e = np.eye(2)
    return np.array([(f(w + h * e[i]) - f(w - h * e[i])) / (2 * h) for i in range(2)])


def _fd_jacobian(F, w: np.ndarray, h: float = H_FD) -> np.ndarray:
    e = np.eye(2)
    return np.column_stack([(F(w + h * e[i]) - F(w - h * e[i])) / (2 * h) for i in range(2)])


ALL = [*(FUNCTIONS[n] for n in FUNCTION_NAMES), quadratic_function(make_quadratic(30.0, 25.0).Q, (0.5, -0.3))]
IDS = [*FUNCTION_NAMES, "quadratic"]


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_gradient_and_hessian_match_finite_differences(fn) -> None:
    for w in _points(fn):
        g = fn.gradient(w)
        fd = _fd_gradient(fn.value, w)
        assert np.allclose(g, fd, rtol=1e-6, atol=1e-5 * max(1.0, abs(fn.value(w)))), (w, g, fd)
        H = fn.hessian(w)
        assert np.array_equal(H, H.T)
        fdH = _fd_jacobian(fn.gradient, w)
        assert np.allclose(H, fdH, rtol=1e-6, atol=1e-5 * max(1.0, np.abs(H).max())), (w, H, fdH)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_torch_callable_matches_numpy_and_autograd(fn) -> None:
    for w in _points(fn, seed=1):
        t = torch.tensor(w, dtype=torch.float64)
        assert float(fn.torch_value(t)) == pytest.approx(fn.value(w), rel=1e-13, abs=1e-13)
        auto_g = torch.autograd.functional.jacobian(fn.torch_value, t).numpy()
        auto_H = torch.autograd.functional.hessian(fn.torch_value, t).numpy()
        assert np.allclose(fn.gradient(w), auto_g, rtol=1e-12, atol=1e-10)
        assert np.allclose(fn.hessian(w), auto_H, rtol=1e-12, atol=1e-10)
        assert np.allclose(fn.torch_gradient(t).numpy(), auto_g, rtol=1e-12, atol=1e-12)
        assert np.allclose(fn.torch_hessian(t).numpy(), auto_H, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_batched_values_match_pointwise_values(fn) -> None:
    pts = _points(fn, n=12, seed=2).reshape(3, 4, 2)
    batch = fn.value(pts)
    assert batch.shape == (3, 4)
    for idx in np.ndindex(3, 4):
        assert batch[idx] == pytest.approx(fn.value(pts[idx]), rel=1e-14, abs=1e-14)


@pytest.mark.parametrize(
    "fn", [f for f in ALL if f.is_least_squares], ids=[i for f, i in zip(ALL, IDS) if f.is_least_squares]
)
def test_least_squares_form_and_gauss_newton_decomposition(fn) -> None:
    for w in _points(fn, seed=3):
        r = fn.residuals(w)
        assert 0.5 * r @ r + fn.residual_offset == pytest.approx(fn.value(w), rel=1e-12, abs=1e-12)
        J = fn.jacobian(w)
        assert np.allclose(J, _fd_jacobian(fn.residuals, w), rtol=1e-6, atol=1e-6)
        assert np.allclose(J.T @ r, fn.gradient(w), rtol=1e-12, atol=1e-10)
        # Eq. 38 with the squared loss: H = J^T J + sum_i r_i Hess(r_i), the second term by differences of J.
        second = np.zeros((2, 2))
        for i in range(len(r)):
            second += r[i] * _fd_jacobian(lambda v, i=i: fn.jacobian(v)[i], w)
        assert np.allclose(fn.gauss_newton_matrix(w) + second, fn.hessian(w), rtol=1e-6, atol=1e-5)
        assert np.all(np.linalg.eigvalsh(fn.gauss_newton_matrix(w)) >= -1e-12)


def test_paper_function_is_the_figure_7_formula() -> None:
    fn = get_function("paper")
    for w0, w1 in [(0.3, -0.7), (1.2, 0.1), (-0.5, 1.4)]:
        assert fn.value((w0, w1)) == pytest.approx(0.5 * w0**2 + 0.25 * w1**4 - 0.5 * w1**2, rel=1e-15)
    # Negative curvature exactly in the band |w1| < 1/sqrt(3).
    assert np.linalg.eigvalsh(fn.hessian((0.0, 0.57)))[0] < 0 < np.linalg.eigvalsh(fn.hessian((0.0, 0.58)))[0]


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_known_critical_points_are_stationary_and_of_their_kind(name: str) -> None:
    fn = get_function(name)
    assert fn.critical_points
    for c in fn.critical_points:
        w = c.as_array()
        assert np.linalg.norm(fn.gradient(w)) <= 1e-9 * max(1.0, np.abs(fn.hessian(w)).max()), c
        lam = np.linalg.eigvalsh(fn.hessian(w))
        # Classify by the values around the point (independent of the Hessian, handles degenerate points).
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        ring = w + 1e-3 * np.column_stack([np.cos(angles), np.sin(angles)])
        diff = fn.value(ring) - fn.value(w)
        if c.kind == "minimum":
            assert np.all(diff > 0) and lam[0] > 0
        elif c.kind == "maximum":
            assert np.all(diff < 0) and lam[1] < 0
        else:
            assert diff.min() < 0 < diff.max()
    if fn.min_value is not None:
        mins = fn.points_of_kind("minimum")
        assert min(fn.value(p) for p in mins) == pytest.approx(fn.min_value, abs=1e-12)
        grid = np.stack(np.meshgrid(np.linspace(*fn.view[:2], 201), np.linspace(*fn.view[2:], 201)), axis=-1)
        assert fn.value(grid).min() >= fn.min_value - 1e-12


def test_quadratic_function_agrees_with_the_quadratics_module() -> None:
    q = make_quadratic(100.0, 30.0, w_star=(0.4, -0.2))
    fn = quadratic_function(q.Q, q.w_star)
    for w in _points(fn, seed=4):
        assert fn.value(w) == pytest.approx(q.value(w), rel=1e-12, abs=1e-14)
        assert np.allclose(fn.gradient(w), q.grad(w), rtol=1e-12, atol=1e-12)
        assert np.allclose(fn.hessian(w), q.hessian(), rtol=1e-12)
        assert np.allclose(fn.gauss_newton_matrix(w), q.Q, rtol=1e-10, atol=1e-12)


def test_nearest_critical_point() -> None:
    fn = get_function("paper")
    point, dist = fn.nearest_critical_point((0.1, 0.9))
    assert point.kind == "minimum" and point.point == (0.0, 1.0)
    assert dist == pytest.approx(math.hypot(0.1, 0.1))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="name"):
        get_function("nope")
    with pytest.raises(ValueError, match="sum of squares"):
        get_function("monkey_saddle").residuals((0.0, 0.0))
    with pytest.raises(ValueError, match="w must"):
        get_function("paper").gradient((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="kind"):
        get_function("paper").points_of_kind("ridge")
    with pytest.raises(ValueError, match="positive definite"):
        quadratic_function([[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        quadratic_function([[1.0, 0.5], [0.0, 1.0]])
