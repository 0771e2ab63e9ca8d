"""Theorem 1 (first-order TR step = preconditioned gradient step) and the Cauchy point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.subproblem import cauchy_point, first_order_tr_step, steihaug_toint_pcg


def test_theorem1_reference_numbers():
    """Worked example: A = diag(1, 4, 9), g = 1, eta = 0.5."""
    A = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    g = torch.ones(3, dtype=torch.float64)
    eta = 0.5
    s_pgd = -eta * g / A
    np.testing.assert_allclose(s_pgd.numpy(), [-0.5, -0.125, -0.5 / 9], rtol=1e-15)
    dual = math.sqrt(1 + 1 / 4 + 1 / 9)
    assert dual == pytest.approx(1.1666666666666667, rel=1e-6)
    res = first_order_tr_step(g, A, eta * dual)
    np.testing.assert_allclose(res.step.numpy(), s_pgd.numpy(), rtol=1e-14)
    assert res.step_m_norm == pytest.approx(0.5833333333333334, rel=1e-6)
    assert res.pred_reduction == pytest.approx(eta * dual**2, rel=1e-14)
    # KKT of Eq. 14: g + lambda A s / ||s||_A = 0 with lambda = ||g||_{A^-1}.
    kkt = g + dual * A * res.step / res.step_m_norm
    assert float(kkt.abs().max()) <= 1e-15
    assert res.multiplier == pytest.approx(dual / (eta * dual), rel=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_theorem1_random_with_1000_feasible_competitors(seed):
    gen = torch.Generator().manual_seed(seed)
    d = 6
    A = torch.rand(d, generator=gen, dtype=torch.float64) * 10 + 0.01
    g = torch.randn(d, generator=gen, dtype=torch.float64)
    eta = float(torch.rand(1, generator=gen, dtype=torch.float64)) * 2 + 0.01
    s = -eta * g / A
    dual = math.sqrt(float((g * g / A).sum()))
    norm_s = math.sqrt(float((A * s * s).sum()))
    assert norm_s == pytest.approx(eta * dual, rel=1e-12)  # Eq. 18
    res = first_order_tr_step(g, A, eta * dual)
    np.testing.assert_allclose(res.step.numpy(), s.numpy(), rtol=1e-12, atol=1e-15)
    assert res.hit_boundary and res.hvp_calls == 0
    np.testing.assert_allclose((g + (1 / eta) * A * res.step).numpy(), 0.0, atol=1e-12)
    # 1000 random feasible points never beat s on the linear model.
    radius = eta * dual
    dirs = torch.randn(1000, d, generator=gen, dtype=torch.float64)
    norms = torch.sqrt((dirs * dirs * A).sum(1, keepdim=True))
    scale = torch.rand(1000, 1, generator=gen, dtype=torch.float64) ** (1 / d)
    cand = dirs / norms * radius * scale
    assert bool((torch.sqrt((cand * cand * A).sum(1)) <= radius * (1 + 1e-12)).all())
    assert float((cand @ g).min()) >= float(g @ res.step) - 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_order_step_dtype_and_zero_gradient(dtype):
    g = torch.tensor([3.0, -4.0], dtype=dtype)
    res = first_order_tr_step(g, torch.ones(2, dtype=dtype), 2.0)
    assert res.step.dtype == dtype
    np.testing.assert_allclose(res.step.double().numpy(), [-1.2, 1.6], rtol=1e-6)
    assert res.pred_reduction == pytest.approx(10.0, rel=1e-6)
    zero = first_order_tr_step(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype), 1.0)
    assert zero.exit == "zero_gradient" and zero.pred_reduction == 0.0 and not zero.hit_boundary
    assert bool((zero.step == 0).all())


def test_first_order_step_rejects_bad_input():
    g = torch.ones(3)
    with pytest.raises(ValueError, match="radius"):
        first_order_tr_step(g, torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="m"):
        first_order_tr_step(g, torch.tensor([1.0, 0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="entries"):
        first_order_tr_step(g, torch.ones(4), 1.0)
    nonfinite = first_order_tr_step(torch.tensor([1.0, float("inf"), 0.0]), torch.ones(3), 1.0)
    assert nonfinite.exit == "nonfinite" and bool((nonfinite.step == 0).all())


def _closed_form_cauchy(g, B, m, radius):
    """1-D minimisation along -M^-1 g by brute force on a fine grid plus the analytic candidates."""
    p = -g / m
    t_max = radius / math.sqrt(float((m * p * p).sum()))
    ts = np.linspace(0.0, t_max, 20001)
    gp, pBp = float(g @ p), float(p @ B @ p)
    vals = ts * gp + 0.5 * ts**2 * pBp
    return -float(vals.min())


@pytest.mark.parametrize("seed", range(6))
def test_cauchy_point_against_grid_and_steihaug_decrease(seed):
    gen = torch.Generator().manual_seed(seed)
    d = 5
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.randn(d, generator=gen, dtype=torch.float64) * 2 + (0.5 if seed % 2 else 0.0)
    B = Q @ torch.diag(eig) @ Q.T
    g = torch.randn(d, generator=gen, dtype=torch.float64)
    m = torch.rand(d, generator=gen, dtype=torch.float64) + 0.2
    for radius in (0.01, 0.3, 3.0, 100.0):
        cp = cauchy_point(g, lambda v, B=B: B @ v, m, radius)
        oracle = _closed_form_cauchy(g, B, m, radius)
        assert cp.pred_reduction == pytest.approx(oracle, rel=1e-6, abs=1e-12)
        s = cp.step
        assert cp.pred_reduction == pytest.approx(-float(g @ s + 0.5 * s @ B @ s), rel=1e-12)
        assert cp.step_m_norm <= radius * (1 + 1e-12)
        assert cp.hvp_calls == 1
        # Steihaug-Toint does at least as well as the Cauchy point.
        st = steihaug_toint_pcg(g, lambda v, B=B: B @ v, radius, m)
        assert st.pred_reduction >= cp.pred_reduction * (1 - 1e-12)


def test_cauchy_point_zero_gradient_and_nan_hvp():
    m = torch.ones(3, dtype=torch.float64)
    res = cauchy_point(torch.zeros(3, dtype=torch.float64), lambda v: v, m, 1.0)
    assert res.exit == "zero_gradient" and res.hvp_calls == 0
    bad = cauchy_point(torch.ones(3, dtype=torch.float64), lambda v: v * float("nan"), m, 1.0)
    assert bad.exit == "nonfinite" and bool((bad.step == 0).all()) and bad.pred_reduction == 0.0


def test_denormal_gradient_whose_dual_norm_underflows_is_scaled() -> None:
    """A gradient of denormal size: g^T M^-1 g underflows to 0 in float64, but the Theorem 1 step is
    scale invariant: s = -radius M^-1 g / ||g||_{M^-1} = (-1e-5, 0), predicted decrease
    radius ||g||_{M^-1} = 1e-165."""
    import torch

    from etr_core.subproblem import first_order_tr_step

    g = torch.tensor([1e-160, 0.0], dtype=torch.float64)
    m = torch.tensor([1e10, 1.0], dtype=torch.float64)
    result = first_order_tr_step(g, m, 1.0)
    assert result.exit == "boundary"
    assert result.step[0].item() == pytest.approx(-1e-5, rel=1e-12)
    assert result.step[1].item() == 0.0
    assert result.pred_reduction == pytest.approx(1e-165, rel=1e-12)
