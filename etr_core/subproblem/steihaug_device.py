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

import os
import warnings
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

__all__ = ["CG_LOOPS", "cg_loop", "cg_update", "iterate_without_sync", "update_for"]

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


def cg_update(
    p: Tensor, q: Tensor, r: Tensor, s: Tensor, gamma: Tensor, sMs: Tensor, sMp: Tensor, pMp: Tensor,
    change: Tensor, code: Tensor, iterations: Tensor, neg_inv_m: Tensor, radius_sq: Tensor, tol: Tensor,
    more: Tensor, l2: bool,
) -> tuple[Tensor, ...]:
    """One PCG iteration after its Hessian-vector product ``q = B p``, every decision on the device.

    Vectors ``p, q, r, s, neg_inv_m``: shape (d,); the rest 0-dim tensors (``code``, ``iterations``
    int64). ``more``: 0-dim bool, another iteration may follow (``k < max_iter - 1``; a tensor so that
one compiled graph serves every iteration); ``l2``: the residual norm
    is l2 (else ``M^-1``). A pure function of its arguments, so ``torch.compile`` fuses it into a
    few kernels (:func:`update_for`). Returns ``(s, r, p, gamma, sMs, sMp, pMp, change, code,
    iterations)``.
    """
    zero = torch.zeros_like(gamma)
    active = code == _RUNNING
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
    rr = torch.dot(r_next, r_next) if l2 else gamma_next
    bad = active & (~finite | (interior & ~(torch.isfinite(gamma_next) & torch.isfinite(rr))))
    interior = interior & ~bad
    converged = interior & ((gamma_next == 0) | (rr.clamp_min(0.0).sqrt() <= tol))
    coef = torch.where(to_boundary, tau, torch.where(interior, alpha, zero))
    s = torch.addcmul(s, p, coef)
    piece = torch.where(to_boundary, tau * rp + 0.5 * tau * tau * curv, -0.5 * alpha * gamma)
    change = torch.where(to_boundary | interior, change + piece, change)
    iterations = iterations + active.to(torch.int64)
    carry_on = interior & ~converged & more
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
    return s, r, p, gamma, sMs, sMp, pMp, change, code, iterations


_COMPILED: dict[str, Callable[..., tuple[Tensor, ...]]] = {}
CG_LOOPS = ("host", "device", "compiled")


def cg_loop() -> str:
    """The CG loop ``$ETR_CG_LOOP`` asks for: ``host`` (default), ``device`` or ``compiled``.

    Raises ``ValueError`` naming the variable for any other value.
    """
    value = os.environ.get("ETR_CG_LOOP", "host").strip().lower() or "host"
    if value not in CG_LOOPS:
        choices = ", ".join(CG_LOOPS)
        raise ValueError(f"ETR_CG_LOOP must be one of {choices}; got {value!r} (unset it for host)")
    return value


def update_for(device: torch.device) -> Callable[..., tuple[Tensor, ...]]:
    """The iteration update for ``device``: :func:`cg_update`, compiled on CUDA with ``ETR_CG_LOOP=compiled``.

    Eager, one iteration is about 110 small kernels (each 0-dim decision is one), which on a GPU
    costs more launch time than the Hessian-vector product of a small network; compiled it is a few
    fused kernels (the first call compiles, a few seconds). A compilation that fails falls back to
    the eager update for the rest of the process, with one warning.
    """
    if device.type != "cuda" or cg_loop() != "compiled":
        return cg_update
    fn = _COMPILED.get("cuda")
    if fn is None:
        fn = _COMPILED["cuda"] = _compiled_or_eager(torch.compile(cg_update, dynamic=False, fullgraph=True))
    return fn


def _compiled_or_eager(compiled: Callable[..., tuple[Tensor, ...]]) -> Callable[..., tuple[Tensor, ...]]:
    def run(*args, **kwargs):
        fn = _COMPILED.get("cuda_ok", compiled)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a compiler problem (no triton, an unsupported dtype): stay eager
            if fn is cg_update:
                raise
            warnings.warn(f"compiled CG update unavailable ({type(exc).__name__}: {exc}); eager update used",
                          RuntimeWarning, stacklevel=2)
            _COMPILED["cuda_ok"] = cg_update
            return cg_update(*args, **kwargs)

    return run


def iterate_without_sync(
    g: Tensor, hvp: Callable[[Tensor], Tensor], radius: float, m: Tensor, neg_inv_m: Tensor,
    gamma0: float, p: Tensor, *, max_iter: int, residual_norm: str, tol: float, check_every: int = 4,
    update: Callable[..., tuple[Tensor, ...]] | None = None,
) -> tuple[Tensor, float, str, int, int]:
    """PCG iterations from ``p = -M^-1 g`` on the (scaled) problem with device-side decisions.

    ``g``, ``m``, ``neg_inv_m = -1/m``, ``p``: flat tensors of shape (d,); ``gamma0 = g^T M^-1 g``;
    ``tol``: the Eq. 36 threshold on ``||r||`` (l2 or M^-1 as ``residual_norm``); ``update``: the
    iteration update (default :func:`update_for` the device). Returns ``(s, model_change, exit,
    iterations, hvp_calls)``; reads the device ``ceil(k / check_every) + 1`` times for ``k`` loop
    iterations."""
    dev, dt = g.device, g.dtype
    step = update or update_for(dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    radius_sq = torch.full((), radius * radius, dtype=dt, device=dev)
    tol_t = torch.full((), tol, dtype=dt, device=dev)
    s = torch.zeros_like(g)
    r = g.clone()
    p = p.clone()
    gamma = torch.full((), gamma0, dtype=dt, device=dev)
    sMs, sMp, pMp, change = zero.clone(), zero.clone(), gamma.clone(), zero.clone()
    code = torch.full((), _RUNNING, dtype=torch.int64, device=dev)
    iterations = torch.zeros((), dtype=torch.int64, device=dev)
    hvp_calls = 0
    l2 = residual_norm == "l2"
    more, last = torch.ones((), dtype=torch.bool, device=dev), torch.zeros((), dtype=torch.bool, device=dev)
    for k in range(max_iter):
        q = hvp(p)
        hvp_calls += 1
        s, r, p, gamma, sMs, sMp, pMp, change, code, iterations = step(
            p, q, r, s, gamma, sMs, sMp, pMp, change, code, iterations, neg_inv_m, radius_sq, tol_t,
            more if k < max_iter - 1 else last, l2,
        )
        if (k + 1) % check_every == 0 and bool(code != _RUNNING):  # the one host read of a window
            break
    final = int(code)
    return s, float(change), EXIT_NAMES.get(final, EXIT_MAX_ITER), int(iterations), hvp_calls
