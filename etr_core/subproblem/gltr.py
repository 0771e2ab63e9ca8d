"""Preconditioned GLTR: the trust-region subproblem (Eq. 8) solved over the Krylov space (Eq. 35).

Gould, Lucidi, Roma & Toint (1999); appendix B.2 mentions the Lanczos variant. The solver runs the
same preconditioned CG as Steihaug-Toint and reads the M-orthonormal Lanczos basis and the
tridiagonal ``T = Q^T B Q`` off the CG coefficients (``alpha_k = gamma_k / kappa_k``,
``beta_k = gamma_{k+1} / gamma_k``):

* ``q_k = sigma_k M^-1 r_k / sqrt(gamma_k)``, ``sigma_0 = 1``, ``sigma_{k+1} = -sign(alpha_k) sigma_k``;
* ``T_kk = 1/alpha_k + beta_{k-1}/alpha_{k-1}``, ``T_{k,k+1} = sqrt(beta_k) / |alpha_k|``.

While the CG iterates stay inside the region with positive curvature they *are* the Krylov
minimisers and the solver is plain PCG. From the first negative curvature or boundary crossing on
("Lanczos phase") it solves ``min ||g||_{M^-1} h_0 + 1/2 h^T T h`` s.t. ``||h||_2 <= radius`` exactly
(More-Sorensen on the small tridiagonal, ``solve_exact``) and maps back ``s = Q h``, so
``||s||_M = ||h||``. Unlike Steihaug-Toint it keeps improving on the boundary.

Residual of the Lanczos-phase solution: ``(B + lambda M) s + g = T_{k,k+1} h_k M q_{k+1}``, hence
``||.||_{M^-1} = T_{k,k+1} |h_k|`` and ``||.||_2 = T_{k,k+1} |h_k| ||r_{k+1}||_2 / sqrt(gamma_{k+1})``.
The Eq. 36 stop rule uses that estimate with the caller's ``kappa`` and ``theta``.

Memory: the Lanczos vectors are stored, O(k d) for k iterations (k <= ``max_iter``); e.g. 50
vectors of d = 101,770 float32 entries take about 20 MB.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
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
from etr_core.subproblem.exact import eigenvector_sign, solve_in_eigenbasis
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

__all__ = ["gltr"]


class _Tridiagonal:
    """The growing Lanczos tridiagonal and its trust-region solution (host float64)."""

    def __init__(self, g_hat: float, radius: float) -> None:
        self.g_hat = g_hat
        self.radius = radius
        self.diag: list[float] = []
        self.off: list[float] = []

    def solve(self) -> tuple[Tensor, float, float]:
        """``(h, lambda, model change)`` for the current size: More-Sorensen in T's eigenbasis."""
        k = len(self.diag)
        if k == 1:
            lam, V = np.array(self.diag), np.ones((1, 1))
        else:
            lam, V = eigh_tridiagonal(np.array(self.diag), np.array(self.off[: k - 1]))
        a = self.g_hat * V[0, :]
        # a positive denormal eigenvalue makes the interior guess -a/lam overflow to inf, which the
        # eigenbasis solve rejects in favour of the boundary: correct, so not worth a warning
        with np.errstate(over="ignore"):
            coeff, shift, _, _ = solve_in_eigenbasis(lam, a, self.radius, max_iter=200, tol=1e-12,
                                                     first_sign=eigenvector_sign(V[:, 0]))
        change = float(a @ coeff + 0.5 * np.sum(lam * coeff * coeff))
        return torch.from_numpy(V @ coeff), float(shift), change


def gltr(
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
    """Approximately solve Eq. 8 by preconditioned GLTR (Lanczos), with ``M = diag(m)`` as norm and
    preconditioner, stopping by Eq. 36: residual ``<= ||g|| min(kappa, ||g||^theta)`` in the l2 or
    ``M^-1`` norm (``residual_norm``), or after ``max_iter`` iterations.

    Same signature as ``steihaug_toint_pcg`` so the optimiser can switch solvers; ``stop_rule`` must be
    ``"residual"`` and ``root`` is accepted but has no effect (GLTR has no boundary-root choice).
    ``multiplier`` is ``lambda`` of ``(B + lambda M) s = -g`` on the Krylov space. ``record=True``
    keeps per-iteration ``phase``, ``model_change``, ``step_m_norm``, ``residual_norm``,
    ``residual_m_inv`` (the estimate ``T_{k,k+1} |h_k|``), ``multiplier`` and ``step`` (a copy).

    ``two_pass=True`` keeps no Lanczos vectors: the first pass builds only the tridiagonal (and the
    interior CG iterate); when the step lies in the Lanczos phase a second pass re-runs the same
    recurrence (``len(h) - 1`` more Hessian-vector products, counted in ``hvp_calls``) and adds
    ``h_i q_i`` as each ``q_i`` is regenerated. Memory O(d) instead of O(k d); the same step to
    rounding for a deterministic ``hvp``. Ignored with ``record=True`` (the records need the basis).
    ``host_sync`` is accepted for the common signature and has no effect: GLTR solves the small
    tridiagonal on the host in every Lanczos-phase iteration.
    """
    g = flat_vector("g", g)
    hvp = check_hvp(hvp)
    radius = check_solver_options(radius, kappa, theta, max_iter, residual_norm)
    check_choice("stop_rule", stop_rule, ("residual",))
    check_choice("root", root, ("positive", "best"))
    m = diagonal_like(m, g)

    # float16/bfloat16 run in float32; g (and B) scaled by a power of two when g^T g would overflow or
    # underflow; the radius capped at a dtype-safe value (see etr_core.subproblem.scaling)
    problem, neg_inv_m, gg, gamma, _ = setup(g, hvp, m, radius)
    if not (math.isfinite(gg) and math.isfinite(gamma)):
        return trivial_result(g, EXIT_NONFINITE, record)
    if gg == 0.0 or gamma == 0.0:
        return trivial_result(g, EXIT_ZERO_GRADIENT, record)
    tol = true_tolerance(gg, gamma, problem.scale, kappa, theta, residual_norm)
    result = _iterate(problem.g, problem.hvp, problem.radius, problem.m, neg_inv_m, gamma,
                      max_iter=max_iter, residual_norm=residual_norm, record=record, tol=tol,
                      keep_basis=record or not two_pass)
    return rescale_result(result, problem.scale, problem.out_dtype)


def _iterate(
    g: Tensor, hvp: Callable[[Tensor], Tensor], radius: float, m: Tensor, neg_inv_m: Tensor, gamma: float,
    *, max_iter: int, residual_norm: str, record: bool, tol: float, keep_basis: bool = True,
) -> SubproblemResult:
    """The CG/Lanczos iterations on the (scaled) problem."""
    radius_sq = radius * radius
    tri = _Tridiagonal(math.sqrt(gamma), radius)

    s = torch.zeros_like(g)          # CG iterate (interior phase)
    r = g.clone()
    r_next = torch.empty_like(g)
    p = g * neg_inv_m
    w = torch.empty_like(g)
    gamma0 = gamma
    basis = [p * (-1.0 / math.sqrt(gamma))] if keep_basis else []   # q_0 = M^-1 g / ||g||_{M^-1}
    sigma = 1.0
    sMs, sMp, pMp = 0.0, 0.0, gamma
    change = 0.0
    interior = True
    h: Tensor | None = None
    lam = 0.0
    previous = 0.0                   # beta_{k-1} / alpha_{k-1}
    history: list[dict] | None = [] if record else None
    hvp_calls = 0
    iterations = 0
    exit_reason = EXIT_MAX_ITER

    scalars = torch.empty(3, dtype=g.dtype, device=g.device)
    curv_out, rw_out, rr_out = scalars.unbind()

    for k in range(max_iter):
        q = read_hvp(hvp, p)
        hvp_calls += 1
        curv_t = torch.dot(p, q, out=curv_out)
        torch.addcmul(r, gamma / curv_t, q, out=r_next)
        del q  # released before the next product (as in the Steihaug-Toint solver)
        torch.mul(r_next, neg_inv_m, out=w)
        torch.dot(r_next, w, out=rw_out)
        torch.dot(r_next, r_next, out=rr_out)
        curv, neg_gamma_next, rr = scalars.tolist()  # the one host read of this iteration
        gamma_next = -neg_gamma_next
        iterations = k + 1
        if not math.isfinite(curv):
            return _nonfinite(g, hvp_calls, iterations, history)
        tri.diag.append(curv / gamma + previous)

        if curv == 0.0 or not math.isfinite(gamma / curv):
            # CG breaks down (alpha infinite, also for a positive denormal curvature); the Krylov
            # problem of the current size is still exact.
            h, lam, change = tri.solve()
            interior = False
            exit_reason = EXIT_NEGATIVE_CURVATURE
            if history is not None:
                history.append(_lanczos_record(iterations, change, h, basis, lam, None, None))
            break
        alpha = gamma / curv
        if interior:
            sMs_next = sMs + 2.0 * alpha * sMp + alpha * alpha * pMp
            if curv < 0.0 or not sMs_next < radius_sq:
                interior = False
            else:
                s.add_(p, alpha=alpha)
                change -= 0.5 * alpha * gamma
                sMs = sMs_next
        if not (math.isfinite(gamma_next) and math.isfinite(rr)):
            return _nonfinite(g, hvp_calls, iterations, history)
        beta = gamma_next / gamma
        off = math.sqrt(max(beta, 0.0)) / abs(alpha)
        tri.off.append(off)

        if interior:
            res_m_inv = math.sqrt(max(gamma_next, 0.0))
            res = math.sqrt(max(rr, 0.0)) if residual_norm == "l2" else res_m_inv
            if history is not None:
                history.append({"iteration": iterations, "phase": "cg", "model_change": change,
                                "step_m_norm": math.sqrt(sMs), "residual_norm": res,
                                "residual_m_inv": res_m_inv, "multiplier": 0.0, "step": s.clone()})
            if res <= tol:
                exit_reason = EXIT_CONVERGED
                break
        else:
            h, lam, change = tri.solve()
            res_m_inv = off * abs(float(h[-1]))
            if residual_norm == "l2":
                res = res_m_inv * math.sqrt(max(rr, 0.0) / gamma_next) if gamma_next > 0.0 else 0.0
            else:
                res = res_m_inv
            if history is not None:
                history.append(_lanczos_record(iterations, change, h, basis, lam, res, res_m_inv))
            if res <= tol:
                exit_reason = EXIT_BOUNDARY
                break
        if k == max_iter - 1:
            break

        previous = beta / alpha
        sigma = -math.copysign(1.0, alpha) * sigma
        sMp = beta * (sMp + alpha * pMp)
        pMp = gamma_next + beta * beta * pMp
        torch.add(w, p, alpha=beta, out=p)
        r, r_next = r_next, r
        if keep_basis:
            basis.append(w * (-sigma / math.sqrt(gamma_next)))
        gamma = gamma_next

    if interior:
        step, step_m_norm, on_boundary, lam = s, math.sqrt(max(sMs, 0.0)), False, 0.0
    else:
        assert h is not None
        if keep_basis:
            step = _combine(basis, h)
        else:
            s = r = r_next = w = p = None  # the first pass's vectors are free before the second
            step = _second_pass(g, hvp, neg_inv_m, gamma0, h)
            hvp_calls += len(h) - 1
        step_m_norm = float(torch.linalg.vector_norm(h))
        on_boundary = lam > 0.0 or step_m_norm >= radius * (1.0 - 1e-10)
        if exit_reason == EXIT_BOUNDARY and not on_boundary:
            exit_reason = EXIT_CONVERGED
    pred = -change
    reason = None
    if not (math.isfinite(pred) and pred >= 0.0):
        reason, exit_reason = exit_reason, EXIT_MODEL_INCREASE
    return SubproblemResult(
        step=step,
        pred_reduction=pred,
        exit=exit_reason,
        iterations=iterations,
        hvp_calls=hvp_calls,
        step_m_norm=step_m_norm,
        history=history,
        multiplier=lam,
        on_boundary=on_boundary,
        reason=reason,
    )


def _second_pass(
    g: Tensor, hvp: Callable[[Tensor], Tensor], neg_inv_m: Tensor, gamma: float, h: Tensor
) -> Tensor:
    """``sum_i h_i q_i`` with the Lanczos vectors ``q_i`` regenerated by the first pass's recurrence
    (same operations, so the same vectors to rounding); O(d) memory, ``len(h) - 1`` products."""
    r = g.clone()
    p = g * neg_inv_m
    w = torch.empty_like(g)
    step = p * (-float(h[0]) / math.sqrt(gamma))
    sigma = 1.0
    for coeff in h.tolist()[1:]:
        q = read_hvp(hvp, p)
        curv_t = torch.dot(p, q)
        torch.addcmul(r, gamma / curv_t, q, out=r)
        del q
        torch.mul(r, neg_inv_m, out=w)
        gamma_next = -float(torch.dot(r, w))
        alpha = gamma / float(curv_t)
        beta = gamma_next / gamma
        sigma = -math.copysign(1.0, alpha) * sigma
        torch.add(w, p, alpha=beta, out=p)
        step.add_(w, alpha=coeff * (-sigma / math.sqrt(gamma_next)))
        gamma = gamma_next
    return step


def _combine(basis: list[Tensor], h: Tensor) -> Tensor:
    step = torch.zeros_like(basis[0])
    for coeff, q in zip(h.tolist(), basis):
        step.add_(q, alpha=coeff)
    return step


def _lanczos_record(
    iteration: int, change: float, h: Tensor, basis: list[Tensor], lam: float, res: float | None,
    res_m_inv: float | None,
) -> dict:
    return {"iteration": iteration, "phase": "lanczos", "model_change": change,
            "step_m_norm": float(torch.linalg.vector_norm(h)), "residual_norm": res,
            "residual_m_inv": res_m_inv, "multiplier": lam, "step": _combine(basis, h)}


def _nonfinite(g: Tensor, hvp_calls: int, iterations: int, history: list[dict] | None) -> SubproblemResult:
    out = trivial_result(g, EXIT_NONFINITE, history is not None)
    out.hvp_calls, out.iterations, out.history = hvp_calls, iterations, history
    return out
