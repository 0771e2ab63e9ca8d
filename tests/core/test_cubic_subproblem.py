"""The ellipsoidal ARC subproblem against a closed-form oracle (full eigenbasis + SciPy's brentq)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from etr_core.subproblem.cubic import arc_subproblem, cubic_in_eigenbasis


def _oracle(B: np.ndarray, g: np.ndarray, m: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """Global minimiser of g^T s + 1/2 s^T B s + sigma/3 ||s||_M^3 and its multiplier, independently:
    in u = M^{1/2} s the norm is Euclidean; eigendecompose, solve ||c(lambda)|| = lambda/sigma by brentq;
    the hard case completes along the bottom eigenvector."""
    r = 1.0 / np.sqrt(m)
    lam, V = np.linalg.eigh(r[:, None] * B * r[None, :])
    b = V.T @ (r * g)
    low = max(0.0, -lam[0])
    bottom = np.isclose(lam, lam[0], rtol=0, atol=1e-10)
    if lam[0] < 0 and np.allclose(b[bottom], 0.0, atol=1e-12):
        c = np.where(bottom, 0.0, -b / np.where(bottom, 1.0, lam + low))
        if np.linalg.norm(c) <= low / sigma:
            c[np.flatnonzero(bottom)[0]] = math.sqrt((low / sigma) ** 2 - c @ c)
            return r * (V @ c), low

    def phi(x: float) -> float:
        return float(np.linalg.norm(b / (lam + x)) - x / sigma)

    hi = low + 1.0
    while phi(hi) > 0:
        hi *= 2.0
    x = brentq(phi, low + 1e-15 * max(1.0, low), hi, xtol=1e-15, rtol=1e-15)
    return r * (V @ (-b / (lam + x))), x


def _model(B, g, m, sigma, s) -> float:
    return float(g @ s + 0.5 * s @ B @ s + sigma / 3.0 * math.sqrt(s @ (m * s)) ** 3)


def _problem(seed: int, d: int, *, indefinite: bool):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    B = (A + A.T) / 2 if indefinite else A @ A.T / d + 0.1 * np.eye(d)
    g = rng.standard_normal(d)
    m = rng.uniform(0.2, 5.0, d)
    return B, g, m


def _solve(B, g, m, sigma, **kw):
    Bt = torch.from_numpy(B)
    return arc_subproblem(torch.from_numpy(g), lambda v: Bt @ v, sigma, torch.from_numpy(m), **kw)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("indefinite", [False, True])
@pytest.mark.parametrize("sigma", [1e-2, 1.0, 30.0])
def test_complete_krylov_space_gives_the_global_minimiser(seed, indefinite, sigma):
    d = 2 + seed
    B, g, m = _problem(seed, d, indefinite=indefinite)
    s_star, lam_star = _oracle(B, g, m, sigma)
    res = _solve(B, g, m, sigma, kappa=0.0, max_iter=d)
    s = res.step.numpy()
    assert res.exit == "krylov_complete"
    assert np.allclose(s, s_star, rtol=1e-7, atol=1e-9 * max(1.0, np.abs(s_star).max()))
    assert res.multiplier == pytest.approx(lam_star, rel=1e-7, abs=1e-10)
    assert res.pred_reduction == pytest.approx(-_model(B, g, m, sigma, s_star), rel=1e-9)
    # first-order optimality of the subproblem: g + B s + sigma ||s||_M M s = 0
    s_m = math.sqrt(s @ (m * s))
    grad = g + B @ s + sigma * s_m * m * s
    assert np.linalg.norm(grad) <= 1e-8 * np.linalg.norm(g)
    assert res.step_m_norm == pytest.approx(s_m, rel=1e-9)


def test_model_decreases_on_every_truncated_solve():
    B, g, m = _problem(7, 40, indefinite=True)
    g_star_value = _model(B, g, m, 0.5, _oracle(B, g, m, 0.5)[0])
    previous = 0.0
    for k in (1, 2, 5, 10, 40):
        res = _solve(B, g, m, 0.5, kappa=0.0, max_iter=k)
        value = _model(B, g, m, 0.5, res.step.numpy())
        assert res.pred_reduction == pytest.approx(-value, rel=1e-8)
        assert value < previous + 1e-12  # nested Krylov spaces: never worse
        assert value >= g_star_value - 1e-9  # never below the global minimum
        previous = value
    assert previous == pytest.approx(g_star_value, rel=1e-8)


def test_residual_stop_rule_bounds_the_model_gradient():
    B, g, m = _problem(3, 60, indefinite=False)
    res = _solve(B, g, m, 1.0, kappa=1e-3, theta=0.5, max_iter=60)
    assert res.exit == "converged" and res.iterations < 60
    s = res.step.numpy()
    grad = g + B @ s + math.sqrt(s @ (m * s)) * m * s
    g_hat = math.sqrt(g @ (g / m))
    assert math.sqrt(grad @ (grad / m)) <= 1e-3 * g_hat * (1 + 1e-6)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 10.0])
def test_hard_case_in_the_eigenbasis(sigma):
    lam = np.array([-2.0, -2.0, 0.5, 3.0])
    b = np.array([0.0, 0.0, 0.3, -0.7])
    sol = cubic_in_eigenbasis(lam, b, sigma)
    c = sol.coeff
    # the global minimum from the oracle (full problem in an identity basis: B = diag(lam), M = I)
    c_star, lam_star = _oracle(np.diag(lam), b, np.ones(4), sigma)
    value = float(b @ c + 0.5 * np.sum(lam * c * c) + sigma / 3 * np.linalg.norm(c) ** 3)
    value_star = float(b @ c_star + 0.5 * np.sum(lam * c_star**2) + sigma / 3 * np.linalg.norm(c_star) ** 3)
    assert value == pytest.approx(value_star, rel=1e-10)
    assert sol.multiplier == pytest.approx(lam_star, rel=1e-10)
    assert sol.hard_case == (np.linalg.norm(b[2:] / (lam[2:] + 2.0)) <= 2.0 / sigma)
    assert np.linalg.norm(b + lam * c + sigma * np.linalg.norm(c) * c) <= 1e-10


def test_zero_gradient_and_nonfinite_products():
    g = torch.zeros(3)
    res = arc_subproblem(g, lambda v: v, 1.0, torch.ones(3))
    assert res.exit == "zero_gradient" and res.pred_reduction == 0.0
    res = arc_subproblem(torch.ones(3), lambda v: v * float("nan"), 1.0, torch.ones(3))
    assert res.exit == "nonfinite" and bool((res.step == 0).all()) and res.hvp_calls == 1


def test_float32_in_float32_out():
    B, g, m = _problem(1, 6, indefinite=True)
    Bt = torch.from_numpy(B).float()
    res = arc_subproblem(torch.from_numpy(g).float(), lambda v: Bt @ v, 1.0, torch.from_numpy(m).float(),
                         kappa=0.0, max_iter=6)
    s_star, _ = _oracle(B, g, m, 1.0)
    assert res.step.dtype == torch.float32
    assert np.allclose(res.step.numpy(), s_star, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": 1.0, "kappa": 1.0}, "kappa"),
        ({"sigma": 1.0, "max_iter": 0}, "max_iter"),
    ],
)
def test_bad_options_name_the_parameter(kwargs, match):
    sigma = kwargs.pop("sigma")
    with pytest.raises(ValueError, match=match):
        arc_subproblem(torch.ones(2), lambda v: v, sigma, torch.ones(2), **kwargs)
    with pytest.raises(ValueError, match="m must be"):
        arc_subproblem(torch.ones(2), lambda v: v, 1.0, torch.tensor([1.0, 0.0]))
