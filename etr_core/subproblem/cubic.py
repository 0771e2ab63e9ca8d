"""The adaptive cubic regularisation (ARC) subproblem in an ellipsoidal norm, solved over a Krylov space.

Cartis, Gould & Toint (2011, part I, section 6; the GLRT approach): minimise the cubic model

    m(s) = g^T s + 1/2 s^T B s + sigma/3 ||s||_M^3,      ||s||_M = sqrt(s^T diag(m) s),

the paper's footnote 4 transfer of the matrix-induced norm to cubic regularisation. A preconditioned
Lanczos process (preconditioner and norm both ``M = diag(m)``) builds an M-orthonormal basis ``Q_k``
of the Krylov space ``K_k(M^-1 B, M^-1 g)`` and the tridiagonal ``T_k = Q_k^T B Q_k``. With
``s = Q_k h`` one has ``||s||_M = ||h||_2`` and ``g^T s = ||g||_{M^-1} h_0``, so the model on the
Krylov space is the small cubic

    min_h  ||g||_{M^-1} e_1^T h + 1/2 h^T T_k h + sigma/3 ||h||^3,

whose *global* minimiser is ``h(lambda) = -(T_k + lambda I)^-1 ||g||_{M^-1} e_1`` with
``lambda = sigma ||h||`` and ``T_k + lambda I`` positive semidefinite (CGT 2011, Theorem 3.1). It is
found in ``T_k``'s eigenbasis by a safeguarded Newton iteration on the secular equation
``1/||h(lambda)|| = sigma/lambda`` (:func:`cubic_in_eigenbasis`, which also treats the hard case).

Stop rule (the analogue of Eq. 36): the model gradient ``g + B s + sigma ||s||_M M s`` equals
``T_{k+1,k} h_{k-1} M q_k`` on the Krylov solution, so its ``M^-1`` norm is ``T_{k+1,k} |h_{k-1}|``
at no cost; the solver stops when that is ``<= ||g||_{M^-1} min(kappa, ||g||_{M^-1}^theta)``, when
the Krylov space is complete (``T_{k+1,k} = 0``: the step is the exact global minimiser over the
whole space unless the hard case hides in its complement), or after ``max_iter`` products.

Memory: the Lanczos vectors are kept (O(k d)), and each new vector is re-orthogonalised against
them in the M inner product, so small problems reach the exact solution in ``d`` products.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from etr_core._validation import check_int, check_nonnegative, check_positive
from etr_core.subproblem._common import check_hvp, diagonal_like, flat_vector, read_hvp, trivial_result
from etr_core.subproblem.result import (
    EXIT_CONVERGED,
    EXIT_MAX_ITER,
    EXIT_NONFINITE,
    EXIT_ZERO_GRADIENT,
    SubproblemResult,
)
from etr_core.subproblem.scaling import working_dtype

__all__ = ["CubicSolution", "arc_subproblem", "cubic_in_eigenbasis", "cubic_model_value"]

EXIT_KRYLOV_COMPLETE = "krylov_complete"  # the Krylov space is invariant: exact over the whole space


class CubicSolution:
    """The global minimiser ``c`` of ``b^T c + 1/2 sum_i lam_i c_i^2 + sigma/3 ||c||^3`` with its
    multiplier ``lam_star = sigma ||c||`` and whether the hard case occurred."""

    __slots__ = ("coeff", "hard_case", "multiplier")

    def __init__(self, coeff: np.ndarray, multiplier: float, hard_case: bool) -> None:
        self.coeff = coeff
        self.multiplier = multiplier
        self.hard_case = hard_case


def cubic_model_value(b: np.ndarray, lam: np.ndarray, sigma: float, c: np.ndarray) -> float:
    """``b^T c + 1/2 sum lam c^2 + sigma/3 ||c||^3`` in float64 (the model in an eigenbasis)."""
    return float(b @ c + 0.5 * np.sum(lam * c * c) + sigma / 3.0 * np.linalg.norm(c) ** 3)


def cubic_in_eigenbasis(
    lam: np.ndarray, b: np.ndarray, sigma: float, *, tol: float = 1e-13, max_iter: int = 200
) -> CubicSolution:
    """Global minimiser of the cubic model with diagonal Hessian ``diag(lam)`` and gradient ``b``
    (CGT 2011, Theorem 3.1: ``(diag(lam) + lambda I) c = -b``, ``lambda = sigma ||c|| >= max(0, -min lam)``).

    ``lambda`` solves ``theta(lambda) = 1/||c(lambda)|| - sigma/lambda = 0`` (increasing in ``lambda``)
    by Newton steps kept inside a shrinking bracket (bisection when Newton leaves it). Hard case:
    when ``b`` has no component along the eigenvectors of ``min lam < 0`` and ``||c(-min lam)|| <=
    -min lam / sigma``, the step ``c(-min lam)`` is completed along the first such eigenvector to
    ``||c|| = -min lam / sigma`` (positive coefficient). ``sigma`` must be > 0.
    """
    lam = np.asarray(lam, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if scale == 0.0:
        # zero gradient: the origin is stationary; with negative curvature move along it
        lmin = float(lam.min()) if lam.size else 0.0
        c = np.zeros_like(b)
        if lmin < 0:
            c[int(np.argmin(lam))] = -lmin / sigma
            return CubicSolution(c, -lmin, True)
        return CubicSolution(c, 0.0, False)
    lmin = float(lam.min())
    low = max(0.0, -lmin)
    degenerate = lam <= lmin + 1e-14 * max(1.0, abs(lmin))
    if lmin < 0 and np.all(np.abs(b[degenerate]) <= 1e-14 * scale):
        rest = ~degenerate
        c = np.zeros_like(b)
        c[rest] = -b[rest] / (lam[rest] + low)
        norm = float(np.linalg.norm(c))
        if norm <= low / sigma:
            first = int(np.flatnonzero(degenerate)[0])
            c[first] = math.sqrt(max((low / sigma) ** 2 - norm * norm, 0.0))
            return CubicSolution(c, low, True)

    def norm_at(x: float) -> tuple[float, float]:
        d = lam + x
        c = b / d
        return float(np.linalg.norm(c)), float(np.sum(c * c / d))

    # bracket: theta(lo) < 0 near the pole (||c|| large or lambda tiny), theta(hi) > 0
    lo = low
    hi = low + max(1.0, math.sqrt(sigma * float(np.linalg.norm(b))))
    while True:
        n, _ = norm_at(hi)
        if 1.0 / n - sigma / hi > 0:
            break
        lo, hi = hi, 2.0 * hi
    x = hi
    for _ in range(max_iter):
        n, s3 = norm_at(x)
        theta = 1.0 / n - sigma / x
        if abs(theta) <= tol * sigma / x:
            break
        if theta > 0:
            hi = x
        else:
            lo = x
        slope = s3 / n**3 + sigma / x**2
        step = x - theta / slope
        x = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo <= tol * hi:
            break
    c = -b / (lam + x)
    return CubicSolution(c, x, False)


def _small_cubic(diag: list[float], off: list[float], g_hat: float, sigma: float):
    """``(h, lambda, model value)`` for the current tridiagonal."""
    if len(diag) == 1:
        lam, V = np.array(diag), np.ones((1, 1))
    else:
        lam, V = eigh_tridiagonal(np.array(diag), np.array(off[: len(diag) - 1]))
    b = g_hat * V[0, :]
    sol = cubic_in_eigenbasis(lam, b, sigma)
    return V @ sol.coeff, sol.multiplier, cubic_model_value(b, lam, sigma, sol.coeff)


def arc_subproblem(
    g: Tensor,
    hvp: Callable[[Tensor], Tensor],
    sigma: float,
    m: Tensor,
    *,
    kappa: float = 0.1,
    theta: float = 0.5,
    max_iter: int = 50,
) -> SubproblemResult:
    """Approximately minimise ``g^T s + 1/2 s^T B s + sigma/3 ||s||_M^3`` (``M = diag(m)``, ``B`` through
    ``hvp``) over the Lanczos Krylov space, as Cartis, Gould & Toint (2011) section 6.

    Shapes: ``g`` and ``m`` flat of length d (``m`` finite and > 0); ``hvp(v)`` returns ``B v``.
    Returns a :class:`SubproblemResult` with ``pred_reduction = m(0) - m(s) >= 0`` (the cubic term
    included, as the ARC ratio rho of CGT 2011 Eq. 2.4 needs), ``multiplier = sigma ||s||_M``,
    ``step_m_norm = ||s||_M`` and ``exit`` one of "converged", "krylov_complete", "max_iter",
    "zero_gradient", "nonfinite" (NaN/Inf in ``g`` or a product: zero step). float16/bfloat16 are
    computed in float32. Raises ``ValueError`` for ``sigma <= 0``, ``kappa`` outside [0, 1),
    ``max_iter < 1`` or a non-positive ``m``.
    """
    g = flat_vector("g", g)
    hvp = check_hvp(hvp)
    sigma = check_positive("sigma", sigma)
    kappa = check_nonnegative("kappa", kappa)
    if kappa >= 1.0:
        raise ValueError(f"kappa must lie in [0, 1), got {kappa!r}")
    theta = check_nonnegative("theta", theta)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    m = diagonal_like(m, g)
    out_dtype = g.dtype
    wd = working_dtype(out_dtype)
    g, m = g.to(wd), m.to(wd)
    m_min = float(m.min())
    if not (m_min > 0 and math.isfinite(float(m.max()))):
        raise ValueError(f"m must be finite and strictly positive, got min(m)={m_min!r}")
    inv_m = torch.reciprocal(m)
    z = g * inv_m
    g_hat = math.sqrt(max(float(torch.dot(g, z)), 0.0))  # ||g||_{M^-1}
    if not math.isfinite(g_hat):
        return trivial_result(g.to(out_dtype), EXIT_NONFINITE, False)
    if g_hat == 0.0:
        return trivial_result(g.to(out_dtype), EXIT_ZERO_GRADIENT, False)
    tol = g_hat * min(kappa, g_hat**theta)
    basis: list[Tensor] = [z / g_hat]  # q_j, M-orthonormal
    m_basis: list[Tensor] = [g / g_hat]  # M q_j
    diag: list[float] = []
    off: list[float] = []
    exit_, h, lam_star, value = EXIT_MAX_ITER, None, 0.0, 0.0
    for j in range(max_iter):
        w = read_hvp(hvp, basis[j].to(out_dtype)).to(wd)
        alpha = float(torch.dot(basis[j], w))
        if not math.isfinite(alpha):
            return _nonfinite(g, out_dtype, j + 1)
        diag.append(alpha)
        # full re-orthogonalisation in the M inner product: w <- w - sum_i (q_i^T w) M q_i
        for q_i, mq_i in zip(basis, m_basis):
            w.sub_(mq_i, alpha=float(torch.dot(q_i, w)))
        zw = w * inv_m
        beta = math.sqrt(max(float(torch.dot(w, zw)), 0.0))
        if not math.isfinite(beta):
            return _nonfinite(g, out_dtype, j + 1)
        h, lam_star, value = _small_cubic(diag, off, g_hat, sigma)
        if beta <= 1e-12 * max(abs(alpha), g_hat, 1.0) or j + 1 == g.numel():
            exit_ = EXIT_KRYLOV_COMPLETE
            break
        off.append(beta)
        if beta * abs(h[-1]) <= tol:
            exit_ = EXIT_CONVERGED
            break
        basis.append(zw / beta)
        m_basis.append(w / beta)
    k = len(diag)
    coeffs = torch.as_tensor(h, dtype=wd, device=g.device)
    s = torch.zeros_like(g)
    for c, q in zip(coeffs, basis[:k]):
        s.add_(q, alpha=float(c))
    return SubproblemResult(
        step=s.to(out_dtype),
        pred_reduction=-value,
        exit=exit_,
        iterations=k,
        hvp_calls=k,
        step_m_norm=float(np.linalg.norm(h)),
        multiplier=lam_star,
        on_boundary=False,
    )


def _nonfinite(g: Tensor, out_dtype: torch.dtype, calls: int) -> SubproblemResult:
    result = trivial_result(g.to(out_dtype), EXIT_NONFINITE, False)
    result.hvp_calls = result.iterations = calls
    return result
