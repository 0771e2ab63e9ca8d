"""Diagonal mass of a matrix (Becker et al., 1988; paper section 3.2) and its block-wise variants.

``delta(A) = sum_i |A_ii| / sum_ij |A_ij|`` is the share of the absolute mass of ``A`` that sits on
its diagonal: 1 for a diagonal matrix, ``1/d`` for the all-ones matrix. The paper compares
``delta_H`` of network Hessians against a Wigner baseline to argue that a diagonal ellipsoid is a
sensible trust-region shape. Per-block values say where the off-diagonal mass lives: a Hessian
can carry most of its mass inside the per-layer diagonal blocks while its diagonal proper holds
only a few percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from etr_core.curvature.hessian import ParameterBlock

__all__ = [
    "BlockMass",
    "EntryScales",
    "block_diagonal_mass",
    "block_masses",
    "diagonal_mass",
    "entry_scales",
]


def _square(A: Tensor, name: str = "A") -> Tensor:
    if not isinstance(A, Tensor):
        A = torch.as_tensor(A)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {tuple(A.shape)}")
    # A float64 sum is non-finite whenever an entry is (and ~20x cheaper than isfinite(A).all() on
    # CPU); only then is the exact test paid, so an overflowing sum of finite entries is not rejected.
    if not math.isfinite(float(A.sum(dtype=torch.float64))) and not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} contains NaN or Inf entries; its diagonal mass is undefined")
    return A


_ROWS = 1024  # rows per chunk: sums over a 10k x 10k float32 H never allocate a second full copy


def _abs_sum(A: Tensor) -> float:
    return sum(float(A[i : i + _ROWS].abs().sum(dtype=torch.float64)) for i in range(0, A.shape[0], _ROWS))


def _sq_sum(A: Tensor) -> float:
    return sum(
        float(A[i : i + _ROWS].to(torch.float64).pow(2).sum()) for i in range(0, A.shape[0], _ROWS)
    )


def _total(A: Tensor) -> float:
    total = _abs_sum(A)
    if total == 0.0:
        raise ValueError("the matrix is all zeros; its diagonal mass 0/0 is undefined")
    return total


def diagonal_mass(A: Tensor) -> float:
    """``delta_A = sum_i |A_ii| / sum_i sum_j |A_ij|`` (paper section 3.2), summed in float64."""
    A = _square(A)
    return float(A.diagonal().abs().sum(dtype=torch.float64)) / _total(A)


def _check_blocks(blocks: Sequence[ParameterBlock], d: int) -> None:
    position = 0
    for b in blocks:
        if b.start != position or b.stop <= b.start:
            raise ValueError(
                f"blocks must tile [0, {d}) contiguously in order; block {b.name!r} spans "
                f"[{b.start}, {b.stop}) but the previous one ended at {position}"
            )
        position = b.stop
    if position != d:
        raise ValueError(f"blocks cover [0, {position}) but the matrix has d = {d}")


def block_diagonal_mass(A: Tensor, blocks: Sequence[ParameterBlock]) -> float:
    """Share of ``sum |A_ij|`` inside the diagonal blocks ``A[b, b]`` (per tensor or per layer)."""
    A = _square(A)
    _check_blocks(blocks, A.shape[0])
    inside = sum(_abs_sum(A[b.slice, b.slice]) for b in blocks)
    return inside / _total(A)


@dataclass(frozen=True)
class BlockMass:
    """Mass statistics of one diagonal block ``A[b, b]`` of a blocked matrix."""

    name: str
    start: int
    stop: int
    size: int
    share_of_total: float   # sum |A[b, b]| / sum |A|
    delta: float            # diagonal mass of the block itself
    delta_over_uniform: float  # delta / (1 / size): how far above a uniform spread of |entries|


def block_masses(A: Tensor, blocks: Sequence[ParameterBlock]) -> list[BlockMass]:
    """Per-block diagonal mass and share of the total mass, for the per-layer table of the app."""
    A = _square(A)
    _check_blocks(blocks, A.shape[0])
    total = _total(A)
    rows = []
    for b in blocks:
        sub = A[b.slice, b.slice]
        sub_total = _abs_sum(sub)
        on_diag = float(sub.diagonal().abs().sum(dtype=torch.float64))
        delta = on_diag / sub_total if sub_total > 0 else float("nan")
        rows.append(BlockMass(b.name, b.start, b.stop, b.size, sub_total / total, delta, delta * b.size))
    return rows


@dataclass(frozen=True)
class EntryScales:
    """Scales of the diagonal and off-diagonal entries of a symmetric matrix."""

    rms_diag: float
    rms_off: float
    mean_abs_diag: float
    mean_abs_off: float


def entry_scales(A: Tensor) -> EntryScales:
    """RMS and mean absolute value of the diagonal and of the off-diagonal entries of ``A``.

    The RMS values are the maximum-likelihood standard deviations of a zero-mean Gaussian Wigner
    matrix fitted to ``A`` (Eq. 7), the scales the RMS-matched baseline plugs into Proposition 1.
    """
    A = _square(A)
    d = A.shape[0]
    if d < 2:
        raise ValueError(f"entry_scales needs d >= 2 to have off-diagonal entries, got d = {d}")
    diag = A.diagonal().to(torch.float64)
    n_off = d * d - d
    sq_off = _sq_sum(A) - float((diag * diag).sum())
    abs_off = _abs_sum(A) - float(diag.abs().sum())
    return EntryScales(
        rms_diag=float(diag.pow(2).mean().sqrt()),
        rms_off=max(sq_off, 0.0) ** 0.5 / n_off**0.5,
        mean_abs_diag=float(diag.abs().mean()),
        mean_abs_off=max(abs_off, 0.0) / n_off,
    )
