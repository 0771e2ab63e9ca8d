"""Extreme Hessian eigenvalues by Lanczos on Hessian-vector products (paper sections 3.2 and 4).

A negative smallest eigenvalue is the negative curvature that second-order trust-region methods
exploit and that Newton's method cannot handle (appendix B, A). The Lanczos process needs only
``v -> H v``, so it runs on networks far too large for the dense Hessian; with full
re-orthogonalisation in float64 the extreme Ritz values converge in a few dozen products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from etr_core._validation import check_int

__all__ = ["LanczosResult", "lanczos_extreme_eigenvalues"]


@dataclass(frozen=True)
class LanczosResult:
    """Ritz values of ``H`` on a Krylov space of dimension ``iterations`` (sorted ascending)."""

    ritz_values: np.ndarray
    iterations: int
    hvp_calls: int

    @property
    def largest(self) -> float:
        return float(self.ritz_values[-1])

    @property
    def smallest(self) -> float:
        return float(self.ritz_values[0])

    def top(self, k: int = 1) -> np.ndarray:
        return self.ritz_values[::-1][:k].copy()

    def bottom(self, k: int = 1) -> np.ndarray:
        return self.ritz_values[:k].copy()


def lanczos_extreme_eigenvalues(
    hvp: Callable[[Tensor], Tensor],
    d: int,
    num_iter: int = 40,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    tol: float = 1e-10,
) -> LanczosResult:
    """Lanczos with full re-orthogonalisation; returns the Ritz values (extremes first to converge).

    ``hvp`` takes and returns flat vectors of length ``d`` in ``dtype`` on ``device`` (by default
    ``hvp.dtype`` and ``hvp.device``, as a ``NetworkHvp`` has them, else float32 CPU); the Krylov basis is
    kept in float64 on the same device. The process stops early when the Krylov space is
    invariant (``beta < tol * max|alpha|``), in which case the Ritz values are exact eigenvalues.
    """
    if dtype is None:
        dtype = getattr(hvp, "dtype", torch.float32)
    if device is None:
        device = getattr(hvp, "device", torch.device("cpu"))
    d = check_int("d", d, minimum=1)
    num_iter = min(check_int("num_iter", num_iter, minimum=1), d)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    q = torch.randn(d, generator=gen, dtype=torch.float64).to(device)
    q /= q.norm()
    Q = torch.empty(num_iter, d, dtype=torch.float64, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    calls = 0
    for j in range(num_iter):
        Q[j] = q
        w = hvp(q.to(dtype)).detach().to(torch.float64)
        calls += 1
        alpha = float(w @ q)
        alphas.append(alpha)
        basis = Q[: j + 1]
        # two passes of classical Gram-Schmidt keep the basis orthogonal to rounding
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        if j == num_iter - 1 or beta <= tol * max(1.0, max(abs(a) for a in alphas)):
            break
        betas.append(beta)
        q = w / beta
    k = len(alphas)
    if k == 1:
        ritz = np.array(alphas)
    else:
        ritz = eigh_tridiagonal(np.array(alphas), np.array(betas[: k - 1]), eigvals_only=True)
    return LanczosResult(np.sort(ritz), k, calls)
