"""Where a ray ``s + tau p`` crosses the ellipsoid ``||x||_M = radius`` (appendix B.2, Steihaug).

The crossing solves ``pMp tau^2 + 2 sMp tau + (sMs - radius^2) = 0``. The two roots are computed
with the cancellation-free pairing ``q = -(b + sign(b) sqrt(disc)) / 2``, ``tau = q / a`` and
``tau = c / q``, so neither root loses digits when ``|b|`` dominates; the discriminant is clamped at
zero because rounding can push it slightly negative when ``s`` is already on the boundary.
"""

from __future__ import annotations

import math

__all__ = ["boundary_roots", "boundary_tau"]


def boundary_roots(sMs: float, sMp: float, pMp: float, radius: float) -> tuple[float, float]:
    """Both roots ``(tau_minus, tau_plus)`` of ``||s + tau p||_M = radius``, ``tau_minus <= tau_plus``.

    Inputs are the scalars ``s^T M s``, ``s^T M p``, ``p^T M p`` (> 0) and the radius (> 0). For a
    feasible ``s`` (``sMs <= radius^2``) the roots straddle zero.
    """
    sMs, sMp, pMp, radius = float(sMs), float(sMp), float(pMp), float(radius)
    if not pMp > 0.0 or not math.isfinite(pMp):
        raise ValueError(f"pMp must be a finite positive number, got {pMp!r}")
    if not radius > 0.0 or not math.isfinite(radius):
        raise ValueError(f"radius must be a finite positive number, got {radius!r}")
    a = pMp
    b = 2.0 * sMp
    c = sMs - radius * radius
    disc = max(b * b - 4.0 * a * c, 0.0)
    root = math.sqrt(disc)
    aux = -0.5 * (b + math.copysign(root, b))
    if aux == 0.0:
        # b = 0 and c = 0: s sits on the boundary and p is tangent; both crossings are at 0.
        return 0.0, 0.0
    t1, t2 = aux / a, c / aux
    return (t1, t2) if t1 <= t2 else (t2, t1)


def boundary_tau(sMs: float, sMp: float, pMp: float, radius: float, which: str = "positive") -> float:
    """The root ``tau`` of ``||s + tau p||_M = radius``: ``which="positive"`` gives the larger root
    (``>= 0`` for feasible ``s``), ``"negative"`` the smaller one. Used by Steihaug-Toint CG at
    negative-curvature and boundary exits (appendix B.2).
    """
    lo, hi = boundary_roots(sMs, sMp, pMp, radius)
    if which == "positive":
        return max(hi, 0.0)
    if which == "negative":
        return min(lo, 0.0)
    raise ValueError(f"which must be 'positive' or 'negative', got {which!r}")
