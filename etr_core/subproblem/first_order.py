"""The first-order trust-region step (Theorem 1) and the Cauchy point in the M-norm."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from etr_core._validation import check_positive
from etr_core.subproblem._common import (
    check_hvp,
    diagonal_like,
    flat_vector,
    read_hvp,
    trivial_result,
)
from etr_core.subproblem.result import (
    EXIT_BOUNDARY,
    EXIT_CONVERGED,
    EXIT_MODEL_INCREASE,
    EXIT_NONFINITE,
    EXIT_ZERO_GRADIENT,
    SubproblemResult,
)
from etr_core.subproblem.scaling import rescale_result, setup

__all__ = ["cauchy_point", "first_order_tr_step"]


def first_order_tr_step(g: Tensor, m: Tensor, radius: float) -> SubproblemResult:
    """Minimiser of the linear model ``g^T s`` over ``||s||_M <= radius`` (Theorem 1, Eq. 5, 12).

    ``s = -radius M^-1 g / ||g||_{M^-1}`` lies on the boundary and predicts the decrease
    ``radius ||g||_{M^-1}``. With ``radius = eta ||g||_{M^-1}`` it is the preconditioned gradient step
    ``-eta M^-1 g`` (Eq. 4). ``multiplier`` is ``lambda = ||g||_{M^-1} / radius`` of the KKT condition
    ``g + lambda M s = 0`` (Eq. 14 with the constraint written as ``||s||_M^2 <= radius^2``).
    """
    g = flat_vector("g", g)
    radius = check_positive("radius", radius)
    m = diagonal_like(m, g)
    # float16/bfloat16 run in float32, g scaled by a power of two when g^T g would overflow or
    # underflow (the step is scale invariant), the radius capped at a dtype-safe value
    problem, neg_inv_m, gg, gMg, _ = setup(g, None, m, radius)
    if not (math.isfinite(gg) and math.isfinite(gMg)):
        return trivial_result(g, EXIT_NONFINITE, False)
    if gg == 0.0 or gMg == 0.0:
        return trivial_result(g, EXIT_ZERO_GRADIENT, False)
    radius = problem.radius
    dual = math.sqrt(gMg)
    step = problem.g * neg_inv_m
    step.mul_(radius / dual)
    result = SubproblemResult(
        step=step,
        pred_reduction=radius * dual,
        exit=EXIT_BOUNDARY,
        iterations=0,
        hvp_calls=0,
        step_m_norm=float(torch.dot(step, step * problem.m).sqrt()),
        multiplier=dual / radius,
        on_boundary=True,
    )
    return rescale_result(result, problem.scale, problem.out_dtype)


def cauchy_point(g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor, radius: float) -> SubproblemResult:
    """Minimiser of the quadratic model of Eq. 8 along ``-M^-1 g`` inside ``||s||_M <= radius``.

    The preconditioned Cauchy point: the benchmark decrease every TR subproblem solver must match
    (appendix B.2); it equals the first Steihaug-Toint PCG iterate. Costs one Hessian-vector product.
    """
    g_in = flat_vector("g", g)
    hvp = check_hvp(hvp)
    radius = check_positive("radius", radius)
    m = diagonal_like(m, g_in)
    problem, neg_inv_m, gg, gMg, _ = setup(g_in, hvp, m, radius)
    if not (math.isfinite(gg) and math.isfinite(gMg)):
        return trivial_result(g_in, EXIT_NONFINITE, False)
    if gg == 0.0 or gMg == 0.0:
        return trivial_result(g_in, EXIT_ZERO_GRADIENT, False)
    g, hvp, m, radius = problem.g, problem.hvp, problem.m, problem.radius
    p = g * neg_inv_m                       # -M^-1 g; ||p||_M = ||g||_{M^-1}
    curv = float(torch.dot(p, read_hvp(hvp, p)))
    if not math.isfinite(curv):
        out = trivial_result(g_in, EXIT_NONFINITE, False)
        out.hvp_calls = 1
        return out
    t_max = radius / math.sqrt(gMg)
    if curv > 0.0 and gMg / curv < t_max:
        t, exit_reason, on_boundary = gMg / curv, EXIT_CONVERGED, False
    else:
        t, exit_reason, on_boundary = t_max, EXIT_BOUNDARY, True
    pred = t * gMg - 0.5 * t * t * curv     # -(t g^T p + 1/2 t^2 p^T B p), g^T p = -gMg
    reason = None
    if not (math.isfinite(pred) and pred >= 0.0):
        reason, exit_reason = exit_reason, EXIT_MODEL_INCREASE
    step = p.mul_(t)
    result = SubproblemResult(
        step=step,
        pred_reduction=pred,
        exit=exit_reason,
        iterations=1,
        hvp_calls=1,
        step_m_norm=float(torch.dot(step, step * m).sqrt()),
        on_boundary=on_boundary,
        reason=reason,
    )
    return rescale_result(result, problem.scale, problem.out_dtype)
