"""Faults inside one trust-region step: overflow, denormals, low precision, non-finite curvature,
unsupported parameters. Every expected value comes from a closed form or from torch itself.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from etr_core.ellipsoids import RMSPropEllipsoid, m_inv_norm, m_norm, make_ellipsoid
from etr_core.hvp import flat_grad, grad_with_graph
from etr_core.optim import EllipsoidalTR, FirstOrderTR
from etr_core.subproblem import cauchy_point, first_order_tr_step, gltr, steihaug_toint_pcg
from etr_core.subproblem.scaling import safe_norm, safe_radius

F32, F64 = torch.float32, torch.float64
KRYLOV = [steihaug_toint_pcg, gltr]
ELLIPSOIDS = ["uniform", "adagrad", "rms"]


def cauchy(g, hvp, radius, m):
    """``cauchy_point`` with the Krylov solvers' argument order."""
    return cauchy_point(g, hvp, m, radius)


# --- the subproblem solvers ----------------------------------------------------------------------
@pytest.mark.parametrize("solver", KRYLOV)
def test_huge_float32_gradient_is_scaled_not_reported_nonfinite(solver):
    """||g|| = 5e19 overflows g^T g in float32. B = diag(1e20, 2e20), m = 1, radius 10: the interior
    minimiser is -B^-1 g = (-0.3, -0.2) with m(0) - m(s) = g^T B^-1 g / 2 = 8.5e18."""
    g = torch.tensor([3e19, 4e19], dtype=F32)
    b = torch.tensor([1e20, 2e20], dtype=F32)
    result = solver(g, lambda v: b * v, 10.0, torch.ones(2, dtype=F32))
    assert result.exit == "converged"
    assert result.step.dtype == F32
    torch.testing.assert_close(result.step, torch.tensor([-0.3, -0.2]), rtol=1e-5, atol=0)
    assert result.pred_reduction == pytest.approx(8.5e18, rel=1e-5)


def test_huge_float32_gradient_first_order_and_cauchy_steps():
    """Theorem 1 with m = 1: s = -radius g / ||g|| = (-0.06, -0.08), decrease radius ||g|| = 5e18.
    The Cauchy point with B = 0 is the same boundary step."""
    g = torch.tensor([3e19, 4e19], dtype=F32)
    m = torch.ones(2, dtype=F32)
    fo = first_order_tr_step(g, m, 0.1)
    torch.testing.assert_close(fo.step, torch.tensor([-0.06, -0.08]), rtol=1e-6, atol=0)
    assert fo.pred_reduction == pytest.approx(5e18, rel=1e-6)
    cp = cauchy_point(g, lambda v: torch.zeros_like(v), m, 0.1)
    torch.testing.assert_close(cp.step, torch.tensor([-0.06, -0.08]), rtol=1e-6, atol=0)
    assert cp.pred_reduction == pytest.approx(5e18, rel=1e-6)


@pytest.mark.parametrize("solver", [*KRYLOV, cauchy])
def test_positive_denormal_curvature_goes_to_the_boundary(solver):
    """B = 1e-320 I (positive, denormal): alpha = gamma / curvature overflows. The model is linear to
    within 1e-320, so the minimiser is the boundary point -radius g / ||g|| = (-2, 0), decrease 2."""
    g = torch.tensor([1.0, 0.0], dtype=F64)
    result = solver(g, lambda v: 1e-320 * v, 2.0, torch.ones(2, dtype=F64))
    assert result.exit in ("boundary", "negative_curvature")
    torch.testing.assert_close(result.step, torch.tensor([-2.0, 0.0], dtype=F64), rtol=1e-12, atol=0)
    assert result.pred_reduction == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("solver", [*KRYLOV, cauchy])
@pytest.mark.parametrize("radius", [1e28, 1e30, 1e38])
def test_radius_beyond_float32_range_is_capped_not_raised(solver, radius):
    """Negative curvature sends the step to the boundary; a radius of 1e28..1e38 in float32 is capped at
    safe_radius (2^56) and the step is that boundary point along -g: finite, M-norm = the cap."""
    g = torch.tensor([1.0, 1.0], dtype=F32)
    result = solver(g, lambda v: -v, radius, torch.ones(2, dtype=F32))
    cap = safe_radius(F32)
    assert cap == 2.0**56
    assert bool(torch.isfinite(result.step).all())
    expected = torch.full((2,), -cap / math.sqrt(2.0))
    torch.testing.assert_close(result.step, expected, rtol=1e-6, atol=0)
    assert result.step_m_norm == pytest.approx(cap, rel=1e-6)


def test_first_order_step_with_radius_beyond_float32_range_is_capped():
    g = torch.tensor([3.0, 4.0], dtype=F32)
    result = first_order_tr_step(g, torch.ones(2, dtype=F32), 1e35)
    cap = safe_radius(F32)
    torch.testing.assert_close(result.step, torch.tensor([-0.6, -0.8]) * cap, rtol=1e-6, atol=0)
    assert result.pred_reduction == pytest.approx(5.0 * cap, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("solver", KRYLOV)
def test_half_precision_problem_is_solved_in_float32(dtype, solver):
    """B = I, m = 1, radius 1: s = -g, decrease |g|^2 / 2, step handed back in the input dtype."""
    g = torch.tensor([1e-3, 2e-3], dtype=dtype)
    seen = []

    def hvp(v):
        seen.append(v.dtype)
        return v.clone()

    result = solver(g, hvp, 1.0, torch.ones(2, dtype=dtype))
    assert set(seen) == {dtype}  # the products run in the parameters' dtype
    assert result.step.dtype == dtype
    torch.testing.assert_close(result.step, -g, rtol=1e-2, atol=0)
    g64 = g.to(F64)
    assert result.pred_reduction == pytest.approx(0.5 * float(g64 @ g64), rel=1e-4)


def test_safe_norm_and_m_norms_do_not_overflow():
    x = torch.tensor([3e19, 4e19], dtype=F32)
    assert float(torch.linalg.vector_norm(x)) == math.inf  # what torch gives
    assert safe_norm(x) == pytest.approx(5e19, rel=1e-6)
    m = torch.tensor([1.0, 4.0])
    assert float(m_norm(x, m)) == pytest.approx(math.sqrt(9e38 + 4 * 16e38), rel=1e-6)
    assert float(m_inv_norm(x, m)) == pytest.approx(math.sqrt(9e38 + 16e38 / 4), rel=1e-6)
    tiny = torch.tensor([3e-30, 4e-30], dtype=F32)
    assert safe_norm(tiny) == pytest.approx(5e-30, rel=1e-6)
    assert math.isnan(safe_norm(torch.tensor([1.0, float("nan")])))
    assert safe_norm(torch.zeros(3)) == 0.0


# --- the ellipsoids ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["adagrad", "rms"])
def test_low_precision_ellipsoid_keeps_a_positive_floor(dtype, name):
    """eps = 1e-10 rounds to 0 in float16; the accumulator runs in float32, so a coordinate with zero
    gradient keeps m = sqrt(eps) = 1e-5 (float16 holds it as a subnormal, ~3 digits)."""
    ell = make_ellipsoid(name, eps=1e-10)
    g = torch.tensor([0.0, 2.0], dtype=dtype)
    ell.update(g)
    m = ell.diag(like=g)
    assert m.dtype == dtype and bool((m > 0).all())
    assert float(m[0]) == pytest.approx(1e-5, rel=1e-2)
    weight = 1.0 if name == "adagrad" else 0.2  # (1 - beta) with beta = 0.8
    assert float(m[1]) == pytest.approx(math.sqrt(weight * 4.0 + 1e-10), rel=1e-2)


def test_ellipsoid_saturates_instead_of_overflowing():
    """g_i^2 overflows float32 for |g_i| > 1.8e19: m_i saturates at sqrt(finfo.max), finite."""
    ell = RMSPropEllipsoid()
    ell.update(torch.tensor([1e20, 1.0], dtype=F32))
    m = ell.diag()
    assert bool(torch.isfinite(m).all())
    assert float(m[0]) == pytest.approx(math.sqrt(torch.finfo(F32).max), rel=1e-6)
    assert float(m[1]) == pytest.approx(math.sqrt(0.2 + 1e-10), rel=1e-6)


def test_eps_below_the_dtype_range_still_floors():
    """eps = 1e-50 underflows in float32; the floor sqrt(eps) = 1e-25 is representable and applied."""
    ell = make_ellipsoid("rms", eps=1e-50)
    ell.update(torch.zeros(2, dtype=F32))
    assert torch.all(ell.diag() == torch.tensor(1e-25, dtype=F32))


# --- unsupported parameters and graphs -----------------------------------------------------------
def test_sparse_gradient_is_a_clear_type_error():
    emb = nn.Embedding(10, 3, sparse=True)
    loss = emb(torch.tensor([1, 2])).pow(2).sum()
    with pytest.raises(TypeError, match=r"params\[0\].*sparse gradient.*sparse=False"):
        flat_grad(loss, [emb.weight])


def test_frozen_parameter_is_a_constant_only_when_allowed():
    a = torch.ones(2, requires_grad=True)
    b = torch.full((3,), 2.0)  # frozen
    loss = (a * a).sum() + b.sum()
    with pytest.raises(ValueError, match=r"params\[1\].*does not require grad"):
        flat_grad(loss, [a, b])
    g, hvp = grad_with_graph((a * a).sum() * 1.0, [a, b], allow_frozen=True)
    torch.testing.assert_close(g, torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(hvp(torch.ones(5)), torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0]))


def test_complex_parameter_is_a_clear_type_error():
    z = torch.ones(2, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(TypeError, match=r"params\[0\].*complex.*real"):
        flat_grad(z.abs().sum(), [z])


# --- the optimisers ------------------------------------------------------------------------------
def _quiet_steps(opt, closure, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(n):
            opt.step(closure)


@pytest.mark.parametrize("ellipsoid", ELLIPSOIDS)
def test_nan_curvature_with_finite_gradient_still_trains(ellipsoid):
    """An unsquared norm penalty on a zero-initialised tensor: its gradient at 0 is finite (0), its
    Hessian-vector product NaN. EllipsoidalTR falls back to Theorem 1's step, warns once, counts
    every fallback, and trains like FirstOrderTR does on the same loss."""
    X, y = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 3

    def task():
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        z = nn.Parameter(torch.zeros(4))
        return model, z, lambda: nn.functional.cross_entropy(model(X), y) + 0.1 * torch.linalg.vector_norm(z)

    model, z, closure = task()
    start = float(closure().detach())
    opt = EllipsoidalTR([*model.parameters(), z], ellipsoid=ellipsoid, radius=0.05)
    with pytest.warns(RuntimeWarning, match="Hessian-vector product was NaN/Inf") as caught:
        for _ in range(40):
            opt.step(closure)
    assert sum("NaN/Inf" in str(w.message) for w in caught) == 1  # warned once
    assert opt.fault_counts["hvp_fallback"] == 40  # every step: ||z|| has NaN curvature at z = 0
    assert opt.counters["accepted"] >= 10
    tr_loss = float(closure().detach())
    ref_model, ref_z, ref_closure = task()
    ref = FirstOrderTR([*ref_model.parameters(), ref_z], ellipsoid=ellipsoid, radius=0.05)
    _quiet_steps(ref, ref_closure, 40)
    assert tr_loss < start - 0.1
    assert tr_loss <= float(ref_closure().detach()) + 0.05


@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_denormal_positive_curvature_steps_to_the_boundary(opt_cls):
    """f(w) = sum(w) + 0.5e-320 |w|^2 in float64: curvature 1e-320 > 0 (denormal). The step is the
    boundary point -radius g / ||g|| of the uniform region, accepted with rho = 1."""
    w = nn.Parameter(torch.zeros(4, dtype=F64))
    opt = opt_cls([w], ellipsoid="uniform", radius=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: w.sum() + 0.5e-320 * (w * w).sum())
    rec = opt.last_step
    assert rec.fault is None and rec.accepted and rec.rho == pytest.approx(1.0)
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.25, dtype=F64))


@pytest.mark.parametrize("ellipsoid", ELLIPSOIDS)
@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_huge_finite_float32_gradient_is_not_a_fault(opt_cls, ellipsoid):
    """f(w) = 1e20 sum(w) + 1e20 |w|^2 / 2 in float32: ||g|| = 2e20 at w = 0 overflows a float32 norm.
    All m_i are equal (1 for the sphere; g_i^2 = 1e40 saturates the accumulators, m_i = sqrt(finfo.max)),
    so Theorem 1's boundary step is s_i = -radius / (2 sqrt(m)) per entry, accepted."""
    w = nn.Parameter(torch.zeros(4, dtype=F32))
    opt = opt_cls([w], ellipsoid=ellipsoid, radius=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: 1e20 * w.sum() + 0.5e20 * (w * w).sum())
    rec = opt.last_step
    assert rec.fault is None and rec.accepted
    assert rec.grad_norm == pytest.approx(2e20, rel=1e-6)
    m = 1.0 if ellipsoid == "uniform" else math.sqrt(torch.finfo(F32).max)
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.1 / (2 * math.sqrt(m))), rtol=1e-5, atol=0)


def test_eta_rule_with_huge_gradient_is_preconditioned_gradient_descent():
    """radius_rule='eta' with ||g||_{M^-1} above the float32 range: the step is still -lr M^-1 g."""
    w = nn.Parameter(torch.zeros(4, dtype=F32))
    opt = FirstOrderTR([w], ellipsoid="uniform", radius_rule="eta", lr=1e-21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: 1e20 * w.sum())
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_radius_beyond_the_float32_range_is_capped_and_counted(opt_cls):
    """Negative curvature everywhere (f = -|w|^2 + sum w) sends every step to the boundary; a radius of
    1e29 would overflow float32 steps. It is capped at safe_radius (2^56), counted, and nothing raises."""
    w = nn.Parameter(torch.zeros(3, dtype=F32))
    opt = opt_cls([w], ellipsoid="uniform", radius=1e29, max_radius=1e30)
    with pytest.warns(RuntimeWarning, match="capped"):
        opt.step(lambda: w.sum() - (w * w).sum())
    assert opt.fault_counts["radius_capped"] == 1
    assert opt.last_step.radius_before == safe_radius(F32)
    assert bool(torch.isfinite(w).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_low_precision_parameters_train_with_the_rms_ellipsoid(opt_cls, dtype):
    """float16 / bfloat16 parameters: the first step no longer crashes on eps = 1e-10 -> 0, and ten
    steps of TR_rms on a linear least-squares problem lower the loss."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(32, 4, generator=gen)
    b = A @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    w = nn.Parameter(torch.zeros(4, dtype=dtype))
    A, b = A.to(dtype), b.to(dtype)

    def closure():
        return ((A @ w - b) ** 2).mean()

    start = float(closure())
    opt = opt_cls([w], ellipsoid="rms", radius=0.1)
    _quiet_steps(opt, closure, 10)
    assert opt.counters["accepted"] >= 5
    assert float(closure()) < 0.7 * start
    assert w.dtype == dtype and bool(torch.isfinite(w).all())


@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_sparse_embedding_gradient_is_a_clear_error(opt_cls):
    emb = nn.Embedding(10, 3, sparse=True)
    opt = opt_cls(emb.parameters())
    with pytest.raises(TypeError, match=r"params\[0\].*sparse gradient.*sparse=False"):
        opt.step(lambda: emb(torch.tensor([1, 2])).pow(2).sum())


@pytest.mark.parametrize("opt_cls", [EllipsoidalTR, FirstOrderTR])
def test_complex_parameter_is_refused_at_construction(opt_cls):
    z = nn.Parameter(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"params\[0\].*complex"):
        opt_cls([z])


def _compiled_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    X, y = torch.randn(16, 4), torch.arange(16) % 2
    return model, torch.compile(model, backend="aot_eager"), X, y


@pytest.mark.slow
def test_compiled_model_names_the_supported_path():
    """torch.compile'd graphs cannot be differentiated twice: the error names hessian_closure and the
    uncompiled model; that path (compiled closure for loss and gradient, uncompiled forward for the
    Hessian products, same parameters) trains. (torch warns that a compiled module called while a
    global module hook is registered fires it twice; the step's buffer snapshot is idempotent.)"""
    model, compiled, X, y = _compiled_task()
    opt = EllipsoidalTR(model.parameters(), radius=0.05)
    with pytest.raises(TypeError, match=r"hessian_closure.*before torch\.compile"):
        opt.step(lambda: nn.functional.cross_entropy(compiled(X), y))
    with torch.no_grad():
        start = float(nn.functional.cross_entropy(model(X), y))
    for _ in range(5):
        opt.step(
            lambda: nn.functional.cross_entropy(compiled(X), y),
            hessian_closure=lambda: nn.functional.cross_entropy(model(X), y),
        )
    assert opt.counters["accepted"] >= 3
    with torch.no_grad():
        assert float(nn.functional.cross_entropy(model(X), y)) < start


def test_double_backward_error_is_rewritten_with_the_way_out():
    """A stand-in for a compiled graph (fast, no compiler): a gradient whose own backward raises
    torch's aot_autograd message. The optimiser re-raises it as a TypeError naming hessian_closure."""

    class Refuses(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("torch.compile with aot_autograd does not currently support double backward")

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return Refuses.apply(2 * x * grad)

    w = nn.Parameter(torch.ones(3))
    opt = EllipsoidalTR([w], radius=0.1)
    with pytest.raises(TypeError, match=r"hessian_closure.*before torch\.compile") as info:
        opt.step(lambda: Square.apply(w).sum())
    assert "does not currently support double backward" in str(info.value.__cause__)
