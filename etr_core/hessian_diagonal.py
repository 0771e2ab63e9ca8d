"""The Hessian-diagonal ellipsoid: the paper's future work (section 6, "(block-) diagonal Hessian
approximations (e.g. Bekas et al. 2007)") as a trust-region / cubic-regularisation norm.

Each step estimates ``diag(H)`` of the mini-batch loss with Hutchinson / Bekas-Kokiopoulou-Saad
probes: ``d_hat = mean_k z_k * (H z_k)`` with Rademacher ``z_k`` (entries +-1), one Hessian-vector
product per probe through the retained graph. ``E[d_hat] = diag(H)`` exactly; the variance of entry
``i`` per probe is ``sum_{j != i} H_ij^2``, so the error falls like ``1/sqrt(probes)``.

Block variants (the blocks of the paper's Fig. 2): ``block="element"`` keeps one value per parameter
entry; ``"layer"`` replaces the estimate by its mean over each parameter tensor; ``"unit"`` by its
mean over each output unit (the rows of a weight tensor, ``dim 0``; entries of a bias or other 1-D
tensor are their own unit). The mean is linear, so a block estimate is unbiased for the block mean of
``diag(H)``.

Smoothing and floor: like RMSProp's ellipsoid (Eq. 3, Corollary 1) with ``d_hat`` in place of the
gradient, ``v_t = beta v_{t-1} + (1 - beta) d_hat_t^2`` and ``m = sqrt(v_t + eps)``: ``m >= sqrt(eps)``
always (a persistent floor) and ``m <= sqrt(max_t d_hat_t^2 + eps)``, so the norms stay uniformly
equivalent (Definition 1, Proposition 2's argument) whenever the curvature is bounded. On a quadratic
with exact probes ``m -> |diag(H)|``: the exact diagonal preconditioner. AdaHessian (Yao et al. 2021)
uses the same root of an EMA of squared Hutchinson diagonals, as a first-order preconditioner.

Probes are drawn from a generator seeded by ``(seed, step)``: no global random state is touched and
a resumed run draws the same probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from etr_core._validation import check_choice, check_int
from etr_core.config import MAX_HESSIAN_PROBES
from etr_core.ellipsoids import DEFAULT_EPS, RMSPropEllipsoid

__all__ = [
    "BLOCKS",
    "HessianDiagonalEllipsoid",
    "block_mean",
    "hutchinson_diagonal_estimate",
    "probe_generator",
]

BLOCKS = ("element", "layer", "unit")
_GOLDEN = 0x9E3779B97F4A7C15


def probe_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, step)`` (distinct streams per step; global RNG untouched)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * _GOLDEN) % (2**63 - 1))


def block_mean(d: Tensor, shapes: Sequence[torch.Size | tuple[int, ...]], block: str) -> Tensor:
    """``d`` (flat, one entry per parameter scalar, tensors in order of ``shapes``) averaged over blocks
    and broadcast back to its length: ``"element"`` returns it unchanged, ``"layer"`` uses one mean per
    tensor, ``"unit"`` one mean per ``dim 0`` slice of each tensor with 2 or more dims."""
    check_choice("block", block, BLOCKS)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != d.numel():
        raise ValueError(f"shapes hold {sum(sizes)} entries but d has {d.numel()}")
    if block == "element":
        return d
    out = []
    for chunk, shape in zip(d.split(sizes), shapes):
        if chunk.numel() == 0:
            out.append(chunk)
        elif block == "layer" or len(shape) < 2:
            if block == "layer":
                out.append(chunk.mean().expand(chunk.numel()))
            else:
                out.append(chunk)
        else:
            rows = chunk.reshape(shape[0], -1)
            out.append(rows.mean(1, keepdim=True).expand_as(rows).reshape(-1))
    return torch.cat(out)


def hutchinson_diagonal_estimate(
    hvp: Callable[[Tensor], Tensor],
    shapes: Sequence[torch.Size | tuple[int, ...]],
    probes: int,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    block: str = "element",
) -> Tensor:
    """``block_mean(mean_k z_k * (H z_k))`` with ``probes`` Rademacher vectors (Hutchinson 1990; Bekas
    et al. 2007), flat, of length ``sum(prod(shape))``, in ``dtype``. Unbiased for the block means of
    ``diag(H)``. ``hvp(v)`` returns ``H v`` for a flat ``v``; it is called ``probes`` times, one probe
    at a time (memory O(d)). Raises ``ValueError`` for ``probes`` outside ``[1, MAX_HESSIAN_PROBES]``
    (1024) or an unknown ``block``; NaN/Inf products propagate."""
    probes = check_int("probes", probes, minimum=1, maximum=MAX_HESSIAN_PROBES)
    check_choice("block", block, BLOCKS)
    d = sum(math.prod(s) for s in shapes)
    total = torch.zeros(d, dtype=dtype, device=device)
    for _ in range(probes):
        # one probe drawn at a time (memory O(d), never probes x d); the generator's stream is the
        # same as drawing the probes x d sign matrix at once, so seeded runs repeat
        signs = torch.randint(0, 2, (d,), generator=generator, dtype=torch.int8)
        z = signs.to(dtype=dtype, device=device).mul_(2).sub_(1)
        total.addcmul_(z, hvp(z).detach().reshape(-1).to(dtype=dtype))
    return block_mean(total.div_(probes), shapes, block)


class HessianDiagonalEllipsoid(RMSPropEllipsoid):
    """``m = sqrt(EMA_beta(d_hat^2) + eps)`` with ``d_hat`` a Hutchinson estimate of ``diag(H)`` per step
    (module docstring). ``probes`` Hessian-vector products per update, ``block`` in :data:`BLOCKS`,
    ``beta`` the EMA factor, ``eps`` the floor (``m >= sqrt(eps)``), ``seed`` the probe stream.

    ``update(g)`` is not how it learns (it needs curvature): call :meth:`update_curvature` with the
    Hessian-vector product of the batch; ``update`` with a ready diagonal estimate folds that in."""

    name = "hessian"

    def __init__(
        self,
        beta: float = 0.8,
        eps: float = DEFAULT_EPS,
        probes: int = 1,
        block: str = "element",
        seed: int = 0,
        eps_mode: str = "paper",
    ) -> None:
        super().__init__(beta=beta, eps=eps, eps_mode=eps_mode)
        self.probes = check_int("probes", probes, minimum=1, maximum=MAX_HESSIAN_PROBES)
        self.block = check_choice("block", block, BLOCKS)
        self.seed = check_int("seed", seed, minimum=0)

    def update_curvature(
        self, hvp: Callable[[Tensor], Tensor], shapes: Sequence[torch.Size | tuple[int, ...]], like: Tensor,
        step: int,
    ) -> int:
        """Estimate ``diag(H)`` with ``self.probes`` products of ``hvp`` (probes seeded by ``(seed, step)``)
        in ``like``'s dtype and device, fold it into the EMA; returns the number of products made.
        Raises ``ValueError`` (state unchanged) when a product is NaN/Inf."""
        d_hat = hutchinson_diagonal_estimate(
            hvp, shapes, self.probes, generator=probe_generator(self.seed, step),
            dtype=like.dtype, device=like.device, block=self.block,
        )
        self.update(d_hat)
        return self.probes

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "probes": self.probes, "block": self.block, "seed": self.seed}

    def _load_extra(self, sd: dict) -> None:
        super()._load_extra(sd)
        self.probes = check_int("probes", sd["probes"], minimum=1, maximum=MAX_HESSIAN_PROBES)
        self.block = check_choice("block", sd["block"], BLOCKS)
        self.seed = check_int("seed", sd["seed"], minimum=0)

    def __repr__(self) -> str:
        return (
            f"HessianDiagonalEllipsoid(beta={self.beta!r}, eps={self.eps!r}, probes={self.probes!r}, "
            f"block={self.block!r}, seed={self.seed!r})"
        )
