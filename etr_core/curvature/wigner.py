"""The Wigner baseline of Proposition 1 (paper section 3.2, appendix D.1), corrected, and its use.

A Gaussian Wigner matrix (Eq. 7) has i.i.d. entries ``W_ij = W_ji ~ N(0, sigma_off^2)`` for
``i < j`` and ``W_ii ~ N(0, sigma_diag^2)`` (sigma is the standard deviation). Its expected
diagonal mass is, to first order,

    E[delta_W] ~ 1 / (1 + (d - 1) * sigma_off / sigma_diag).

Two corrections to the paper as printed:

* Eq. 7 names the off-diagonal scale sigma_1 and the diagonal scale sigma_2, but the proof writes
  ``(d^2 - d) sigma_2`` for the off-diagonal sum, so the printed result has the ratio upside down:
  ``1 / (1 + (d - 1) sigma_2 / sigma_1)``. With ``d = 10``, ``sigma_off = 1``, ``sigma_diag = 2``
  Monte Carlo gives 0.1818 (the corrected formula) and not 0.0526 (the printed one).
* The proof replaces ``E[1 / (1 + X)]`` by ``1 / (1 + E[X])``; that is exact only as ``d`` grows.
  At ``d = 3`` with equal scales the true value is 0.349, not 1/3. :func:`wigner_mass_exact`
  computes the true expectation by a one-dimensional integral, :func:`wigner_mass_monte_carlo`
  by sampling.

Baselines for a Hessian: with equal scales the closed form is ``1/d``; with scales matched to the
RMS of the Hessian's diagonal and off-diagonal entries (their Gaussian maximum-likelihood fit) it
is the "RMS-matched" value. Matching the scales by mean absolute value instead reproduces
``delta_H`` exactly, whatever ``H`` is (``(d-1) sigma_off / sigma_diag`` becomes the ratio of
off-diagonal to diagonal absolute mass), so it is no baseline and is not offered.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, special
from torch import Tensor

from etr_core._validation import check_int, check_nonnegative
from etr_core.curvature.hessian import ParameterBlock
from etr_core.curvature.mass import block_diagonal_mass, diagonal_mass, entry_scales

__all__ = [
    "MonteCarloEstimate",
    "WignerComparison",
    "compare_with_wigner",
    "paper_printed_wigner_mass",
    "sample_wigner",
    "wigner_mass_closed_form",
    "wigner_mass_exact",
    "wigner_mass_monte_carlo",
]


def _check_scales(sigma_off: float, sigma_diag: float) -> tuple[float, float]:
    sigma_off = check_nonnegative("sigma_off", sigma_off)
    sigma_diag = check_nonnegative("sigma_diag", sigma_diag)
    if sigma_off == 0 and sigma_diag == 0:
        raise ValueError("sigma_off and sigma_diag are both 0: the zero matrix has no diagonal mass")
    return sigma_off, sigma_diag


def wigner_mass_closed_form(d: int, sigma_off: float = 1.0, sigma_diag: float = 1.0) -> float:
    """Corrected Proposition 1: ``1 / (1 + (d - 1) sigma_off / sigma_diag)``; ``1/d`` for equal scales.

    This is the ratio of expected masses, the paper's approximation of ``E[delta_W]``; its error
    vanishes as ``d`` grows (see :func:`wigner_mass_exact`).
    """
    d = check_int("d", d, minimum=1)
    sigma_off, sigma_diag = _check_scales(sigma_off, sigma_diag)
    if sigma_diag == 0:
        return 0.0 if d > 1 else 1.0
    return 1.0 / (1.0 + (d - 1) * sigma_off / sigma_diag)


def paper_printed_wigner_mass(d: int, sigma_off: float = 1.0, sigma_diag: float = 1.0) -> float:
    """Proposition 1 exactly as printed, with Eq. 7's labels: ``1 / (1 + (d-1) sigma_diag / sigma_off)``.

    Kept only to show the swap next to the corrected value; do not use it as a baseline.
    """
    d = check_int("d", d, minimum=1)
    sigma_off, sigma_diag = _check_scales(sigma_off, sigma_diag)
    if sigma_off == 0:
        return 0.0 if d > 1 else 1.0
    return 1.0 / (1.0 + (d - 1) * sigma_diag / sigma_off)


_SQRT_PI = math.sqrt(math.pi)


def _h(u: np.ndarray) -> np.ndarray:
    """``1/sqrt(pi) - u erfcx(u)``, with its asymptotic series where the difference cancels."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    small = u < 30.0
    out[small] = 1.0 / _SQRT_PI - u[small] * special.erfcx(u[small])
    ub = u[~small]
    out[~small] = (0.5 / ub**2 - 0.75 / ub**4 + 1.875 / ub**6) / _SQRT_PI
    return out


def wigner_mass_exact(d: int, sigma_off: float = 1.0, sigma_diag: float = 1.0) -> float:
    """The exact ``E[delta_W]`` of a Gaussian Wigner matrix (Eq. 7), by a one-dimensional integral.

    With ``X = sum_i |W_ii|`` and ``Y = 2 sum_{i<j} |W_ij|`` independent,
    ``E[X / (X + Y)] = int_0^inf E[X e^{-tX}] E[e^{-tY}] dt``. The Laplace transform of ``|N(0, s^2)|``
    is ``erfcx(s t / sqrt 2)``, which makes the integrand closed-form. This is the oracle for the
    small-``d`` error of Proposition 1's ``1/(1 + E[...])`` step.
    """
    d = check_int("d", d, minimum=1)
    sigma_off, sigma_diag = _check_scales(sigma_off, sigma_diag)
    if d == 1 or sigma_off == 0:
        return 1.0
    if sigma_diag == 0:
        return 0.0
    m = d * (d - 1) // 2
    # t in units of 1 / E[X + Y] keeps the integrand O(1)-wide for every d and scale.
    scale = 1.0 / (math.sqrt(2 / math.pi) * (d * sigma_diag + 2 * m * sigma_off))

    def integrand(s: float) -> float:
        t = s * scale
        u_diag = np.array([sigma_diag * t / math.sqrt(2)])
        u_off = np.array([sigma_off * 2 * t / math.sqrt(2)])
        log_tail = (d - 1) * np.log(special.erfcx(u_diag)) + m * np.log(special.erfcx(u_off))
        first = d * sigma_diag * math.sqrt(2) * _h(u_diag)
        return float(first[0] * np.exp(log_tail[0])) * scale

    with warnings.catch_warnings():
        # At large d quad reports round-off near its 1e-10 target; the value still agrees with the
        # closed form to ~1e-8 relative, far below any Monte Carlo error.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(integrand, 0.0, np.inf, limit=200, epsabs=1e-13, epsrel=1e-10)
    return float(value)


def sample_wigner(
    d: int,
    sigma_off: float = 1.0,
    sigma_diag: float = 1.0,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """One Gaussian Wigner matrix of Eq. 7 (sigma = standard deviation), reproducible from ``seed``."""
    d = check_int("d", d, minimum=1)
    sigma_off, sigma_diag = _check_scales(sigma_off, sigma_diag)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    upper = torch.triu(torch.randn(d, d, generator=gen, dtype=dtype), diagonal=1) * sigma_off
    diag = torch.randn(d, generator=gen, dtype=dtype) * sigma_diag
    return upper + upper.T + torch.diag(diag)


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte Carlo mean with its standard error (sample standard deviation / sqrt(samples))."""

    mean: float
    std_error: float
    samples: int

    @property
    def interval(self) -> tuple[float, float]:
        """Normal 95% interval ``mean +- 1.96 std_error``."""
        return self.mean - 1.96 * self.std_error, self.mean + 1.96 * self.std_error


def wigner_mass_monte_carlo(
    d: int,
    sigma_off: float = 1.0,
    sigma_diag: float = 1.0,
    *,
    samples: int = 1000,
    seed: int = 0,
    max_elements: int = 2_000_000,
) -> MonteCarloEstimate:
    """``E[delta_W]`` by sampling Wigner matrices of Eq. 7 (sigma = standard deviation).

    Only the sums ``X = sum |W_ii|`` and ``Y = 2 sum_{i<j} |W_ij|`` matter, so each sample draws
    ``d`` diagonal and ``d(d-1)/2`` upper entries without forming the matrix; ``max_elements``
    bounds the entries drawn at once.
    """
    d = check_int("d", d, minimum=1)
    sigma_off, sigma_diag = _check_scales(sigma_off, sigma_diag)
    samples = check_int("samples", samples, minimum=2)
    max_elements = check_int("max_elements", max_elements, minimum=1)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    m = d * (d - 1) // 2
    values = torch.empty(samples, dtype=torch.float64)
    per_batch = max(1, max_elements // max(1, m + d))
    for start in range(0, samples, per_batch):
        n = min(per_batch, samples - start)
        x = torch.randn(n, d, generator=gen, dtype=torch.float64).abs().sum(1) * sigma_diag
        if m == 0:
            y = torch.zeros(n, dtype=torch.float64)
        elif m <= max_elements:
            y = 2 * sigma_off * torch.randn(n, m, generator=gen, dtype=torch.float64).abs().sum(1)
        else:
            y = torch.zeros(n, dtype=torch.float64)
            for k in range(n):
                total = 0.0
                for lo in range(0, m, max_elements):
                    size = min(max_elements, m - lo)
                    total += float(torch.randn(size, generator=gen, dtype=torch.float64).abs().sum())
                y[k] = 2 * sigma_off * total
        values[start : start + n] = x / (x + y)
    return MonteCarloEstimate(float(values.mean()), float(values.std() / math.sqrt(samples)), samples)


@dataclass(frozen=True)
class WignerComparison:
    """``delta_H`` of one matrix next to its two Wigner baselines (section 3.2, Fig. 2).

    ``delta_w_equal`` is the closed form with equal scales, ``1/d``; ``delta_w_rms`` the corrected
    closed form with ``sigma_off``, ``sigma_diag`` set to the RMS of the off-diagonal and diagonal
    entries. ``ratio_*`` are ``delta_h / delta_w_*``, the quantity of Fig. 2.
    """

    d: int
    delta_h: float
    delta_w_equal: float
    delta_w_rms: float
    sigma_off_rms: float
    sigma_diag_rms: float
    tensor_block_mass: float | None
    layer_block_mass: float | None

    @property
    def ratio_equal(self) -> float:
        return self.delta_h / self.delta_w_equal

    @property
    def ratio_rms(self) -> float:
        return self.delta_h / self.delta_w_rms if self.delta_w_rms > 0 else math.inf

    def as_dict(self) -> dict[str, float | int | None]:
        out = dict(self.__dict__)
        out["ratio_equal"] = self.ratio_equal
        out["ratio_rms"] = self.ratio_rms
        return out


def compare_with_wigner(
    A: Tensor,
    tensor_blocks: Sequence[ParameterBlock] | None = None,
    layer_blocks: Sequence[ParameterBlock] | None = None,
) -> WignerComparison:
    """``delta_A`` with the equal-scale (``1/d``) and RMS-matched Wigner baselines side by side."""
    d = int(A.shape[0]) if A.dim() == 2 else 0
    delta = diagonal_mass(A)
    if d < 2:
        raise ValueError(f"a Wigner comparison needs d >= 2, got a matrix of shape {tuple(A.shape)}")
    scales = entry_scales(A)
    rms = (
        wigner_mass_closed_form(d, scales.rms_off, scales.rms_diag)
        if scales.rms_off > 0 or scales.rms_diag > 0
        else math.nan
    )
    return WignerComparison(
        d=d,
        delta_h=delta,
        delta_w_equal=wigner_mass_closed_form(d),
        delta_w_rms=rms,
        sigma_off_rms=scales.rms_off,
        sigma_diag_rms=scales.rms_diag,
        tensor_block_mass=block_diagonal_mass(A, tensor_blocks) if tensor_blocks else None,
        layer_block_mass=block_diagonal_mass(A, layer_blocks) if layer_blocks else None,
    )
