"""Preconditioned Steihaug-Toint conjugate gradients in the M-norm (paper Eq. 8, 36, appendix B.2).

The same diagonal ``m`` is the trust-region norm and the CG preconditioner. That is what makes the
M-norms of the iterates increase monotonically (Steihaug's theorem in the variables
``M^{1/2} s``), so the first iterate to leave the region marks the boundary crossing.

Cost per iteration: one Hessian-vector product, about eight passes over length-d vectors in
preallocated buffers, and one host read (curvature, new ``r^T M^-1 r`` and ``||r||^2`` are read
together). The residual update for iteration k is computed speculatively before that read, so the
decision "negative curvature / boundary / continue / converged" needs no second read; the work is
wasted only at the exit iteration.

The model change ``m(s) - m(0)`` is tracked by the CG recurrence ``-1/2 alpha gamma`` (no extra
Hessian-vector product). The final piece to the boundary uses the exact ``r^T p`` (one dot at the
exit) instead of assuming ``r^T p = -gamma``. A negative predicted decrease is reported as
``exit="model_increase"``, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from etr_core._validation import check_choice
from etr_core.subproblem._common import (
    check_hvp,
    check_solver_options,
    diagonal_like,
    flat_vector,
    read_hvp,
    trivial_result,
)
from etr_core.subproblem.boundary import boundary_roots
from etr_core.subproblem.result import (
    EXIT_BOUNDARY,
    EXIT_CONVERGED,
    EXIT_MAX_ITER,
    EXIT_MODEL_INCREASE,
    EXIT_NEGATIVE_CURVATURE,
    EXIT_NONFINITE,
    EXIT_ZERO_GRADIENT,
    SubproblemResult,
)
from etr_core.subproblem.scaling import rescale_result, setup, true_tolerance
from etr_core.subproblem.steihaug_device import cg_loop, iterate_without_sync

__all__ = ["STOP_RULES", "steihaug_toint_pcg"]

STOP_RULES = ("residual", "model_decrease")
ROOTS = ("positive", "best")


def steihaug_toint_pcg(
    g: Tensor,
    hvp: Callable[[Tensor], Tensor],
    radius: float,
    m: Tensor,
    *,
    kappa: float = 0.1,
    theta: float = 0.5,
    max_iter: int = 50,
    stop_rule: str = "residual",
    residual_norm: str = "l2",
    root: str = "positive",
    record: bool = False,
    host_sync: bool | None = None,
    two_pass: bool = False,
) -> SubproblemResult:
    """Approximately solve Eq. 8, ``min g^T s + 1/2 s^T B s`` s.t. ``||s||_M <= radius``.

    Preconditioned Steihaug-Toint CG (appendix B.2) with ``M = diag(m)`` as both norm and
    preconditioner. Stops at the first of:

    * negative curvature ``p^T B p <= 0``: move along ``p`` to the boundary (``root="positive"``:
      the forward root as in Conn-Gould-Toint Alg. 7.5.1; ``"best"``: whichever boundary root gives
      the lower model value, compared through scalars, no extra Hessian-vector product);
    * the next iterate leaves the region: stop on the boundary along ``p``;
    * ``stop_rule="residual"`` (Eq. 36): ``||r|| <= ||g|| min(kappa, ||g||^theta)``, both norms l2 or
      both ``M^-1`` (``residual_norm``);
      ``stop_rule="model_decrease"`` reproduces the rule of the published experiment configurations
      (not the paper's Eq. 36): from the second iteration on, stop when the last model decrease
      relative to the total so far is ``<= min(sqrt(||g||_2), kappa)``;
    * ``max_iter`` iterations (``max_iter=0`` returns the zero step).

    ``g = 0`` returns the zero step with ``exit="zero_gradient"``; a non-finite ``g`` or a
    Hessian-vector product with NaN/Inf returns the zero step with ``exit="nonfinite"``.
    ``record=True`` adds one history entry per iterate (``iteration``, ``model_change``,
    ``step_m_norm`` computed explicitly, ``residual_norm``, ``curvature``, ``alpha``, ``step``: a copy
    of the iterate; memory O(k d)).

    ``host_sync``: ``True`` reads the loop's scalars on the host every iteration; ``False`` runs the
    device-side loop of :mod:`etr_core.subproblem.steihaug_device` (one host read per four
    iterations, up to three products past the exit; same step to rounding; ``stop_rule="residual"``,
    ``root="positive"`` and ``record=False`` only, else the host path runs); ``None`` (default)
    follows the environment variable ``ETR_CG_LOOP``: ``host`` (default), ``device`` (the eager device
    loop) or ``compiled`` (its update compiled by ``torch.compile`` on CUDA). On an H200 the host path
    and the compiled loop took the same time per TR iteration within noise and the eager device loop
    about 1.4-1.9x as long (docs/benchmarks.md, "CG loops on a GPU"), so the host path is the default
    everywhere. ``two_pass`` is accepted for the common signature with
    :func:`etr_core.subproblem.gltr.gltr` and has no effect (CG keeps no basis).
    """
    g = flat_vector("g", g)
    hvp = check_hvp(hvp)
    radius = check_solver_options(radius, kappa, theta, max_iter, residual_norm)
    check_choice("stop_rule", stop_rule, STOP_RULES)
    check_choice("root", root, ROOTS)
    m = diagonal_like(m, g)

    # float16/bfloat16 run in float32; g (and B) scaled by a power of two when g^T g would overflow or
    # underflow; the radius capped at a dtype-safe value (see etr_core.subproblem.scaling)
    problem, neg_inv_m, gg, gamma, p = setup(g, hvp, m, radius, with_p0=True)   # p_0 = -M^-1 g
    if not (math.isfinite(gg) and math.isfinite(gamma)):
        return trivial_result(g, EXIT_NONFINITE, record)
    if gg == 0.0 or gamma == 0.0:
        return trivial_result(g, EXIT_ZERO_GRADIENT, record)
    scale = problem.scale
    tol = true_tolerance(gg, gamma, scale, kappa, theta, residual_norm)
    decrease_tol = min(math.sqrt(math.sqrt(gg)) / math.sqrt(scale), kappa)
    if host_sync is None:
        host_sync = cg_loop() == "host"
    if not host_sync and stop_rule == "residual" and root == "positive" and not record:
        s, change, exit_reason, iterations, calls = iterate_without_sync(
            problem.g, problem.hvp, problem.radius, problem.m, neg_inv_m, gamma, p,
            max_iter=max_iter, residual_norm=residual_norm, tol=tol,
        )
        if exit_reason == EXIT_NONFINITE:
            result = _nonfinite(problem.g, calls, iterations, None)
        else:
            result = _finish(s, problem.m, change, exit_reason, iterations, calls, None)
        return rescale_result(result, scale, problem.out_dtype)
    result = _iterate(
        problem.g, problem.hvp, problem.radius, problem.m, neg_inv_m, gg, gamma, p,
        max_iter=max_iter, stop_rule=stop_rule, residual_norm=residual_norm, root=root, record=record,
        tol=tol, decrease_tol=decrease_tol,
    )
    return rescale_result(result, scale, problem.out_dtype)


def _iterate(
    g: Tensor, hvp: Callable[[Tensor], Tensor], radius: float, m: Tensor, neg_inv_m: Tensor, gg: float,
    gamma: float, p: Tensor, *, max_iter: int, stop_rule: str, residual_norm: str, root: str,
    record: bool, tol: float, decrease_tol: float,
) -> SubproblemResult:
    """The PCG iterations on the (scaled) problem, from ``p = -M^-1 g``."""
    radius_sq = radius * radius

    s = torch.zeros_like(g)
    r = g.clone()
    r_next = torch.empty_like(g)
    w = torch.empty_like(g)     # holds -M^-1 r_{k+1}
    scalars = torch.empty(3, dtype=g.dtype, device=g.device)
    curv_out, rw_out, rr_out = scalars.unbind()
    sMs, sMp, pMp = 0.0, 0.0, gamma
    change = 0.0                # m(s) - m(0)
    history: list[dict] | None = None
    if record:
        history = [_record(0, 0.0, s, m, math.sqrt(gg) if residual_norm == "l2" else math.sqrt(gamma),
                           None, None)]

    hvp_calls = 0
    exit_reason = EXIT_MAX_ITER
    iterations = 0
    # On an accelerator a host read is a synchronisation, so the residual update is done speculatively
    # with alpha kept on the device and the three scalars come back in one read per iteration. On the
    # CPU a read costs nothing: the curvature is read first, exits skip the residual update, and the
    # update uses a plain scalar alpha (about half the cost of the tensor-alpha kernel).
    speculative = _speculative_reads(g.device)
    for k in range(max_iter):
        q = read_hvp(hvp, p)
        hvp_calls += 1
        if speculative:
            curv_t = torch.dot(p, q, out=curv_out)
            torch.addcmul(r, gamma / curv_t, q, out=r_next)
            q = None  # dropped before the next product, whose result then reuses its (cached) memory
            torch.mul(r_next, neg_inv_m, out=w)
            torch.dot(r_next, w, out=rw_out)
            if residual_norm == "l2":
                torch.dot(r_next, r_next, out=rr_out)
                curv, neg_gamma_next, rr = scalars.tolist()
                gamma_next = -neg_gamma_next
            else:
                curv, neg_gamma_next = scalars[:2].tolist()
                gamma_next = rr = -neg_gamma_next
        else:
            curv = float(torch.dot(p, q))
        iterations = k + 1

        if not math.isfinite(curv):
            return _nonfinite(g, hvp_calls, iterations, history)

        if curv <= 0.0:
            tau, piece = _to_boundary(r, p, curv, sMs, sMp, pMp, radius, root)
            s.add_(p, alpha=tau)
            change += piece
            exit_reason = EXIT_NEGATIVE_CURVATURE
            if history is not None:
                history.append(_record(iterations, change, s, m, None, curv, None))
            break

        alpha = gamma / curv   # inf for a positive but denormal curvature: then the step leaves
        sMs_next = sMs + 2.0 * alpha * sMp + alpha * alpha * pMp   # the region (inf * 0 = NaN here)
        if not (math.isfinite(alpha) and sMs_next < radius_sq):
            tau, piece = _to_boundary(r, p, curv, sMs, sMp, pMp, radius, "positive")
            s.add_(p, alpha=tau)
            change += piece
            exit_reason = EXIT_BOUNDARY
            if history is not None:
                history.append(_record(iterations, change, s, m, None, curv, tau))
            break

        if not speculative:
            torch.add(r, q, alpha=alpha, out=r_next)
            q = None
            torch.mul(r_next, neg_inv_m, out=w)
            gamma_next = -float(torch.dot(r_next, w))
            rr = float(torch.dot(r_next, r_next)) if residual_norm == "l2" else gamma_next
        if not (math.isfinite(gamma_next) and math.isfinite(rr)):
            return _nonfinite(g, hvp_calls, iterations, history)

        s.add_(p, alpha=alpha)
        last_decrease = 0.5 * alpha * gamma
        previous_change = change
        change -= last_decrease
        sMs = sMs_next
        r, r_next = r_next, r
        res_norm = math.sqrt(max(rr, 0.0))
        if history is not None:
            history.append(_record(iterations, change, s, m, res_norm, curv, alpha))

        if gamma_next == 0.0:   # r = 0 exactly: the interior minimiser
            exit_reason = EXIT_CONVERGED
            break
        if stop_rule == "residual":
            if res_norm <= tol:
                exit_reason = EXIT_CONVERGED
                break
        elif k >= 1 and last_decrease <= decrease_tol * (-previous_change):
            exit_reason = EXIT_CONVERGED
            break
        if k == max_iter - 1:
            break

        beta = gamma_next / gamma
        sMp = beta * (sMp + alpha * pMp)
        pMp = gamma_next + beta * beta * pMp
        torch.add(w, p, alpha=beta, out=p)    # p_{k+1} = -M^-1 r_{k+1} + beta p_k
        gamma = gamma_next

    return _finish(s, m, change, exit_reason, iterations, hvp_calls, history)


def _speculative_reads(device: torch.device) -> bool:
    """Whether to batch the per-iteration scalars into one speculative host read (accelerators)."""
    return device.type != "cpu"


def _to_boundary(
    r: Tensor, p: Tensor, curv: float, sMs: float, sMp: float, pMp: float, radius: float, root: str
) -> tuple[float, float]:
    """The boundary root along ``p`` and the exact model change ``tau r^T p + 1/2 tau^2 p^T B p``."""
    rp = float(torch.dot(r, p))
    lo, hi = boundary_roots(sMs, sMp, pMp, radius)
    tau = max(hi, 0.0)
    piece = tau * rp + 0.5 * tau * tau * curv
    if root == "best":
        tau_neg = min(lo, 0.0)
        piece_neg = tau_neg * rp + 0.5 * tau_neg * tau_neg * curv
        if piece_neg < piece:
            return tau_neg, piece_neg
    return tau, piece


def _record(
    iteration: int, change: float, s: Tensor, m: Tensor, res_norm: float | None, curv: float | None,
    alpha: float | None,
) -> dict:
    return {
        "iteration": iteration,
        "model_change": change,
        "step_m_norm": float(torch.dot(s, s * m).sqrt()),
        "residual_norm": res_norm,
        "curvature": curv,
        "alpha": alpha,
        "step": s.clone(),
    }


def _nonfinite(g: Tensor, hvp_calls: int, iterations: int, history: list[dict] | None) -> SubproblemResult:
    out = trivial_result(g, EXIT_NONFINITE, history is not None)
    out.hvp_calls, out.iterations, out.history = hvp_calls, iterations, history
    return out


def _finish(
    s: Tensor, m: Tensor, change: float, exit_reason: str, iterations: int, hvp_calls: int,
    history: list[dict] | None,
) -> SubproblemResult:
    pred = -change
    step_m_norm = float(torch.dot(s, s * m).sqrt())
    on_boundary = exit_reason in (EXIT_BOUNDARY, EXIT_NEGATIVE_CURVATURE)
    reason = None
    if not (math.isfinite(pred) and pred >= 0.0):
        reason, exit_reason = exit_reason, EXIT_MODEL_INCREASE
    return SubproblemResult(
        step=s,
        pred_reduction=pred,
        exit=exit_reason,
        iterations=iterations,
        hvp_calls=hvp_calls,
        step_m_norm=step_m_norm,
        history=history,
        multiplier=None,
        on_boundary=on_boundary,
        reason=reason,
    )
