"""Diagonal-mass and Hessian-diagonal estimates for networks too large for the exact Hessian.

Three estimators, all built on Hessian-vector products ``hvp(v) = H v`` (paper section 3.2 needs
``delta_H`` on networks of 10^5-10^6 parameters, where the dense ``H`` is out of reach):

* :func:`sampled_row_mass` -- exact rows ``H e_i`` (one HVP each) for indices sampled without
  replacement, stratified by parameter tensor, and the combined ratio estimator
  ``sum |H_ii| / sum ||H_i||_1`` with a linearised standard error. On a 10k-parameter MLP 100 rows
  gave about +-6% relative standard deviation.
* :func:`hutchinson_diagonal` -- ``mean_k z_k * (H z_k)`` with Rademacher probes (Hutchinson 1990),
  unbiased for ``diag(H)``; the variance of coordinate ``i`` per probe is ``sum_{j != i} H_ij^2``.
* :func:`bekas_diagonal` -- Bekas, Kokiopoulou & Saad (2007): ``sum_k z_k * H z_k / sum_k z_k * z_k``;
  with Rademacher probes it equals Hutchinson, with Gaussian probes it is a ratio estimator.

Network Hessians put well under 1% of their absolute mass on the diagonal, so the probe
estimators are very noisy (about 300% relative L2 error with 10 probes and 31% with 1000 at
``d = 10,000``); their reported standard errors say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from etr_core._validation import check_choice, check_int
from etr_core.curvature.hessian import ParameterBlock

__all__ = [
    "DiagonalEstimate",
    "RowSampleEstimate",
    "bekas_diagonal",
    "hutchinson_diagonal",
    "relative_l2_error",
    "sampled_row_mass",
    "stratified_allocation",
]

Hvp = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class RowSampleEstimate:
    """Estimated diagonal mass from sampled exact rows, with its standard error."""

    estimate: float
    std_error: float
    rows: int
    hvp_calls: int
    rows_per_block: dict[str, int]

    @property
    def interval(self) -> tuple[float, float]:
        """Normal 95% interval ``estimate +- 1.96 std_error``."""
        return self.estimate - 1.96 * self.std_error, self.estimate + 1.96 * self.std_error


def _resolve(hvp: Hvp, dtype: torch.dtype | None, device: torch.device | str | None):
    """dtype and device of probe vectors: given, else the HVP's own (``NetworkHvp``), else float32 CPU."""
    if dtype is None:
        dtype = getattr(hvp, "dtype", torch.float32)
    if device is None:
        device = getattr(hvp, "device", torch.device("cpu"))
    return dtype, device


def stratified_allocation(blocks: Sequence[ParameterBlock], num_rows: int) -> list[int]:
    """Rows per block, proportional to block size, at least 2 (or the whole block when smaller)."""
    d = sum(b.size for b in blocks)
    counts = []
    for b in blocks:
        share = max(2, round(num_rows * b.size / d))
        counts.append(min(b.size, share))
    return counts


def _check_blocks(blocks: Sequence[ParameterBlock]) -> int:
    if not blocks:
        raise ValueError("blocks must name at least one parameter block")
    position = 0
    for b in blocks:
        if b.start != position or b.stop <= b.start:
            raise ValueError(f"blocks must tile [0, d) in order; block {b.name!r} starts at {b.start}, "
                             f"expected {position}")
        position = b.stop
    return position


def sampled_row_mass(
    hvp: Hvp,
    blocks: Sequence[ParameterBlock],
    num_rows: int = 100,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> RowSampleEstimate:
    """Estimate ``delta_H = sum |H_ii| / sum_ij |H_ij|`` from ``~num_rows`` exact rows of ``H``.

    Rows are drawn without replacement within each block (per parameter tensor, see
    :func:`parameter_blocks`), ``n_h`` of ``N_h`` from block ``h``; each costs one HVP with a basis
    vector. With ``a_i = |H_ii|`` and ``b_i = ||H_i||_1`` the combined ratio estimator is
    ``sum_h (N_h/n_h) sum a_i / sum_h (N_h/n_h) sum b_i``; its variance is linearised through the
    residuals ``a_i - delta b_i`` with the finite-population correction ``1 - n_h / N_h`` (so a
    census of every row returns the exact value with zero error). Basis vectors take ``dtype`` and
    ``device``, by default ``hvp.dtype`` and ``hvp.device`` (a :class:`NetworkHvp`), else float32 CPU.
    """
    d = _check_blocks(blocks)
    num_rows = check_int("num_rows", num_rows, minimum=1)
    dtype, device = _resolve(hvp, dtype, device)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    counts = stratified_allocation(blocks, num_rows)
    num_a = num_b = 0.0
    per_block: list[tuple[int, int, Tensor, Tensor]] = []
    calls = 0
    for b, n in zip(blocks, counts):
        idx = torch.randperm(b.size, generator=gen)[:n] + b.start
        a = torch.empty(n, dtype=torch.float64)
        r = torch.empty(n, dtype=torch.float64)
        for k, i in enumerate(idx.tolist()):
            e = torch.zeros(d, dtype=dtype, device=device)
            e[i] = 1
            row = hvp(e).detach()
            calls += 1
            a[k] = float(row[i].abs())
            r[k] = float(row.abs().sum(dtype=torch.float64))
        per_block.append((b.size, n, a, r))
        num_a += b.size / n * float(a.sum())
        num_b += b.size / n * float(r.sum())
    if num_b == 0:
        raise ValueError("every sampled row of H is zero; the diagonal mass 0/0 is undefined")
    delta = num_a / num_b
    variance = 0.0
    for size, n, a, r in per_block:
        if n < 2 or n == size:
            continue
        resid = a - delta * r
        variance += size**2 * (1 - n / size) * float(resid.var()) / n
    return RowSampleEstimate(
        estimate=delta,
        std_error=math.sqrt(variance) / num_b,
        rows=sum(counts),
        hvp_calls=calls,
        rows_per_block={b.name: n for b, n in zip(blocks, counts)},
    )


@dataclass(frozen=True)
class DiagonalEstimate:
    """A stochastic estimate of ``diag(H)`` with per-coordinate standard errors."""

    diag: Tensor
    std_error: Tensor
    probes: int
    method: str

    @property
    def relative_std_error(self) -> float:
        """``||std_error||_2 / ||diag||_2`` of the estimate itself: near 1 or above, noise dominates.

        Divided by the (unknown) exact diagonal instead, it would predict the relative L2 error.
        """
        return float(self.std_error.norm() / self.diag.norm().clamp_min(1e-300))


def _probes(num: int, d: int, kind: str, gen: torch.Generator) -> Tensor:
    if kind == "rademacher":
        return torch.randint(0, 2, (num, d), generator=gen, dtype=torch.float64) * 2 - 1
    return torch.randn(num, d, generator=gen, dtype=torch.float64)


def _probe_products(
    hvp: Hvp, Z: Tensor, dtype: torch.dtype, device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """``(z * Hz, z * z)`` per probe, in float64."""
    zhz = torch.empty_like(Z)
    for k in range(Z.shape[0]):
        z = Z[k].to(dtype=dtype, device=device)
        zhz[k] = Z[k] * hvp(z).detach().to(device="cpu", dtype=torch.float64)
    return zhz, Z * Z


def hutchinson_diagonal(
    hvp: Hvp,
    d: int,
    num_probes: int = 10,
    *,
    seed: int = 0,
    probes: Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiagonalEstimate:
    """Hutchinson's estimate ``mean_k z_k * (H z_k)`` of ``diag(H)`` with Rademacher probes.

    Unbiased: ``E[z_i (Hz)_i] = H_ii`` for independent signs. The standard error of coordinate
    ``i`` is the sample standard deviation of ``z_i (Hz)_i`` over probes divided by ``sqrt(m)``.
    ``probes`` (shape ``(m, d)``, entries +-1) replaces the random ones, e.g. all ``2^d`` sign
    vectors for an exact check.
    """
    d = check_int("d", d, minimum=1)
    if probes is None:
        num_probes = check_int("num_probes", num_probes, minimum=2)
        gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        Z = _probes(num_probes, d, "rademacher", gen)
    else:
        Z = probes.to(dtype=torch.float64, device="cpu")
        if Z.dim() != 2 or Z.shape[1] != d or Z.shape[0] < 2:
            raise ValueError(f"probes must have shape (m >= 2, {d}), got {tuple(probes.shape)}")
    zhz, _ = _probe_products(hvp, Z, *_resolve(hvp, dtype, device))
    m = Z.shape[0]
    return DiagonalEstimate(zhz.mean(0), zhz.std(0) / math.sqrt(m), m, "hutchinson")


def bekas_diagonal(
    hvp: Hvp,
    d: int,
    num_probes: int = 10,
    *,
    probe: str = "gaussian",
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiagonalEstimate:
    """Bekas, Kokiopoulou & Saad (2007): ``diag(H) ~ sum_k z_k * H z_k / sum_k z_k * z_k``.

    With ``probe="rademacher"`` the denominator is ``m`` and this is Hutchinson's estimator; with
    Gaussian probes it is a ratio estimator whose standard error is linearised through the
    residuals ``z*Hz - est * z*z``.
    """
    d = check_int("d", d, minimum=1)
    num_probes = check_int("num_probes", num_probes, minimum=2)
    check_choice("probe", probe, ("gaussian", "rademacher"))
    Z = _probes(num_probes, d, probe, torch.Generator().manual_seed(check_int("seed", seed, minimum=0)))
    zhz, zz = _probe_products(hvp, Z, *_resolve(hvp, dtype, device))
    est = zhz.sum(0) / zz.sum(0)
    resid = zhz - est * zz
    se = resid.std(0) / math.sqrt(num_probes) / zz.mean(0)
    return DiagonalEstimate(est, se, num_probes, f"bekas_{probe}")


def relative_l2_error(estimate: Tensor, exact: Tensor) -> float:
    """``||estimate - exact||_2 / ||exact||_2`` in float64."""
    e = estimate.to(torch.float64).cpu()
    x = exact.to(torch.float64).cpu()
    return float((e - x).norm() / x.norm())
