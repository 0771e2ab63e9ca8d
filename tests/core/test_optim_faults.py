"""Faults inside one trust-region step: overflow, denormals, low precision, non-finite curvature,
unsupported parameters. Every expected value comes from a closed form or from torch itself.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from etr_core.ellipsoids import RMSPropEllipsoid, m_inv_norm, m_norm, make_ellipsoid
from etr_core.hvp import flat_grad, grad_with_graph
from etr_core.subproblem import cauchy_point, first_order_tr_step, gltr, steihaug_toint_pcg
from etr_core.subproblem.scaling import safe_norm, safe_radius

F32, F64 = torch.float32, torch.float64
KRYLOV = [steihaug_toint_pcg, gltr]


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
