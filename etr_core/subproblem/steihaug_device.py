"""Steihaug-Toint PCG without a host synchronisation per iteration (for accelerators).

:func:`etr_core.subproblem.steihaug.steihaug_toint_pcg` reads three scalars back to the host in every
iteration to decide "negative curvature / boundary / continue / converged"; on a GPU each read is a
synchronisation that stalls the queue between Hessian-vector products. Here every scalar (curvature,
alpha, the M-norm recurrences ``s^T M s``, ``s^T M p``, ``p^T M p``, the model change) stays on the
device, every decision is a 0-dim boolean mask applied with ``torch.where``, and the loop reads one
flag ("still running?") every ``check_every`` iterations. Iterations after the exit inside a window
run their Hessian-vector product but change nothing (at most ``check_every - 1`` wasted products,
reported in ``hvp_calls``; ``iterations`` counts the effective ones).

The arithmetic is the host path's (paper Eq. 8 and Eq. 36 in the M-norm; boundary root along ``p``
at negative curvature or when the next iterate leaves the region, the positive root in the stable
form of :func:`etr_core.subproblem.boundary.boundary_roots`, the model change by the CG recurrence
and ``tau r^T p + 1/2 tau^2 p^T B p`` for the final piece), so both give the same step to rounding
(tested). Supported: ``stop_rule="residual"`` and ``root="positive"``; the solver falls back to the
host path otherwise (and for ``record=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from etr_core.subproblem.result import (
    EXIT_BOUNDARY,
    EXIT_CONVERGED,
    EXIT_MAX_ITER,
    EXIT_NEGATIVE_CURVATURE,
    EXIT_NONFINITE,
)

__all__ = ["iterate_without_sync"]

# exit codes kept on the device while the loop runs
_RUNNING, _CONVERGED, _BOUNDARY, _NEGATIVE, _NONFINITE, _MAX_ITER = range(6)
EXIT_NAMES = {
    _CONVERGED: EXIT_CONVERGED, _BOUNDARY: EXIT_BOUNDARY, _NEGATIVE: EXIT_NEGATIVE_CURVATURE,
    _NONFINITE: EXIT_NONFINITE, _MAX_ITER: EXIT_MAX_ITER,
}


def _positive_root(sMs: Tensor, sMp: Tensor, pMp: Tensor, radius_sq: float) -> Tensor:
    """Larger root of ``pMp tau^2 + 2 sMp tau + (sMs - radius^2) = 0`` (stable form; >= 0 inside)."""
    c = sMs - radius_sq
    disc = (sMp * sMp - pMp * c).clamp_min(0.0).sqrt()
    aux = -(sMp + torch.where(sMp >= 0, disc, -disc))   # -(b/2 + sign(b) sqrt(disc)), b = 2 sMp
    t1 = aux / pMp
    t2 = torch.where(aux != 0, c / aux, torch.zeros_like(aux))
    return torch.maximum(torch.maximum(t1, t2), torch.zeros_like(t1))


def iterate_without_sync(
    g: Tensor, hvp: Callable[[Tensor], Tensor], radius: float, m: Tensor, neg_inv_m: Tensor,
    gamma0: float, p: Tensor, *, max_iter: int, residual_norm: str, tol: float, check_every: int = 4,
) -> tuple[Tensor, float, str, int, int]:
    """PCG iterations from ``p = -M^-1 g`` on the (scaled) problem with device-side decisions.

    ``g``, ``m``, ``neg_inv_m = -1/m``, ``p``: flat tensors of shape (d,); ``gamma0 = g^T M^-1 g``;
    ``tol``: the Eq. 36 threshold on ``||r||`` (l2 or M^-1 as ``residual_norm``). Returns
    ``(s, model_change, exit, iterations, hvp_calls)``; reads the device ``ceil(k / check_every) + 1``
    times for ``k`` loop iterations."""
    dev, dt = g.device, g.dtype
    zero = torch.zeros((), dtype=dt, device=dev)
    radius_sq = radius * radius
    s = torch.zeros_like(g)
    r = g.clone()
    p = p.clone()
    gamma = torch.full((), gamma0, dtype=dt, device=dev)
    sMs, sMp, pMp, change = zero.clone(), zero.clone(), gamma.clone(), zero.clone()
    code = torch.full((), _RUNNING, dtype=torch.int64, device=dev)
    iterations = torch.zeros((), dtype=torch.int64, device=dev)
    hvp_calls = 0
    for k in range(max_iter):
        active = code == _RUNNING
        q = hvp(p)
        hvp_calls += 1
        curv = torch.dot(p, q)
        rp = torch.dot(r, p)
        finite = torch.isfinite(curv) & torch.isfinite(q).all()
        negative = curv <= 0
        alpha = gamma / curv
        sMs_next = sMs + 2.0 * alpha * sMp + alpha * alpha * pMp
        leaves = ~negative & ~(torch.isfinite(alpha) & (sMs_next < radius_sq))
        to_boundary = active & finite & (negative | leaves)
        interior = active & finite & ~(negative | leaves)
        tau = _positive_root(sMs, sMp, pMp, radius_sq)
        r_next = torch.addcmul(r, alpha, q)
        w = r_next * neg_inv_m
        gamma_next = -torch.dot(r_next, w)
        rr = torch.dot(r_next, r_next) if residual_norm == "l2" else gamma_next
        bad = active & (~finite | (interior & ~(torch.isfinite(gamma_next) & torch.isfinite(rr))))
        interior = interior & ~bad
        converged = interior & ((gamma_next == 0) | (rr.clamp_min(0.0).sqrt() <= tol))
        coef = torch.where(to_boundary, tau, torch.where(interior, alpha, zero))
        s.addcmul_(p, coef)
        piece = torch.where(to_boundary, tau * rp + 0.5 * tau * tau * curv, -0.5 * alpha * gamma)
        change = torch.where(to_boundary | interior, change + piece, change)
        iterations = iterations + active.to(torch.int64)
        carry_on = interior & ~converged & (k < max_iter - 1)
        beta = gamma_next / gamma
        sMs = torch.where(interior, sMs_next, sMs)
        r = torch.where(interior, r_next, r)
        sMp = torch.where(carry_on, beta * (sMp + alpha * pMp), sMp)
        pMp = torch.where(carry_on, gamma_next + beta * beta * pMp, pMp)
        p = torch.where(carry_on, torch.addcmul(w, p, beta), p)
        gamma = torch.where(carry_on, gamma_next, gamma)
        code = torch.where(
            bad, _NONFINITE,
            torch.where(to_boundary & negative, _NEGATIVE,
                        torch.where(to_boundary, _BOUNDARY, torch.where(converged, _CONVERGED, code))),
        )
        if (k + 1) % check_every == 0 and bool(code != _RUNNING):  # the one host read of a window
            break
    final = int(code)
    return s, float(change), EXIT_NAMES.get(final, EXIT_MAX_ITER), int(iterations), hvp_calls
