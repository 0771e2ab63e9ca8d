"""Input checks and small shared pieces of the Krylov subproblem solvers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from etr_core._validation import check_choice, check_int, check_nonnegative, check_positive
from etr_core.subproblem.result import SubproblemResult

RESIDUAL_NORMS = ("l2", "m_inv")


def flat_vector(name: str, x: Any) -> Tensor:
    """``x`` detached and flattened; it must be a floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x.detach().reshape(-1)


def diagonal_like(m: Any, g: Tensor) -> Tensor:
    """The norm diagonal ``m`` on ``g``'s device and dtype, with a matching length."""
    m = flat_vector("m", m)
    if m.numel() != g.numel():
        raise ValueError(f"m has {m.numel()} entries but g has {g.numel()}")
    return m.to(device=g.device, dtype=g.dtype)


def check_solver_options(radius: Any, kappa: Any, theta: Any, max_iter: Any, residual_norm: Any) -> float:
    """Validate the shared Krylov options; returns ``radius`` as float."""
    radius = check_positive("radius", radius)
    kappa = check_nonnegative("kappa", kappa)
    if kappa >= 1.0:
        raise ValueError(f"kappa must lie in [0, 1) (Eq. 36 needs kappa_K < 1), got {kappa!r}")
    check_nonnegative("theta", theta)
    check_int("max_iter", max_iter, minimum=0)
    check_choice("residual_norm", residual_norm, RESIDUAL_NORMS)
    return radius


def check_hvp(hvp: Any) -> Callable[[Tensor], Tensor]:
    if not callable(hvp):
        raise TypeError(f"hvp must be callable (v -> B v), got {type(hvp).__name__}")
    return hvp


def read_hvp(hvp: Callable[[Tensor], Tensor], p: Tensor) -> Tensor:
    """``B p`` as a detached flat vector of ``p``'s length, device and dtype."""
    q = hvp(p)
    if not isinstance(q, Tensor):
        raise TypeError(f"hvp must return a torch.Tensor, got {type(q).__name__}")
    q = q.detach().reshape(-1)
    if q.numel() != p.numel():
        raise ValueError(f"hvp returned {q.numel()} entries for a vector of {p.numel()}")
    if q.dtype != p.dtype or q.device != p.device:
        q = q.to(device=p.device, dtype=p.dtype)
    return q


def initial_scalars(g: Tensor, m: Tensor, p0: Tensor | None = None) -> tuple[Tensor, float, float, float]:
    """``(neg_inv_m, g^T g, g^T M^-1 g, min m)`` with one host read; checks ``m`` is finite and > 0.

    ``p0``, when given, receives ``-M^-1 g`` (the first CG direction), which this computes anyway.
    """
    neg_inv_m = torch.reciprocal(m).neg_()
    p0 = torch.mul(g, neg_inv_m, out=p0) if p0 is not None else g * neg_inv_m
    m_min, m_max = torch.aminmax(m)
    stats = torch.stack([torch.dot(g, g), torch.dot(g, p0), m_min, m_max]).tolist()
    gg, neg_gMg, m_min, m_max = (float(x) for x in stats)
    if not (m_min > 0.0 and math.isfinite(m_max)):
        raise ValueError(f"m must be finite and strictly positive, got min(m)={m_min!r}, max(m)={m_max!r}")
    return neg_inv_m, gg, -neg_gMg, m_min


def trivial_result(g: Tensor, exit_reason: str, record: bool) -> SubproblemResult:
    """The zero step for ``g = 0`` or non-finite input."""
    return SubproblemResult(
        step=torch.zeros_like(g),
        pred_reduction=0.0,
        exit=exit_reason,
        iterations=0,
        hvp_calls=0,
        step_m_norm=0.0,
        history=[] if record else None,
        multiplier=None,
        on_boundary=False,
    )


def stop_tolerance(gg: float, gMg: float, kappa: float, theta: float, residual_norm: str) -> float:
    """Eq. 36: ``||g|| min(kappa, ||g||^theta)`` in the chosen norm (l2 or M^-1)."""
    g_norm = math.sqrt(gg) if residual_norm == "l2" else math.sqrt(max(gMg, 0.0))
    return g_norm * min(kappa, g_norm**theta)
