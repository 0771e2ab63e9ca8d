"""Automatic initial radius: the length of the first Cauchy step in the ellipsoidal norm.

Paper Table 1 starts every run at Delta_0 = 1e-4 and grows the radius by gamma1 = 1.1 per very
successful step, so a network whose useful steps are of length ~1 in the M-norm spends about
log(1e4) / log(1.1) ~ 97 steps only growing the region. ``auto_radius=True`` (``radius="auto"`` in
:class:`etr_core.optim.EllipsoidalTR`) replaces Delta_0, at the first step, by the radius of the
Cauchy point of that step's model in the ellipsoidal norm ``||s||_M = sqrt(s^T M s)``:

    d = M^{-1} g,   t* = g^T M^{-1} g / (d^T H d),   Delta_0 = ||t* d||_M = (g^T M^{-1} g)^{3/2} / (d^T H d),

i.e. the minimiser of the quadratic model ``g^T s + 1/2 s^T H s`` along the steepest-descent
direction of the M-norm (Conn, Gould and Toint, Trust-Region Methods, section 6.3.2; the paper's
Theorem 1 direction). It costs one Hessian-vector product, counted in ``counters["hvp"]``. Where
``d^T H d <= 0`` or is not finite the model has no minimiser along ``d`` and the configured
``radius`` stays. The chosen radius is clipped to ``[tiny, cap]`` (the cap ``lr * max_radius``) and
kept in the region's state as ``auto_radius``, so ``state_dict``/``deepcopy``/pickle keep it and a
resumed run does not choose again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["cauchy_radius"]


def cauchy_radius(g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor) -> float | None:
    """The M-norm length of the Cauchy step of the model ``g^T s + 1/2 s^T H s`` (module docstring).

    ``g``: flat gradient, shape (d,); ``hvp``: ``v -> H v`` for flat ``v`` of shape (d,); ``m``: the
    diagonal of M, shape (d,), positive. Returns ``(g^T M^-1 g)^{3/2} / (d^T H d)`` in float64, or
    ``None`` when the curvature along ``d = M^-1 g`` is not positive and finite or ``g`` is zero.
    One call of ``hvp``."""
    if g.shape != m.shape or g.dim() != 1:
        raise ValueError(
            f"g and m must be flat tensors of one shape, got {tuple(g.shape)} and {tuple(m.shape)}"
        )
    d = g / m
    gmg = float(torch.dot(g.to(torch.float64), d.to(torch.float64)))
    if not (math.isfinite(gmg) and gmg > 0):
        return None
    curvature = float(torch.dot(d.to(torch.float64), hvp(d).to(torch.float64)))
    if not (math.isfinite(curvature) and curvature > 0):
        return None
    radius = gmg**1.5 / curvature
    return radius if math.isfinite(radius) and radius > 0 else None
