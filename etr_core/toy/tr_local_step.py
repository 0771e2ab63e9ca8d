"""The exact trust-region step at one point of a 2-D function (paper appendix B, Eq. 8 and 34): the
global minimiser of the Newton model inside ``||s||_M <= radius`` (More-Sorensen with the hard case),
and the RMSProp ellipsoid's diagonal at a point for the ellipsoidal region (Eq. 3, Corollary 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from etr_core._validation import check_positive
from etr_core.toy.functions import ToyFunction
from etr_core.toy.quadratic_model import (
    KIND_TEXT,
    LocalStep,
    as_point,
    finite_model,
    nonfinite_step,
    quadratic_model,
    safe_value,
)

__all__ = ["rms_diagonal_at", "trust_region_step"]


def rms_diagonal_at(g: np.ndarray | Sequence[float], beta: float = 0.8, eps: float = 1e-10) -> np.ndarray:
    """The RMSProp ellipsoid's diagonal after one update with ``g`` from an empty state,
    ``m = sqrt((1 - beta) g^2 + eps)`` (Eq. 3 with Corollary 1), via :class:`RMSPropEllipsoid`."""
    import torch

    from etr_core.ellipsoids import RMSPropEllipsoid

    ellipsoid = RMSPropEllipsoid(beta=beta, eps=eps)
    ellipsoid.update(torch.as_tensor(np.asarray(g, dtype=np.float64).reshape(-1)))
    return ellipsoid.diag().numpy().astype(np.float64)


def trust_region_step(
    fn: ToyFunction,
    w: np.ndarray | Sequence[float],
    radius: float,
    m: np.ndarray | Sequence[float] | None = None,
) -> LocalStep:
    """The exact trust-region step: the global minimiser of the Newton model (Eq. 34) inside
    ``||s||_M <= radius`` (Eq. 8; ``m=None`` is the sphere), by More-Sorensen with the hard case."""
    import torch

    from etr_core.subproblem.exact import solve_exact

    radius = check_positive("radius", radius)
    w = as_point(w)
    model = quadratic_model(fn, w, "hessian")
    if m is not None:
        m = np.asarray(m, dtype=np.float64).reshape(-1)
        if m.shape != (2,) or not np.all(np.isfinite(m)) or not np.all(m > 0):
            raise ValueError(f"m must be two finite positive numbers, got {m.tolist()}")
    details: dict[str, Any] = {"radius": radius, "m": None if m is None else m.copy()}
    label = "TR"
    if not finite_model(model):
        return nonfinite_step("trust_region", label, model, details)
    result = solve_exact(
        torch.as_tensor(model.gradient),
        torch.as_tensor(model.matrix),
        radius,
        None if m is None else torch.as_tensor(m),
    )
    step = result.step.detach().cpu().numpy().astype(np.float64)
    details.update(
        exit=result.exit,
        multiplier=result.multiplier,
        hit_boundary=result.hit_boundary,
        step_m_norm=result.step_m_norm,
        pred_reduction=result.pred_reduction,
    )
    f1 = safe_value(fn, w + step)
    norm_word = "sphere" if m is None else "ellipse"
    mult = "n/a" if result.multiplier is None else f"{result.multiplier:.3g}"
    texts = {
        "converged": f"the Newton step fits in the {norm_word}, so TR takes it (λ = 0)",
        "boundary": f"the model's minimiser over the {norm_word} lies on its boundary (λ = {mult})",
        "hard_case": "hard case: the gradient has no component along the most negative curvature direction; "
        f"TR moves along that eigenvector to the boundary (λ = {mult})",
        "zero_gradient": "zero gradient and non-negative curvature: the centre is already the model's "
        "minimiser",
        "max_iter": "the secular-equation iteration hit its cap; the step is feasible",
        "nonfinite": KIND_TEXT["nonfinite"],
    }
    message = f"{label}: {texts.get(result.exit, result.exit)}."
    return LocalStep(
        "trust_region", label, model, step, result.exit, message, model.value, f_after=f1, details=details
    )
