"""Overflow-safe set-up of the trust-region subproblem (paper Eq. 8): working precision, a power-of-two
scale of ``(g, B)`` and a dtype-safe radius.

The minimiser of ``g^T s + 1/2 s^T B s`` over ``||s||_M <= radius`` does not change when ``g`` and
``B`` are multiplied by the same ``c > 0``; the model values (and the Lagrange multiplier) are
multiplied by ``c``. With ``c`` a power of two the scaling is exact in binary floating point. The
solvers therefore rescale a gradient whose ``g^T g`` is 0, not finite or outside ``[2^-64, 2^64]``
to ``max |c g| in [1/2, 1)`` before the recurrences start: a float32 gradient with finite entries but
``||g|| > 1.8e19`` (whose squared norm overflows) or a denormal one (whose squared norm underflows)
is solved like any other, and the predicted decrease is mapped back by ``1/c``. The Eq. 36 stop
tolerance is computed from the unscaled norms (it is not scale invariant).

float16 and bfloat16 inputs are solved in float32 (their range and precision cannot hold the
Krylov recurrences); the step comes back in the input's dtype.

The radius is capped at :func:`safe_radius` of the working dtype (``2^(maxexp // 2 - 8)``, about
7.2e16 in float32), so that ``||s||_M^2`` and every entry of the step stay finite; a step that long
is never meaningful for a network, but a user-set ``max_radius`` may allow it and the solvers must
not raise from inside ``step()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from etr_core.subproblem._common import initial_scalars, read_hvp, stop_tolerance
from etr_core.subproblem.result import SubproblemResult

__all__ = [
    "ScaledProblem",
    "rescale_result",
    "safe_norm",
    "safe_radius",
    "setup",
    "true_tolerance",
    "unscale_history",
    "working_dtype",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_SAFE_LOW, _SAFE_HIGH = 2.0**-64, 2.0**64


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers compute in: float32 for float16/bfloat16, else ``dtype`` itself."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def safe_radius(dtype: torch.dtype) -> float:
    """The largest radius the solvers use for ``dtype``: ``2^(maxexp // 2 - 8)`` of the working
    precision (float32, float16, bfloat16: 2^56 = 7.2e16; float64: 2^504). Above it ``||s||_M^2``
    could overflow."""
    max_exponent = math.frexp(torch.finfo(working_dtype(dtype)).max)[1]  # 128 in float32
    return 2.0 ** (max_exponent // 2 - 8)


def safe_norm(x: Tensor) -> float:
    """``||x||_2`` as a Python float without overflow or underflow for any finite ``x``.

    One reduction in the common case; only when the plain norm is below 2^-60 or not finite
    (float32 entries whose squares overflow or underflow) is it recomputed in float64 on ``x / max|x|``.
    Returns ``nan``/``inf`` only when ``x`` itself holds NaN/Inf.
    """
    x = x.detach().reshape(-1)
    norm = float(torch.linalg.vector_norm(x))
    if math.isfinite(norm) and norm >= 2.0**-60:
        return norm
    amax = float(x.abs().max()) if x.numel() else 0.0
    if amax == 0.0 or not math.isfinite(amax):
        return amax if not math.isnan(norm) else norm
    return float(torch.linalg.vector_norm(x.to(torch.float64) / amax)) * amax


class ScaledProblem(NamedTuple):
    """What a solver works with: ``g`` scaled by ``scale`` and in the working dtype, ``hvp`` giving
    ``scale * B v`` in that dtype, ``m`` in that dtype, the capped radius, and the input's dtype."""

    g: Tensor
    hvp: Callable[[Tensor], Tensor] | None
    m: Tensor
    scale: float
    radius: float
    out_dtype: torch.dtype


def _scale_for(g: Tensor) -> float:
    """A power of two ``c`` with ``max |c g|`` in ``[1/2, 1)``, or 1 when ``g`` is zero or holds
    NaN/Inf (the solvers report those)."""
    amax = float(g.abs().max()) if g.numel() else 0.0
    if amax == 0.0 or not math.isfinite(amax):
        return 1.0
    return math.ldexp(1.0, -math.frexp(amax)[1])


def setup(
    g: Tensor, hvp: Callable[[Tensor], Tensor] | None, m: Tensor, radius: float, *, with_p0: bool = False
) -> tuple[ScaledProblem, Tensor, float, float, Tensor | None]:
    """The solvers' common start: ``(problem, -M^-1 g, g^T g, g^T M^-1 g, p0)`` of the scaled problem.

    ``g`` and ``m`` must already be flat, detached and of equal length (the solvers' input checks);
    ``hvp`` may be ``None`` (first-order step). Casts float16/bfloat16 to float32 and caps the radius.
    The scalars are read once; only when ``g^T g`` is 0, not finite or outside ``[2^-64, 2^64]``
    (or ``g^T M^-1 g`` is 0 or not finite) is ``g`` scaled by a power of two (one more read) and
    the scalars recomputed. ``with_p0=True`` also returns ``-M^-1 g`` in a fresh buffer.
    Raises ``ValueError`` if ``m`` is not finite and strictly positive.
    """
    out_dtype = g.dtype
    wd = working_dtype(out_dtype)
    if wd != out_dtype:
        g, m = g.to(wd), m.to(wd)
        if hvp is not None:
            base = hvp

            def cast_hvp(v: Tensor) -> Tensor:
                return read_hvp(base, v.to(out_dtype)).to(wd)

            hvp = cast_hvp
    p0 = torch.empty_like(g) if with_p0 else None
    neg_inv_m, gg, gamma, _ = initial_scalars(g, m, p0=p0)
    scale = 1.0
    if not (_SAFE_LOW <= gg <= _SAFE_HIGH and math.isfinite(gamma) and gamma > 0.0):
        scale = _scale_for(g)
        if scale != 1.0:
            g = g * scale
            neg_inv_m, gg, gamma, _ = initial_scalars(g, m, p0=p0)
            if hvp is not None:
                inner = hvp

                def scaled_hvp(v: Tensor) -> Tensor:
                    return read_hvp(inner, v) * scale  # not in place: an hvp may return v itself

                hvp = scaled_hvp
    problem = ScaledProblem(g, hvp, m, scale, min(float(radius), safe_radius(wd)), out_dtype)
    return problem, neg_inv_m, gg, gamma, p0


def true_tolerance(
    gg: float, gamma: float, scale: float, kappa: float, theta: float, residual_norm: str
) -> float:
    """Eq. 36's tolerance ``||g|| min(kappa, ||g||^theta)`` of the *unscaled* gradient, expressed in
    the scaled problem's units (the residual scales with ``c``, the tolerance does not):
    ``||c g|| min(kappa, (||c g|| / c)^theta)``, formed without squaring ``c``."""
    if scale == 1.0:
        return stop_tolerance(gg, gamma, kappa, theta, residual_norm)
    norm = math.sqrt(gg) if residual_norm == "l2" else math.sqrt(max(gamma, 0.0))
    return norm * min(kappa, (norm / scale) ** theta)


def unscale_history(history: list[dict] | None, scale: float, keys: tuple[str, ...]) -> None:
    """Divide the model-valued entries ``keys`` of a solver history by ``scale`` in place."""
    if history is None or scale == 1.0:
        return
    for entry in history:
        for key in keys:
            if entry.get(key) is not None:
                entry[key] = entry[key] / scale


def rescale_result(result: SubproblemResult, scale: float, out_dtype: torch.dtype) -> SubproblemResult:
    """Map a result of the scaled problem back: model values and the multiplier divided by ``scale``,
    the step cast to the caller's dtype (the step itself is scale invariant)."""
    if result.step.dtype != out_dtype:
        result.step = result.step.to(out_dtype)
    if scale != 1.0:
        result.pred_reduction = result.pred_reduction / scale
        if result.multiplier is not None:
            result.multiplier = result.multiplier / scale
        unscale_history(result.history, scale, _HISTORY_KEYS)
    return result


_HISTORY_KEYS = ("model_change", "residual_norm", "residual_m_inv", "multiplier")
