"""The local quadratic model at one point of a 2-D function and the types of the steps taken from it
(paper appendix B, Eq. 8, 33, 37-38).

``m(s) = f(w) + g^T s + 1/2 s^T B s`` with ``B`` the Hessian (Newton, trust region), ``J^T J``
(Gauss-Newton) or ``|H|`` (saddle-free Newton), optionally damped; :func:`classify_newton_step` says
where a Newton-type step ``B s = -g`` goes from the inertia of ``B``. The steps themselves are built
in :mod:`etr_core.toy.newton_steps` and :mod:`etr_core.toy.tr_local_step`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etr_core._validation import check_choice, check_nonnegative
from etr_core.toy.functions import ToyFunction

__all__ = [
    "NEWTON_KINDS",
    "LocalStep",
    "QuadraticModel",
    "classify_newton_step",
    "inertia",
    "quadratic_model",
]

# Relative size below which an eigenvalue counts as zero (the matrix as singular).
SINGULAR_RTOL = 1e-10
NEWTON_KINDS = ("descent", "ascent", "saddle-attracted", "stationary", "singular", "nonfinite")


@dataclass(frozen=True)
class QuadraticModel:
    """``m(s) = value + gradient^T s + 1/2 s^T matrix s`` around ``center`` (Eq. 8, 33, 37)."""

    center: np.ndarray
    value: float
    gradient: np.ndarray
    matrix: np.ndarray
    label: str

    def __call__(self, s: np.ndarray | Sequence[float]) -> Any:
        """The model at step(s) ``s`` of shape ``(2,)`` or ``(..., 2)``."""
        s = np.asarray(s, dtype=np.float64)
        out = self.value + s @ self.gradient + 0.5 * np.einsum("...i,ij,...j->...", s, self.matrix, s)
        return float(out) if np.ndim(out) == 0 else out

    def at_points(self, w: np.ndarray) -> Any:
        """The model evaluated at absolute points ``w`` (``(..., 2)``), i.e. ``m(w - center)``."""
        return self(np.asarray(w, dtype=np.float64) - self.center)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the model matrix, ascending."""
        return np.linalg.eigvalsh(self.matrix)

    @property
    def condition_number(self) -> float:
        """``|lambda|_max / |lambda|_min`` (inf for a singular matrix)."""
        lam = np.abs(self.eigenvalues)
        return math.inf if lam.min() == 0.0 else float(lam.max() / lam.min())


@dataclass(frozen=True)
class LocalStep:
    """One method's step from ``model.center``: ``step`` is ``None`` when the method is undefined.

    ``kind`` is the Newton classification (see :func:`classify_newton_step`) for Newton-type steps and
    the solver's exit for the trust-region step. ``model_decrease = m(0) - m(s)`` and
    ``actual_decrease = f(w) - f(w + s)``; ``details`` holds method-specific numbers (eigenvalues,
    radius, multiplier, condition number, ...).
    """

    method: str
    label: str
    model: QuadraticModel
    step: np.ndarray | None
    kind: str
    message: str
    f_before: float
    f_after: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def defined(self) -> bool:
        return self.step is not None

    @property
    def target(self) -> np.ndarray | None:
        """``w + s`` or ``None``."""
        return None if self.step is None else self.model.center + self.step

    @property
    def model_decrease(self) -> float | None:
        return None if self.step is None else self.model.value - self.model(self.step)

    @property
    def actual_decrease(self) -> float | None:
        if self.f_after is None:
            return None
        return self.f_before - self.f_after

    @property
    def directional_derivative(self) -> float | None:
        """``g^T s``: negative for a first-order descent direction."""
        return None if self.step is None else float(self.model.gradient @ self.step)


def as_point(w: np.ndarray | Sequence[float]) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (2,):
        raise ValueError(f"w must be a point with 2 coordinates, got shape {w.shape}")
    return w


def safe_value(fn: ToyFunction, w: np.ndarray) -> float | None:
    with np.errstate(all="ignore"):
        v = fn.value(w)
    return float(v) if math.isfinite(v) else None


def inertia(matrix: np.ndarray) -> tuple[int, int, int]:
    """``(positive, negative, zero)`` eigenvalue counts of a symmetric matrix; an eigenvalue is zero
    when ``|lambda| <= SINGULAR_RTOL * max(|lambda|)`` (or the matrix is zero)."""
    lam = np.linalg.eigvalsh(np.asarray(matrix, dtype=np.float64))
    tol = SINGULAR_RTOL * max(float(np.abs(lam).max()), 1e-300)
    zero = np.abs(lam) <= tol
    return int(np.sum((lam > 0) & ~zero)), int(np.sum((lam < 0) & ~zero)), int(np.sum(zero))


def quadratic_model(
    fn: ToyFunction,
    w: np.ndarray | Sequence[float],
    matrix: str = "hessian",
    damping: float = 0.0,
) -> QuadraticModel:
    """The quadratic model at ``w`` with ``B`` = ``"hessian"`` (Eq. 33), ``"gauss_newton"`` (``J^T J``,
    Eq. 38) or ``"abs_hessian"`` (``|H|``), plus ``damping * I`` (Eq. 37)."""
    check_choice("matrix", matrix, ("hessian", "gauss_newton", "abs_hessian"))
    damping = check_nonnegative("damping", damping)
    w = as_point(w)
    with np.errstate(all="ignore"):
        f0 = float(fn.value(w))
        g = fn.gradient(w)
        if matrix == "hessian":
            B, label = fn.hessian(w), "H"
        elif matrix == "gauss_newton":
            B, label = fn.gauss_newton_matrix(w), "JᵀJ"
        else:
            B, label = _absolute(fn.hessian(w)), "|H|"
    if damping > 0:
        B = B + damping * np.eye(2)
        label = f"{label} + {damping:g} I"
    return QuadraticModel(center=w.copy(), value=f0, gradient=g, matrix=0.5 * (B + B.T), label=label)


def _absolute(H: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(0.5 * (H + H.T))
    return (V * np.abs(lam)) @ V.T


def finite_model(model: QuadraticModel) -> bool:
    return bool(
        np.isfinite(model.value) and np.all(np.isfinite(model.gradient)) and np.all(np.isfinite(model.matrix))
    )


def classify_newton_step(g: np.ndarray, B: np.ndarray, s: np.ndarray | None) -> str:
    """Classify a Newton-type step ``B s = -g`` from the inertia of ``B`` and the sign of ``g^T s``.

    * ``"stationary"`` -- ``g = 0``: the step is zero, the method does not move.
    * ``"singular"`` -- ``B`` has a zero eigenvalue: ``B s = -g`` has no unique solution.
    * ``"descent"`` -- ``B`` positive definite: the step goes to the model's minimiser, ``g^T s < 0``.
    * ``"ascent"`` -- ``g^T s > 0``: the step increases ``f`` to first order. It happens only when
      ``B`` has a negative eigenvalue: the target is the model's maximum or a saddle of it.
    * ``"saddle-attracted"`` -- ``B`` indefinite and ``g^T s <= 0``: locally downhill, but heading to
      the model's saddle point, so Newton iterates are drawn to saddles of ``f`` (Fig. 7 right).
    """
    g = np.asarray(g, dtype=np.float64)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(B))):
        return "nonfinite"
    if not np.any(g):
        return "stationary"
    _, neg, zero = inertia(B)
    if zero > 0 or s is None:
        return "singular"
    if neg == 0:
        return "descent"
    if float(g @ s) > 0.0:
        return "ascent"
    return "saddle-attracted"


KIND_TEXT = {
    "descent": "the model is convex: the Newton step goes to its minimiser and points downhill",
    "ascent": "the step points uphill (gᵀs > 0): the model has negative curvature and its critical point "
    "is not a minimiser",
    "saddle-attracted": "the model is indefinite: the step heads to the model's saddle point, so Newton is "
    "attracted by the saddle of f",
    "stationary": "the gradient is zero: the Newton step is zero and the method cannot move",
    "singular": "the matrix is singular: the Newton system has no unique solution",
    "nonfinite": "the function or its derivatives are not finite here",
}


def nonfinite_step(method: str, label: str, model: QuadraticModel, details: dict[str, Any]) -> LocalStep:
    """The undefined step of ``method`` where its model (value, gradient or matrix) is not finite."""
    return LocalStep(
        method, label, model, None, "nonfinite", f"{label}: {KIND_TEXT['nonfinite']}.", model.value,
        details=details,
    )
