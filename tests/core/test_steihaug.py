"""Preconditioned Steihaug-Toint CG in the M-norm (Eq. 8, Eq. 36, appendix B.2).

Oracles: SciPy's CGSteihaugSubproblem (spherical), dense linear solves, the change of variables
u = M^{1/2} s, and the model m(s) - m(0) = g^T s + 1/2 s^T B s evaluated directly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize._trustregion_ncg import CGSteihaugSubproblem

from etr_core.subproblem import solve_subproblem, steihaug_toint_pcg
from etr_core.subproblem.result import EXIT_MODEL_INCREASE, SubproblemResult
from etr_core.subproblem.steihaug import _finish

F64 = torch.float64


def _model(g, B, s) -> float:
    return float(g @ s + 0.5 * s @ (B @ s))


def _mnorm(s, m) -> float:
    return math.sqrt(float((m * s * s).sum()))


def _random_problem(gen, d, kind):
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    if kind == "pd":
        eig = torch.rand(d, generator=gen, dtype=F64) * 10 + 0.1
    elif kind == "indefinite":
        eig = torch.randn(d, generator=gen, dtype=F64) * 3
    elif kind == "zero":
        eig = torch.zeros(d, dtype=F64)
    elif kind == "rank_deficient":
        eig = torch.rand(d, generator=gen, dtype=F64) * 5 + 0.5
        eig[: d // 2] = 0.0
    else:
        raise AssertionError(kind)
    B = Q @ torch.diag(eig) @ Q.T
    B = 0.5 * (B + B.T)
    g = torch.randn(d, generator=gen, dtype=F64)
    m = torch.rand(d, generator=gen, dtype=F64) * 3 + 0.05
    return B, g, m


# Worked 2-D cases: (B diag, g, m, radius) -> (step, ||s||_M, m(s) - m(0), exit, Hv count)
D62 = [
    ((1, 10), (1, 1), (1, 1), 10, (-1, -0.1), 1.004988, -0.55, "converged", 2),
    ((1, 10), (1, 1), (1, 1), 0.5, (-0.476215, -0.152378), 0.5, -0.399107, "boundary", 2),
    ((1, 10), (1, 1), (1, 10), 10, (-1, -0.1), 1.048809, -0.55, "converged", 1),
    ((1, 10), (1, 1), (1, 10), 0.5, (-0.476731, -0.047673), 0.5, -0.399404, "boundary", 1),
    ((-1, 1), (1, 1), (1, 1), 1, (-0.707107, -0.707107), 1, -1.414214, "negative_curvature", 1),
    ((-1, 1), (1, 1), (1, 4), 1, (-0.894427, -0.223607), 1, -1.493034, "negative_curvature", 1),
]


@pytest.mark.parametrize("bdiag, g, m, radius, step, norm, change, exit_reason, hvps", D62)
def test_reference_table_d62(bdiag, g, m, radius, step, norm, change, exit_reason, hvps):
    B = torch.diag(torch.tensor(bdiag, dtype=F64))
    g, m = torch.tensor(g, dtype=F64), torch.tensor(m, dtype=F64)
    res = steihaug_toint_pcg(g, lambda v: B @ v, radius, m, kappa=0.1)
    np.testing.assert_allclose(res.step.numpy(), step, atol=1e-6)
    assert res.step_m_norm == pytest.approx(norm, abs=1e-6)
    assert res.model_change == pytest.approx(change, abs=1e-6)
    assert res.model_change == pytest.approx(_model(g, B, res.step), rel=1e-12)
    assert (res.exit, res.hvp_calls) == (exit_reason, hvps)


@pytest.mark.parametrize("kind", ["pd", "indefinite", "zero", "rank_deficient"])
@pytest.mark.parametrize("root", ["positive", "best"])
def test_feasibility_and_exact_model_value(kind, root):
    """||s||_M <= radius (equality on boundary exits); pred = -(g^T s + 1/2 s^T B s) >= 0."""
    gen = torch.Generator().manual_seed(11)
    for trial in range(4):
        B, g, m = _random_problem(gen, 8, kind)
        for radius in (1e-6, 1e-2, 0.3, 3.0, 1e4):
            res = steihaug_toint_pcg(g, lambda v, B=B: B @ v, radius, m, kappa=1e-3, max_iter=30, root=root)
            norm = _mnorm(res.step, m)
            assert norm <= radius * (1 + 1e-10), (kind, trial, radius)
            assert res.step_m_norm == pytest.approx(norm, rel=1e-12, abs=1e-300)
            if res.exit in ("boundary", "negative_curvature"):
                assert norm == pytest.approx(radius, rel=1e-10)
                assert res.hit_boundary
            else:
                assert not res.hit_boundary
            assert res.pred_reduction >= 0.0
            assert res.pred_reduction == pytest.approx(-_model(g, B, res.step), rel=1e-10, abs=1e-14)
            assert res.exit in ("converged", "boundary", "negative_curvature", "max_iter")


def test_monotone_model_and_increasing_m_norm_along_iterates():
    """With record=True the model values strictly decrease and ||s_k||_M strictly increases.

    Steihaug's theorem is exact-arithmetic; it is checked over the first 15 iterations on d = 40, before
    floating-point CG loses conjugacy (late iterations on small d can wobble at the 1e-6 level).
    """
    gen = torch.Generator().manual_seed(5)
    for kind in ("pd", "indefinite"):
        for _ in range(10):
            B, g, m = _random_problem(gen, 40, kind)
            radius = 1e3 if kind == "pd" else 2.0
            res = steihaug_toint_pcg(
                g, lambda v, B=B: B @ v, radius, m, kappa=1e-12, max_iter=15, record=True
            )
            hist = res.history
            assert len(hist) == res.iterations + 1 and hist[0]["iteration"] == 0
            models = [_model(g, B, h["step"]) for h in hist]
            norms = [_mnorm(h["step"], m) for h in hist]
            for h, mv, nm in zip(hist, models, norms):
                assert h["model_change"] == pytest.approx(mv, rel=1e-9, abs=1e-13)
                assert h["step_m_norm"] == pytest.approx(nm, rel=1e-12, abs=1e-300)
            assert all(b < a for a, b in itertools.pairwise(models))
            assert all(b > a for a, b in itertools.pairwise(norms))
            assert torch.equal(hist[-1]["step"], res.step)


def test_newton_limit():
    """Convex B, huge radius, kappa ~ 0, K = 10 d: the Newton step."""
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        B, g, m = _random_problem(gen, 10, "pd")
        res = steihaug_toint_pcg(g, lambda v, B=B: B @ v, 1e6, m, kappa=1e-12, max_iter=100)
        newton = torch.linalg.solve(B, -g)
        np.testing.assert_allclose(res.step.numpy(), newton.numpy(), rtol=1e-8, atol=1e-10)
        assert res.exit == "converged"


def _scipy_steihaug(g, B, radius):
    g_np, B_np = g.numpy(), B.numpy()
    sub = CGSteihaugSubproblem(
        np.zeros_like(g_np), lambda x: 0.0, lambda x: g_np, hessp=lambda x, p: B_np @ p
    )
    p, hits = sub.solve(radius)
    return p, hits


def test_uniform_equals_scipy_steihaug_on_20_problems_with_every_exit():
    """M = 1, kappa = 0.5, theta = 0.5 reproduces SciPy's trust-ncg subproblem solver."""
    gen = torch.Generator().manual_seed(7)
    seen = set()
    for trial in range(20):
        kind = ("pd", "indefinite")[trial % 2]
        d = 3 + trial % 8
        B, g, _ = _random_problem(gen, d, kind)
        radius = (0.05, 0.5, 5.0, 500.0)[trial % 4]
        res = steihaug_toint_pcg(
            g,
            lambda v, B=B: B @ v,
            radius,
            torch.ones(d, dtype=F64),
            kappa=0.5,
            theta=0.5,
            max_iter=100,
            root="best",
        )
        p, hits = _scipy_steihaug(g, B, radius)
        np.testing.assert_allclose(res.step.numpy(), p, rtol=1e-10, atol=1e-12)
        assert res.hit_boundary == hits
        seen.add(res.exit)
    assert {"converged", "boundary", "negative_curvature"} <= seen


def test_scaled_identity_equals_uniform_with_scaled_radius():
    """M = c 1 equals the uniform solver with radius / sqrt(c)."""
    gen = torch.Generator().manual_seed(8)
    for kind in ("pd", "indefinite"):
        B, g, _ = _random_problem(gen, 7, kind)
        for c in (0.01, 4.0, 250.0):
            for radius in (0.1, 1.0, 30.0):
                a = steihaug_toint_pcg(
                    g,
                    lambda v, B=B: B @ v,
                    radius,
                    torch.full((7,), c, dtype=F64),
                    kappa=1e-6,
                    residual_norm="l2",
                )
                b = steihaug_toint_pcg(
                    g, lambda v, B=B: B @ v, radius / math.sqrt(c), torch.ones(7, dtype=F64), kappa=1e-6
                )
                np.testing.assert_allclose(a.step.numpy(), b.step.numpy(), rtol=1e-10, atol=1e-13)
                assert a.exit == b.exit


def test_change_of_variables_boundary_exits():
    """PCG(m) = M^{-1/2} Steihaug(M^{-1/2} g, M^{-1/2} B M^{-1/2}) (SciPy as the spherical oracle)."""
    gen = torch.Generator().manual_seed(9)
    checked = 0
    for trial in range(10):
        B, g, m = _random_problem(gen, 6, ("pd", "indefinite")[trial % 2])
        r = torch.sqrt(m)
        g_hat, B_hat = g / r, B / r[:, None] / r[None, :]
        radius = 0.2
        res = steihaug_toint_pcg(g, lambda v, B=B: B @ v, radius, m, kappa=0.5, max_iter=100, root="best")
        u, hits = _scipy_steihaug(g_hat, B_hat, radius)
        if hits:
            np.testing.assert_allclose(res.step.numpy(), u / r.numpy(), rtol=1e-12, atol=1e-14)
            assert res.hit_boundary
            checked += 1
    assert checked >= 8


def test_jacobi_preconditioner_takes_one_step():
    """Diagonal B with m = diag(B): one Hv, at the Newton step or on the boundary along it."""
    b = torch.tensor([0.5, 3.0, 40.0, 7.0], dtype=F64)
    g = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    newton = -g / b
    big = steihaug_toint_pcg(g, lambda v: b * v, 100.0, b.clone())
    assert big.exit == "converged" and big.hvp_calls == 1
    np.testing.assert_allclose(big.step.numpy(), newton.numpy(), rtol=1e-14)
    small = steihaug_toint_pcg(g, lambda v: b * v, 0.1, b.clone())
    assert small.exit == "boundary" and small.hvp_calls == 1
    np.testing.assert_allclose(small.step.numpy(), (newton * 0.1 / _mnorm(newton, b)).numpy(), rtol=1e-12)


def test_root_best_picks_the_lower_boundary_model_value():
    # Negative curvature on the second direction with a nonzero iterate: the two roots differ.
    B = torch.diag(torch.tensor([2.0, -1.0], dtype=F64))
    B[0, 1] = B[1, 0] = 0.9
    g = torch.tensor([1.0, 0.3], dtype=F64)
    m = torch.ones(2, dtype=F64)
    pos = steihaug_toint_pcg(g, lambda v: B @ v, 1.0, m, kappa=1e-8)
    best = steihaug_toint_pcg(g, lambda v: B @ v, 1.0, m, kappa=1e-8, root="best")
    assert pos.exit == best.exit == "negative_curvature"
    assert pos.iterations == 2
    assert _model(g, B, best.step) <= _model(g, B, pos.step) + 1e-15
    # Brute force over the whole boundary circle confirms both are on it and best is the lower.
    angles = np.linspace(0, 2 * np.pi, 100001)
    circle = np.stack([np.cos(angles), np.sin(angles)])
    assert _mnorm(best.step, m) == pytest.approx(1.0, rel=1e-12)
    assert best.model_change == pytest.approx(_model(g, B, best.step), rel=1e-12)
    assert (
        float(np.min(g.numpy() @ circle + 0.5 * np.sum(circle * (B.numpy() @ circle), 0)))
        <= best.model_change
    )


def test_eq36_stop_rule_in_both_norms():
    gen = torch.Generator().manual_seed(4)
    B, g, m = _random_problem(gen, 15, "pd")
    for norm_name in ("l2", "m_inv"):
        for kappa, theta in ((0.1, 0.5), (0.5, 0.0), (0.01, 1.0)):
            res = steihaug_toint_pcg(
                g,
                lambda v, B=B: B @ v,
                1e6,
                m,
                kappa=kappa,
                theta=theta,
                residual_norm=norm_name,
                max_iter=100,
                record=True,
            )
            assert res.exit == "converged"

            def norm(x, norm_name=norm_name):
                return float(x.norm()) if norm_name == "l2" else math.sqrt(float((x * x / m).sum()))

            tol = norm(g) * min(kappa, norm(g) ** theta)
            residuals = [norm(B @ h["step"] + g) for h in res.history]
            assert residuals[-1] <= tol * (1 + 1e-9)
            assert all(rv > tol * (1 - 1e-9) for rv in residuals[:-1])
            for h, rv in zip(res.history, residuals):
                assert h["residual_norm"] == pytest.approx(rv, rel=1e-8)


def test_model_decrease_stop_rule_of_the_published_configs():
    gen = torch.Generator().manual_seed(12)
    B, g, m = _random_problem(gen, 20, "pd")
    kappa = 0.1
    res = steihaug_toint_pcg(
        g, lambda v: B @ v, 1e3, m, kappa=kappa, stop_rule="model_decrease", max_iter=100, record=True
    )
    assert res.exit == "converged"
    threshold = min(math.sqrt(float(g.norm())), kappa)
    values = [_model(g, B, h["step"]) for h in res.history]
    ratios = [(values[k + 1] - values[k]) / (values[k] - values[0]) for k in range(1, len(values) - 1)]
    assert ratios[-1] <= threshold * (1 + 1e-9)
    assert all(r > threshold * (1 - 1e-9) for r in ratios[:-1])
    eq36 = steihaug_toint_pcg(g, lambda v: B @ v, 1e3, m, kappa=kappa)
    assert eq36.iterations != res.iterations


def test_zero_gradient_max_iter_zero_and_cap():
    B = torch.eye(3, dtype=F64)
    m = torch.ones(3, dtype=F64)
    zero = steihaug_toint_pcg(torch.zeros(3, dtype=F64), lambda v: B @ v, 1.0, m)
    assert zero.exit == "zero_gradient" and zero.hvp_calls == 0 and zero.pred_reduction == 0.0
    g = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    none = steihaug_toint_pcg(g, lambda v: B @ v, 1.0, m, max_iter=0)
    assert none.exit == "max_iter" and none.hvp_calls == 0 and bool((none.step == 0).all())
    gen = torch.Generator().manual_seed(1)
    B2, g2, m2 = _random_problem(gen, 20, "pd")
    capped = steihaug_toint_pcg(g2, lambda v: B2 @ v, 1e6, m2, kappa=0.0, max_iter=3)
    assert capped.exit == "max_iter" and capped.hvp_calls == 3 and capped.iterations == 3
    assert capped.pred_reduction == pytest.approx(-_model(g2, B2, capped.step), rel=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_hvp_stops_with_zero_step(bad):
    calls = {"n": 0}

    def hvp(v):
        calls["n"] += 1
        out = v.clone()
        if calls["n"] == 3:
            out[1] = bad
        return out

    g = torch.tensor([1.0, -2.0, 0.5, 4.0], dtype=F64)
    m = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    B = torch.diag(torch.tensor([1.0, 5.0, 0.1, 3.0], dtype=F64))

    def hvp_b(v):
        return B @ hvp(v) if calls["n"] < 2 else hvp(B @ v)

    res = steihaug_toint_pcg(g, hvp_b, 1e3, m, kappa=0.0, max_iter=10)
    assert res.exit == "nonfinite" and res.pred_reduction == 0.0 and bool((res.step == 0).all())
    assert res.hvp_calls <= 10
    nan_g = steihaug_toint_pcg(torch.tensor([1.0, float("nan")]), lambda v: v, 1.0, torch.ones(2))
    assert nan_g.exit == "nonfinite" and nan_g.hvp_calls == 0


def test_negative_prediction_is_reported_not_hidden():
    out = _finish(torch.ones(2, dtype=F64), torch.ones(2, dtype=F64), +0.25, "boundary", 2, 2, None)
    assert isinstance(out, SubproblemResult)
    assert out.exit == EXIT_MODEL_INCREASE and out.reason == "boundary"
    assert out.pred_reduction == -0.25 and out.hit_boundary


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    gen = torch.Generator().manual_seed(3)
    B, g, m = _random_problem(gen, 50, "indefinite")
    B32, g32, m32 = B.to(dtype), g.to(dtype), m.to(dtype)
    res = steihaug_toint_pcg(g32, lambda v: B32 @ v, 0.5, m32, kappa=0.1)
    ref = steihaug_toint_pcg(g, lambda v: B @ v, 0.5, m, kappa=0.1)
    assert res.step.dtype == dtype and res.exit == ref.exit
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(res.step.double().numpy(), ref.step.numpy(), rtol=tol, atol=tol)
    assert _mnorm(res.step.double(), m) <= 0.5 * (1 + 10 * tol)


def test_input_validation():
    g, m = torch.ones(3), torch.ones(3)

    def hvp(v):
        return v

    with pytest.raises(ValueError, match="radius"):
        steihaug_toint_pcg(g, hvp, -1.0, m)
    with pytest.raises(ValueError, match="kappa"):
        steihaug_toint_pcg(g, hvp, 1.0, m, kappa=1.0)
    with pytest.raises(ValueError, match="theta"):
        steihaug_toint_pcg(g, hvp, 1.0, m, theta=-0.5)
    with pytest.raises(ValueError, match="max_iter"):
        steihaug_toint_pcg(g, hvp, 1.0, m, max_iter=-1)
    with pytest.raises(ValueError, match="stop_rule"):
        steihaug_toint_pcg(g, hvp, 1.0, m, stop_rule="decrease")
    with pytest.raises(ValueError, match="residual_norm"):
        steihaug_toint_pcg(g, hvp, 1.0, m, residual_norm="l1")
    with pytest.raises(ValueError, match="root"):
        steihaug_toint_pcg(g, hvp, 1.0, m, root="negative")
    for bad_m in ([1.0, -1.0, 1.0], [1.0, float("inf"), 1.0], [1.0, float("nan"), 1.0], [0.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="m must be"):
            steihaug_toint_pcg(g, hvp, 1.0, torch.tensor(bad_m))
    with pytest.raises(ValueError, match="entries"):
        steihaug_toint_pcg(g, lambda v: torch.ones(5), 1.0, m)
    with pytest.raises(TypeError, match="hvp"):
        steihaug_toint_pcg(g, None, 1.0, m)
    with pytest.raises(ValueError, match="solver"):
        solve_subproblem("newton", g, hvp, 1.0, m)


def test_dispatcher_selects_the_solver():
    gen = torch.Generator().manual_seed(6)
    B, g, m = _random_problem(gen, 6, "pd")
    a = solve_subproblem("cg", g, lambda v: B @ v, 0.3, m, kappa=0.01)
    b = steihaug_toint_pcg(g, lambda v: B @ v, 0.3, m, kappa=0.01)
    assert torch.equal(a.step, b.step)
    c = solve_subproblem("lanczos", g, lambda v: B @ v, 0.3, m, kappa=0.01)
    assert c.pred_reduction >= a.pred_reduction * (1 - 1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_smoke_matches_cpu(dtype):
    """The solvers and ellipsoids keep the device of their inputs and agree with the CPU."""
    from etr_core.ellipsoids import RMSPropEllipsoid
    from etr_core.subproblem import first_order_tr_step, gltr

    gen = torch.Generator().manual_seed(13)
    B, g, _ = _random_problem(gen, 64, "indefinite")
    cuda = torch.device("cuda")
    ell_cpu, ell_gpu = RMSPropEllipsoid(), RMSPropEllipsoid()
    for k in range(3):
        grad = g * (k + 1)
        ell_cpu.update(grad.to(dtype))
        ell_gpu.update(grad.to(cuda, dtype))
    m_cpu, m_gpu = ell_cpu.diag(), ell_gpu.diag()
    assert m_gpu.device.type == "cuda" and m_gpu.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(m_gpu.cpu().double().numpy(), m_cpu.double().numpy(), rtol=tol)
    Bc, gc = B.to(dtype), g.to(dtype)
    Bg, gg = B.to(cuda, dtype), g.to(cuda, dtype)
    for solver in (steihaug_toint_pcg, gltr):
        for radius in (0.05, 1.0):
            a = solver(gc, lambda v, Bc=Bc: Bc @ v, radius, m_cpu, kappa=0.1, max_iter=20)
            b = solver(gg, lambda v, Bg=Bg: Bg @ v, radius, m_gpu, kappa=0.1, max_iter=20)
            assert b.step.device.type == "cuda" and b.step.dtype == dtype
            assert a.exit == b.exit
            assert b.pred_reduction == pytest.approx(a.pred_reduction, rel=100 * tol)
    fo = first_order_tr_step(gg, m_gpu, 0.3)
    assert fo.step.device.type == "cuda" and fo.step_m_norm == pytest.approx(0.3, rel=tol)


def _roots_decimal(sMs, sMp, pMp, radius):
    """Both roots of pMp t^2 + 2 sMp t + (sMs - radius^2) = 0 with 60 significant digits."""
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    a, b, c = Decimal(pMp), 2 * Decimal(sMp), Decimal(sMs) - Decimal(radius) ** 2
    root = (b * b - 4 * a * c).sqrt()
    return float((-b - root) / (2 * a)), float((-b + root) / (2 * a))


@pytest.mark.parametrize(
    "sMs, sMp, pMp, radius",
    [
        (0.25, 0.1, 2.0, 1.0),
        (0.25, -0.3, 2.0, 1.0),
        (1.0 - 1e-10, 1e8, 1.0, 1.0),  # the textbook formula cancels: tau+ ~ 5e-19
        (1.0 - 1e-10, -1e8, 1.0, 1.0),
        (0.0, 0.0, 4.0, 3.0),
        (1e-30, 1e-20, 1e-12, 1e-6),
    ],
)
def test_boundary_roots_are_cancellation_free(sMs, sMp, pMp, radius):
    from etr_core.subproblem import boundary_roots, boundary_tau

    lo, hi = boundary_roots(sMs, sMp, pMp, radius)
    ref_lo, ref_hi = _roots_decimal(sMs, sMp, pMp, radius)
    assert lo == pytest.approx(ref_lo, rel=1e-14)
    assert hi == pytest.approx(ref_hi, rel=1e-14)
    assert boundary_tau(sMs, sMp, pMp, radius) == hi >= 0.0
    assert boundary_tau(sMs, sMp, pMp, radius, which="negative") == lo <= 0.0


def test_boundary_root_clamps_a_slightly_negative_discriminant():
    from etr_core.subproblem import boundary_roots, boundary_tau

    # s on the boundary (up to rounding, sMs a hair above radius^2) and p tangent to it.
    lo, hi = boundary_roots(1.0 + 4.5e-16, 0.0, 1.0, 1.0)  # b^2 - 4ac = -1.8e-15 before the clamp
    assert math.isfinite(lo) and math.isfinite(hi) and hi == 0.0 and lo == 0.0
    with pytest.raises(ValueError, match="pMp"):
        boundary_tau(0.1, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="which"):
        boundary_tau(0.1, 0.0, 1.0, 1.0, which="both")


def test_denormal_gradient_is_scaled_not_dropped() -> None:
    """g^T M^-1 g underflows for this gradient; the solvers scale g (and B) by a power of two and
    return the closed-form interior minimiser s = -B^-1 g = -g, with m(0) - m(s) = g^T g / 2."""
    import torch

    from etr_core.subproblem import gltr, steihaug_toint_pcg

    g = torch.tensor([1e-160, 0.0], dtype=torch.float64)
    m = torch.tensor([1e10, 1.0], dtype=torch.float64)
    B = torch.eye(2, dtype=torch.float64)
    for solver in (steihaug_toint_pcg, gltr):
        result = solver(g, lambda v: B @ v, 1.0, m)
        assert result.exit == "converged"
        assert result.step[0].item() == pytest.approx(-1e-160, rel=1e-12)
        assert result.step[1].item() == 0.0
        assert result.pred_reduction == pytest.approx(0.5e-320, rel=1e-3)  # a denormal: ~3 digits


@pytest.mark.parametrize("kind", ["pd", "indefinite", "boundary"])
def test_speculative_accelerator_path_equals_the_cpu_path(kind, monkeypatch):
    """The accelerator path (one batched host read per iteration, alpha kept on the device) and the CPU
    path (curvature read first, scalar alpha) are the same algorithm: same exits, steps, decreases."""
    import etr_core.subproblem.steihaug as steihaug_module

    gen = torch.Generator().manual_seed(7)
    d = 30
    Q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    eig = torch.linspace(0.5, 20.0, d, dtype=torch.float64)
    if kind == "indefinite":
        eig[:5] = -torch.linspace(0.1, 2.0, 5, dtype=torch.float64)
    B = Q @ torch.diag(eig) @ Q.T
    g = torch.randn(d, generator=gen, dtype=torch.float64)
    m = torch.rand(d, generator=gen, dtype=torch.float64) + 0.5
    radius = 0.05 if kind == "boundary" else 100.0
    runs = []
    for speculative in (False, True):
        monkeypatch.setattr(steihaug_module, "_speculative_reads", lambda device, s=speculative: s)
        runs.append(steihaug_toint_pcg(g, lambda v: B @ v, radius, m, kappa=1e-10, max_iter=60))
    cpu, accel = runs
    assert cpu.exit == accel.exit and cpu.iterations == accel.iterations and cpu.hvp_calls == accel.hvp_calls
    assert torch.allclose(cpu.step, accel.step, rtol=1e-10, atol=1e-12)
    assert cpu.pred_reduction == pytest.approx(accel.pred_reduction, rel=1e-10)
