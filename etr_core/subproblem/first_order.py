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
    initial_scalars,
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
    neg_inv_m, gg, gMg, _ = initial_scalars(g, m)
    if not (math.isfinite(gg) and math.isfinite(gMg)):
        return trivial_result(g, EXIT_NONFINITE, False)
    if gg == 0.0 or gMg == 0.0:  # gMg underflows to 0 for denormal gradients: no usable direction
        return trivial_result(g, EXIT_ZERO_GRADIENT, False)
    dual = math.sqrt(gMg)
    step = g * neg_inv_m
    step.mul_(radius / dual)
    return SubproblemResult(
        step=step,
        pred_reduction=radius * dual,
        exit=EXIT_BOUNDARY,
        iterations=0,
        hvp_calls=0,
        step_m_norm=float(torch.dot(step, step * m).sqrt()),
        multiplier=dual / radius,
        on_boundary=True,
    )


def cauchy_point(g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor, radius: float) -> SubproblemResult:
    """Minimiser of the quadratic model of Eq. 8 along ``-M^-1 g`` inside ``||s||_M <= radius``.

    The preconditioned Cauchy point: the benchmark decrease every TR subproblem solver must match
    (appendix B.2); it equals the first Steihaug-Toint PCG iterate. Costs one Hessian-vector product.
    """
    g = flat_vector("g", g)
    hvp = check_hvp(hvp)
    radius = check_positive("radius", radius)
    m = diagonal_like(m, g)
    neg_inv_m, gg, gMg, _ = initial_scalars(g, m)
    if not (math.isfinite(gg) and math.isfinite(gMg)):
        return trivial_result(g, EXIT_NONFINITE, False)
    if gg == 0.0 or gMg == 0.0:  # gMg underflows to 0 for denormal gradients: no usable direction
        return trivial_result(g, EXIT_ZERO_GRADIENT, False)
    p = g * neg_inv_m                       # -M^-1 g; ||p||_M = ||g||_{M^-1}
    curv = float(torch.dot(p, read_hvp(hvp, p)))
    if not math.isfinite(curv):
        out = trivial_result(g, EXIT_NONFINITE, False)
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
    return SubproblemResult(
        step=step,
        pred_reduction=pred,
        exit=exit_reason,
        iterations=1,
        hvp_calls=1,
        step_m_norm=float(torch.dot(step, step * m).sqrt()),
        on_boundary=on_boundary,
        reason=reason,
    )
