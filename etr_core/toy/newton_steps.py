"""Newton-type steps at one point of a 2-D function (paper appendix B, Figs. 7 and 8): pure Newton
(Eq. 32-33), damped Newton (Eq. 37), Gauss-Newton / Levenberg-Marquardt (Eq. 37-38) and saddle-free
Newton (Dauphin et al. 2014). Each solves ``B s = -g`` with its own model matrix ``B`` and is
classified by :func:`etr_core.toy.quadratic_model.classify_newton_step`; a singular or non-finite
model gives an undefined step with a message instead of an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from etr_core._validation import check_nonnegative
from etr_core.toy.functions import ToyFunction
from etr_core.toy.quadratic_model import (
    KIND_TEXT,
    LocalStep,
    QuadraticModel,
    as_point,
    classify_newton_step,
    finite_model,
    inertia,
    nonfinite_step,
    quadratic_model,
    safe_value,
)

__all__ = ["gauss_newton_step", "newton_step", "saddle_free_newton_step"]


def _critical_point_of_model(B: np.ndarray) -> str:
    """What the model's critical point is (from the inertia of ``B``)."""
    pos, neg, zero = inertia(B)
    if zero:
        return "none (singular)"
    if neg == 0:
        return "minimum"
    if pos == 0:
        return "maximum"
    return "saddle"


def _newton_like(
    fn: ToyFunction, model: QuadraticModel, method: str, label: str, extra: dict[str, Any]
) -> LocalStep:
    w, g, B = model.center, model.gradient, model.matrix
    f0 = model.value
    details = {
        "eigenvalues": model.eigenvalues if finite_model(model) else np.full(2, np.nan),
        "matrix": model.matrix,
        "condition_number": model.condition_number if finite_model(model) else math.nan,
        **extra,
    }
    if not finite_model(model):
        return nonfinite_step(method, label, model, details)
    details["model_critical_point"] = _critical_point_of_model(B)
    if not np.any(g):
        step = np.zeros(2)
        message = f"{label}: {KIND_TEXT['stationary']}."
        return LocalStep(method, label, model, step, "stationary", message, f0, f_after=f0, details=details)
    if inertia(B)[2]:
        lam = details["eigenvalues"]
        message = (
            f"{label}: the model matrix {model.label} is singular (eigenvalues {lam[0]:.3g}, {lam[1]:.3g}); "
            f"the system ({model.label}) s = −g has no unique solution. Add damping to define a step."
        )
        return LocalStep(method, label, model, None, "singular", message, f0, details=details)
    step = np.linalg.solve(B, -g)
    kind = classify_newton_step(g, B, step)
    f1 = safe_value(fn, w + step)
    details["residual"] = float(np.linalg.norm(B @ step + g))
    message = f"{label}: {KIND_TEXT[kind]}."
    return LocalStep(method, label, model, step, kind, message, f0, f_after=f1, details=details)


def newton_step(fn: ToyFunction, w: np.ndarray | Sequence[float], damping: float = 0.0) -> LocalStep:
    """The (damped) Newton step at ``w``: ``(H + damping I) s = -g`` (Eq. 32; Eq. 37 if damped),
    classified by :func:`classify_newton_step`."""
    model = quadratic_model(fn, w, "hessian", damping)
    label = "Newton" if damping == 0 else f"damped Newton (λ = {damping:g})"
    return _newton_like(fn, model, "newton", label, {"damping": float(damping)})


def gauss_newton_step(fn: ToyFunction, w: np.ndarray | Sequence[float], damping: float = 0.0) -> LocalStep:
    """The Gauss-Newton / Levenberg-Marquardt step ``(J^T J + damping I) s = -J^T r`` (Eq. 37-38) of a
    sum-of-squares function. For any other function the step is undefined (with a message)."""
    damping = check_nonnegative("damping", damping)
    w = as_point(w)
    label = "GN" if damping == 0 else f"GN (λ = {damping:g})"
    if not fn.is_least_squares:
        model = quadratic_model(fn, w, "hessian", damping)
        return LocalStep(
            "gauss_newton",
            label,
            model,
            None,
            "not_least_squares",
            f"{label}: {fn.title} is not written as a sum of squares, so it has no Gauss-Newton matrix.",
            model.value,
            details={"damping": float(damping)},
        )
    model = quadratic_model(fn, w, "gauss_newton", damping)
    with np.errstate(all="ignore"):
        gn_kappa = QuadraticModel(model.center, model.value, model.gradient, fn.gauss_newton_matrix(w), "JᵀJ")
    return _newton_like(
        fn,
        model,
        "gauss_newton",
        label,
        {
            "damping": float(damping),
            "undamped_condition_number": gn_kappa.condition_number if finite_model(gn_kappa) else math.nan,
        },
    )


def saddle_free_newton_step(
    fn: ToyFunction, w: np.ndarray | Sequence[float], damping: float = 0.0
) -> LocalStep:
    """The saddle-free Newton step ``(|H| + damping I) s = -g`` with ``|H| = V |Lambda| V^T`` (Dauphin et
    al. 2014; appendix B.C)."""
    damping = check_nonnegative("damping", damping)
    model = quadratic_model(fn, w, "abs_hessian", damping)
    label = "SFN" if damping == 0 else f"SFN (λ = {damping:g})"
    with np.errstate(all="ignore"):
        H = fn.hessian(as_point(w))
    hess_eigs = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.full(2, np.nan)
    return _newton_like(
        fn, model, "saddle_free_newton", label, {"damping": float(damping), "hessian_eigenvalues": hess_eigs}
    )
