"""Outer trust-region rules of Algorithm 1 (lines 6-7, Eq. 10): rho, step quality, radius update.

Pure functions on Python floats; ``rho`` is always computed in float64 so that a predicted decrease
near the float32 resolution of the loss does not turn it into noise.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from etr_core._validation import check_choice, check_greater, check_open_interval, check_positive, check_real

__all__ = [
    "QUALITIES",
    "SUCCESSFUL",
    "UNSUCCESSFUL",
    "VERY_SUCCESSFUL",
    "classify_step",
    "reduction_ratio",
    "update_radius",
    "validate_tr_parameters",
]

VERY_SUCCESSFUL = "very_successful"
SUCCESSFUL = "successful"
UNSUCCESSFUL = "unsuccessful"
QUALITIES = (VERY_SUCCESSFUL, SUCCESSFUL, UNSUCCESSFUL)


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or a one-element tensor, got {value!r}") from None


def reduction_ratio(f_old: Any, f_new: Any, pred: Any, tiny: float = 0.0) -> float:
    """Actual over predicted decrease, ``rho = (f_old - f_new) / pred`` (Eq. 10), in float64.

    Returns ``-inf`` (a rejected step) when ``f_old``, ``f_new`` or ``pred`` is not finite, or when
    ``pred <= tiny``: a step that predicts no decrease carries no information and is never accepted
    (the published code set ``rho = 1`` there, accepting and growing the radius).
    """
    f_old, f_new, pred = _as_float("f_old", f_old), _as_float("f_new", f_new), _as_float("pred", pred)
    tiny = check_real("tiny", tiny)
    if not (math.isfinite(f_old) and math.isfinite(f_new) and math.isfinite(pred)):
        return -math.inf
    if pred <= tiny:
        return -math.inf
    rho = (f_old - f_new) / pred
    return rho if not math.isnan(rho) else -math.inf


def classify_step(rho: float, eta1: float, eta2: float) -> str:
    """``"very_successful"`` if ``rho >= eta2``, ``"successful"`` if ``rho >= eta1``, else
    ``"unsuccessful"`` (Algorithm 1, line 7; NaN is unsuccessful). The paper writes ``rho > eta2``
    for very successful; the boundary case ``rho = eta2`` is a measure-zero event either way.
    """
    rho = _as_float("rho", rho)
    eta1 = check_real("eta1", eta1)
    eta2 = check_real("eta2", eta2)
    if eta1 > eta2:
        raise ValueError(f"eta1 must be <= eta2, got eta1={eta1!r}, eta2={eta2!r}")
    if math.isnan(rho):
        return UNSUCCESSFUL
    if rho >= eta2:
        return VERY_SUCCESSFUL
    if rho >= eta1:
        return SUCCESSFUL
    return UNSUCCESSFUL


def update_radius(
    radius: float,
    quality: str,
    gamma1: float,
    gamma2: float,
    max_radius: float,
    hit_boundary: bool | None = None,
    grow_only_on_boundary: bool = False,
) -> float:
    """New radius after a step of the given quality (Algorithm 1, line 7).

    very successful: ``min(gamma1 radius, max_radius)``; successful: unchanged; unsuccessful:
    ``radius / gamma2``. With ``grow_only_on_boundary=True`` (SciPy's rule) a very successful step
    grows the radius only if it hit the boundary (``hit_boundary`` is then required). The result
    always satisfies ``0 < radius <= max_radius``.
    """
    radius = check_positive("radius", radius)
    max_radius = check_positive("max_radius", max_radius)
    check_greater("gamma1", gamma1, 1.0)
    check_greater("gamma2", gamma2, 1.0)
    check_choice("quality", quality, QUALITIES)
    if grow_only_on_boundary and hit_boundary is None:
        raise ValueError("hit_boundary must be given (True/False) when grow_only_on_boundary=True")
    if quality == VERY_SUCCESSFUL and (not grow_only_on_boundary or hit_boundary):
        new = radius * float(gamma1)
    elif quality == UNSUCCESSFUL:
        new = radius / float(gamma2)
    else:
        new = radius
    return min(max(new, sys.float_info.min), max_radius)


def validate_tr_parameters(
    radius: float,
    max_radius: float,
    eta1: float,
    eta2: float,
    gamma1: float,
    gamma2: float,
) -> None:
    """Check Algorithm 1's inputs: ``0 < eta1 < eta2 < 1``, ``gamma1, gamma2 > 1``,
    ``0 < radius <= max_radius``; raises ``ValueError``/``TypeError`` naming the offender.
    """
    eta1 = check_open_interval("eta1", eta1, 0.0, 1.0)
    eta2 = check_open_interval("eta2", eta2, 0.0, 1.0)
    if not eta1 < eta2:
        raise ValueError(f"eta1 must be < eta2, got eta1={eta1!r}, eta2={eta2!r}")
    check_greater("gamma1", gamma1, 1.0)
    check_greater("gamma2", gamma2, 1.0)
    radius = check_positive("radius", radius)
    max_radius = check_positive("max_radius", max_radius)
    if radius > max_radius:
        raise ValueError(f"radius must be <= max_radius = {max_radius!r}, got {radius!r}")
