"""Preconditioned GLTR (Lanczos) solver: the trust-region optimum over the Krylov space (Eq. 35).

Oracles: Newton steps by dense solves, the exact solver (itself checked by the More-Sorensen
certificate), an explicitly built M-orthonormal Krylov basis, and the true residual
||(B + lambda M) s + g||_{M^-1}.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from etr_core.subproblem import gltr, solve_exact, steihaug_toint_pcg

F64 = torch.float64


def _model(g, B, s) -> float:
    return float(g @ s + 0.5 * s @ (B @ s))


def _problem(seed, d, kind="indefinite"):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    if kind == "pd":
        eig = torch.rand(d, generator=gen, dtype=F64) * 10 + 0.1
    else:
        eig = torch.randn(d, generator=gen, dtype=F64) * 3
    B = Q @ torch.diag(eig) @ Q.T
    B = 0.5 * (B + B.T)
    g = torch.randn(d, generator=gen, dtype=F64)
    m = torch.rand(d, generator=gen, dtype=F64) * 3 + 0.1
    return B, g, m


def test_same_signature_as_steihaug():
    a = inspect.signature(gltr).parameters
    b = inspect.signature(steihaug_toint_pcg).parameters
    assert list(a) == list(b)
    assert all(a[k].default == b[k].default for k in a)


def test_convex_large_radius_gives_newton_step():
    B, g, m = _problem(0, 12, "pd")
    res = gltr(g, lambda v: B @ v, 1e6, m, kappa=1e-12, max_iter=60)
    assert res.exit == "converged" and not res.hit_boundary and res.multiplier == 0.0
    np.testing.assert_allclose(res.step.numpy(), torch.linalg.solve(B, -g).numpy(), rtol=1e-8, atol=1e-10)


def test_interior_phase_equals_steihaug():
    B, g, m = _problem(1, 15, "pd")
    a = gltr(g, lambda v: B @ v, 1e3, m, kappa=1e-3)
    b = steihaug_toint_pcg(g, lambda v: B @ v, 1e3, m, kappa=1e-3)
    assert a.exit == b.exit == "converged" and a.iterations == b.iterations
    # Same Krylov iterates, different arithmetic order: agree to rounding relative to the step's size.
    scale = float(b.step.norm())
    np.testing.assert_allclose(a.step.numpy(), b.step.numpy(), rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("seed", range(6))
def test_boundary_solution_beats_steihaug_and_matches_exact(seed):
    B, g, m = _problem(seed, 20, ("pd", "indefinite")[seed % 2])
    for radius in (0.05, 0.5, 5.0):
        res = gltr(g, lambda v: B @ v, radius, m, kappa=1e-10, max_iter=20)
        st = steihaug_toint_pcg(g, lambda v: B @ v, radius, m, kappa=1e-10, max_iter=20)
        ex = solve_exact(g, B, radius, m)
        ours = _model(g, B, res.step)
        assert res.pred_reduction == pytest.approx(-ours, rel=1e-8)
        assert math.sqrt(float((m * res.step**2).sum())) <= radius * (1 + 1e-8)
        assert ours <= _model(g, B, st.step) + 1e-12 * (1 + abs(ours))
        assert ours == pytest.approx(_model(g, B, ex.step), rel=1e-6)
        if res.hit_boundary:
            assert res.multiplier == pytest.approx(ex.multiplier, rel=1e-4, abs=1e-8)


def _krylov_optimum(g, B, m, radius, k):
    """Trust-region optimum over span{v, (M^-1 B) v, ..., (M^-1 B)^{k-1} v}, v = M^-1 g, built densely."""
    vecs = [g / m]
    for _ in range(k - 1):
        vecs.append((B @ vecs[-1]) / m)
    K = torch.stack(vecs, 1)
    r = torch.sqrt(m)
    Qhat, _ = torch.linalg.qr(r[:, None] * K)  # orthonormal in the variables u = M^{1/2} s
    Q = Qhat / r[:, None]  # M-orthonormal basis of the Krylov space
    sub = solve_exact(Q.T @ g, Q.T @ B @ Q, radius)
    return _model(g, B, Q @ sub.step)


def test_each_lanczos_iterate_is_the_krylov_space_optimum():
    B, g, m = _problem(3, 25, "indefinite")
    res = gltr(g, lambda v: B @ v, 0.8, m, kappa=1e-12, max_iter=10, record=True)
    assert res.iterations == 10
    for h in res.history:
        k = h["iteration"]
        assert _model(g, B, h["step"]) == pytest.approx(_krylov_optimum(g, B, m, 0.8, k), rel=1e-8, abs=1e-12)
        assert h["model_change"] == pytest.approx(_model(g, B, h["step"]), rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("seed", range(4))
def test_residual_estimate_equals_true_residual(seed):
    """Lanczos-phase residual: ||(B + lambda M) s + g||_{M^-1} = gamma_{k+1} |h_k|,
    not |h_k| ||r_{k+1}||_{M^-1}."""
    B, g, m = _problem(10 + seed, 20, "indefinite")
    res = gltr(g, lambda v: B @ v, 0.5, m, kappa=1e-12, max_iter=12, record=True, residual_norm="m_inv")
    lanczos = [h for h in res.history if h["phase"] == "lanczos"]
    assert len(lanczos) >= 5
    for h in res.history:
        s, lam = h["step"], h["multiplier"]
        true = B @ s + lam * m * s + g
        true_m_inv = math.sqrt(float((true * true / m).sum()))
        assert h["residual_m_inv"] == pytest.approx(true_m_inv, rel=1e-7, abs=1e-12)
        assert h["residual_norm"] == pytest.approx(true_m_inv, rel=1e-7, abs=1e-12)
    res2 = gltr(g, lambda v: B @ v, 0.5, m, kappa=1e-12, max_iter=12, record=True, residual_norm="l2")
    for h in res2.history:
        s, lam = h["step"], h["multiplier"]
        assert h["residual_norm"] == pytest.approx(
            float((B @ s + lam * m * s + g).norm()), rel=1e-7, abs=1e-12
        )


@pytest.mark.parametrize("norm_name", ["l2", "m_inv"])
def test_eq36_stop_rule_in_the_lanczos_phase(norm_name):
    B, g, m = _problem(4, 30, "indefinite")
    kappa, theta = 0.1, 0.5
    res = gltr(
        g,
        lambda v: B @ v,
        1.0,
        m,
        kappa=kappa,
        theta=theta,
        residual_norm=norm_name,
        max_iter=60,
        record=True,
    )
    assert res.exit == "boundary" and res.hit_boundary

    def norm(x):
        return float(x.norm()) if norm_name == "l2" else math.sqrt(float((x * x / m).sum()))

    tol = norm(g) * min(kappa, norm(g) ** theta)
    s, lam = res.step, res.multiplier
    assert norm(B @ s + lam * m * s + g) <= tol * (1 + 1e-7)
    assert all(h["residual_norm"] > tol for h in res.history[:-1])


def test_zero_curvature_gives_the_first_order_step():
    g = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    m = torch.tensor([1.0, 4.0, 2.0], dtype=F64)
    res = gltr(g, lambda v: torch.zeros_like(v), 0.3, m)
    dual = math.sqrt(float((g * g / m).sum()))
    np.testing.assert_allclose(res.step.numpy(), (-0.3 * g / m / dual).numpy(), rtol=1e-12)
    assert res.hit_boundary and res.pred_reduction == pytest.approx(0.3 * dual, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    B, g, m = _problem(5, 40, "indefinite")
    B32, g32, m32 = B.to(dtype), g.to(dtype), m.to(dtype)
    res = gltr(g32, lambda v: B32 @ v, 0.5, m32, kappa=0.1, max_iter=15)
    ref = gltr(g, lambda v: B @ v, 0.5, m, kappa=0.1, max_iter=15)
    assert res.step.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-12
    assert _model(g, B, res.step.double()) == pytest.approx(_model(g, B, ref.step), rel=tol)


def test_trivial_and_bad_inputs():
    m = torch.ones(3, dtype=F64)
    zero = gltr(torch.zeros(3, dtype=F64), lambda v: v, 1.0, m)
    assert zero.exit == "zero_gradient" and zero.hvp_calls == 0
    g = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    none = gltr(g, lambda v: v, 1.0, m, max_iter=0)
    assert none.exit == "max_iter" and bool((none.step == 0).all())
    bad = gltr(g, lambda v: v * float("nan"), 1.0, m)
    assert bad.exit == "nonfinite" and bad.pred_reduction == 0.0 and bool((bad.step == 0).all())
    with pytest.raises(ValueError, match="stop_rule"):
        gltr(g, lambda v: v, 1.0, m, stop_rule="model_decrease")
    with pytest.raises(ValueError, match="radius"):
        gltr(g, lambda v: v, 0.0, m)
