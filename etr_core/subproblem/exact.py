"""Exact (More-Sorensen) solution of the trust-region subproblem for a small dense ``H`` (Eq. 8).

For the 2-D pages of the app and as a test oracle. With ``M = diag(m)`` the change of variables
``u = M^{1/2} s`` turns Eq. 8 into a spherical problem with ``H_hat = M^{-1/2} H M^{-1/2}`` and
``g_hat = M^{-1/2} g``. In the eigenbasis ``H_hat = V diag(lam) V^T``, ``a = V^T g_hat``, the global
minimiser is ``u(lambda) = -V (lam + lambda)^-1 a`` with the multiplier ``lambda >= max(0, -lam_1)``
solving the secular equation ``||u(lambda)|| = radius`` (More & Sorensen 1983). The root is found
by safeguarded Newton iterations on ``1 / ||u(lambda)|| - 1 / radius``, which is concave and
increasing, inside a bracket that bisection keeps valid; the loop is capped at ``max_iter``.

Hard case: when ``g_hat`` has (numerically) no component in the eigenspace of ``lam_1 <= 0`` and the
step ``u_0 = -(H_hat - lam_1 I)^+ g_hat`` is shorter than the radius, the solution is
``u_0 + tau z`` with ``z`` a unit *eigenvector* of ``lam_1`` and ``||u_0 + tau z|| = radius``. Both
signs of ``tau`` are evaluated and the lower model value wins; an exact tie picks the sign that makes
``z``'s largest-magnitude entry positive, so the answer does not depend on the eigensolver's sign.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from etr_core._validation import check_int, check_positive
from etr_core.subproblem._common import flat_vector
from etr_core.subproblem.result import (
    EXIT_BOUNDARY,
    EXIT_CONVERGED,
    EXIT_HARD_CASE,
    EXIT_MAX_ITER,
    EXIT_NONFINITE,
    EXIT_ZERO_GRADIENT,
    SubproblemResult,
)

__all__ = ["solve_exact", "solve_in_eigenbasis"]


def solve_exact(
    g: Tensor,
    H: Tensor,
    radius: float,
    m: Tensor | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> SubproblemResult:
    """Globally minimise ``g^T s + 1/2 s^T H s`` s.t. ``||s||_M <= radius`` for a dense symmetric ``H``.

    More-Sorensen via one symmetric eigendecomposition (O(d^3); meant for d up to a few hundred); a
    positive-definite ``H`` whose Newton step fits is settled by one Cholesky factorisation instead.
    ``m=None`` is the sphere. ``tol`` is the relative accuracy of ``||s||_M`` against the radius on
    boundary solutions. Returns the step with ``multiplier`` = ``lambda`` of ``(H + lambda M) s = -g``;
    exits: ``"converged"`` (interior Newton step, ``lambda = 0``), ``"boundary"``, ``"hard_case"``,
    ``"max_iter"`` (cap reached; the returned step is feasible), ``"zero_gradient"``, ``"nonfinite"``.
    The computation runs in float64 on the host (torch linear algebra, numpy for the secular
    equation); the step comes back in ``g``'s dtype and device.
    """
    g = flat_vector("g", g)
    radius = check_positive("radius", radius)
    check_int("max_iter", max_iter, minimum=1)
    tol = check_positive("tol", tol)
    if not isinstance(H, Tensor):
        raise TypeError(f"H must be a torch.Tensor, got {type(H).__name__}")
    d = g.numel()
    if H.shape != (d, d):
        raise ValueError(f"H must have shape ({d}, {d}) to match g, got {tuple(H.shape)}")
    # Matrix work in torch (float64, CPU), so it runs on torch's thread setting: numpy's OpenBLAS
    # starts its own threads, and on a busy machine a 100 x 100 eigh then took 0.1-0.7 s instead of 1 ms.
    g64 = g.detach().to(device="cpu", dtype=torch.float64)
    H64 = H.detach().to(device="cpu", dtype=torch.float64)
    if m is None:
        sqrt_m = torch.ones(d, dtype=torch.float64)
    else:
        m = flat_vector("m", m)
        if m.numel() != d:
            raise ValueError(f"m has {m.numel()} entries but g has {d}")
        m64 = m.detach().to(device="cpu", dtype=torch.float64)
        if not bool((torch.isfinite(m64) & (m64 > 0)).all()):
            raise ValueError("m must be finite and strictly positive")
        sqrt_m = torch.sqrt(m64)

    def result(step: Tensor, lam: float | None, exit_reason: str, iterations: int, on_boundary: bool):
        pred = -float(g64 @ step + 0.5 * step @ (H64 @ step))
        return SubproblemResult(
            step=step.to(device=g.device, dtype=g.dtype),
            pred_reduction=pred,
            exit=exit_reason,
            iterations=iterations,
            hvp_calls=0,
            step_m_norm=float(torch.linalg.vector_norm(step * sqrt_m)),
            multiplier=lam,
            on_boundary=on_boundary,
        )

    if not (bool(torch.isfinite(g64).all()) and bool(torch.isfinite(H64).all())):
        return result(torch.zeros(d, dtype=torch.float64), None, EXIT_NONFINITE, 0, False)

    H_hat = H64 / sqrt_m[:, None] / sqrt_m[None, :]
    H_hat = 0.5 * (H_hat + H_hat.T)
    g_hat = g64 / sqrt_m
    # Positive definite with the Newton step inside: one Cholesky (about a tenth of an eigh) settles it.
    if bool(g_hat.any()):
        L, info = torch.linalg.cholesky_ex(H_hat)
        if int(info) == 0:
            u = -torch.cholesky_solve(g_hat[:, None], L)[:, 0]
            if float(torch.linalg.vector_norm(u)) <= radius:
                return result(u / sqrt_m, 0.0, EXIT_CONVERGED, 0, False)
    lam, V = torch.linalg.eigh(H_hat)
    coeff, shift, exit_reason, iterations = solve_in_eigenbasis(
        lam.numpy(), (V.T @ g_hat).numpy(), radius, max_iter=max_iter, tol=tol,
        first_sign=eigenvector_sign(V[:, 0].numpy()),
    )
    on_boundary = exit_reason in (EXIT_BOUNDARY, EXIT_HARD_CASE) or (
        exit_reason == EXIT_MAX_ITER and float(np.linalg.norm(coeff)) >= radius * (1.0 - 1e-8)
    )
    return result((V @ torch.from_numpy(coeff)) / sqrt_m, shift, exit_reason, iterations, on_boundary)


def eigenvector_sign(z: np.ndarray) -> float:
    """+1 or -1 so that ``sign * z`` has a positive largest-magnitude entry."""
    return 1.0 if z[int(np.argmax(np.abs(z)))] >= 0 else -1.0


def solve_in_eigenbasis(
    lam: np.ndarray, a: np.ndarray, radius: float, *, max_iter: int = 100, tol: float = 1e-10,
    first_sign: float = 1.0,
) -> tuple[np.ndarray, float, str, int]:
    """The spherical trust-region problem ``min a^T c + 1/2 sum lam_i c_i^2``, ``||c|| <= radius``, in the
    eigenbasis (``lam`` ascending). Returns ``(c, lambda, exit, iterations)``. ``first_sign`` orients
    the first eigenvector for exact hard-case ties (see the module docstring).
    """
    lam = np.asarray(lam, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    lam1 = float(lam[0])
    a_norm = float(np.linalg.norm(a))
    scale = max(1.0, float(np.max(np.abs(lam))))
    if a_norm == 0.0 and lam1 >= 0.0:
        return np.zeros_like(a), 0.0, EXIT_ZERO_GRADIENT, 0

    # Interior Newton step: positive definite and the step fits.
    if lam1 > 0.0:
        c = -a / lam
        if float(np.linalg.norm(c)) <= radius:
            return c, 0.0, EXIT_CONVERGED, 0

    lam_low = max(0.0, -lam1)
    if lam1 <= 0.0:
        # Eigenspace of lam_1 (numerical multiplicity) and g's share of it.
        in_first = (lam - lam1) <= 1e-12 * scale
        a_first = np.where(in_first, a, 0.0)
        a_first_norm = float(np.linalg.norm(a_first))
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = np.where(in_first, 0.0, -a / (lam + lam_low))
        rest_norm = float(np.linalg.norm(rest))
        if rest_norm < radius:
            tau = math.sqrt(radius * radius - rest_norm * rest_norm)
            # The secular root sits within `gap` of the pole -lam_1: numerically the hard case.
            if a_first_norm / tau <= 1e-12 * scale:
                if a_first_norm > 0.0:
                    # A trace of g in the eigenspace fixes the direction: move against it.
                    return rest - tau * a_first / a_first_norm, lam_low, EXIT_HARD_CASE, 0
                z = np.zeros_like(a)
                z[0] = first_sign

                def model(c: np.ndarray) -> float:
                    return float(a @ c + 0.5 * np.sum(lam * c * c))

                plus, minus = rest + tau * z, rest - tau * z
                return (minus if model(minus) < model(plus) else plus), lam_low, EXIT_HARD_CASE, 0

    # Boundary solution: bracket [lo, hi] with ||c(lo)|| >= radius >= ||c(hi)||; start right of the
    # root, where one Newton step on the concave 1/||c|| - 1/radius lands left of it, then monotone.
    lo = lam_low
    hi = max(lam_low, a_norm / radius - lam1) * (1.0 + 1e-12) + 1e-300
    shift = hi
    iterations = 0
    converged = False
    while iterations < max_iter:
        iterations += 1
        denom = lam + shift
        c = a / denom
        psi = float(np.linalg.norm(c))
        if abs(psi - radius) <= tol * radius:
            converged = True
            break
        if psi > radius:
            lo = max(lo, shift)
        else:
            hi = min(hi, shift)
        s3 = float(np.sum(c * c / denom))
        newton = shift - (1.0 / psi - 1.0 / radius) * psi**3 / s3 if s3 > 0.0 else math.nan
        shift = newton if lo < newton < hi else 0.5 * (lo + hi)
        if hi - lo <= 1e-15 * max(1.0, hi):
            shift = hi
            converged = abs(float(np.linalg.norm(a / (lam + hi))) - radius) <= tol * radius
            break
    if not converged and float(np.linalg.norm(a / (lam + shift))) > radius * (1.0 + tol):
        shift = hi  # the feasible side of the bracket
    return -a / (lam + shift), shift, EXIT_BOUNDARY if converged else EXIT_MAX_ITER, iterations
