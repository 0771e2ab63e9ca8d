"""Local quadratic models at one point and the steps different methods take from them (appendix B).

At ``w`` every second-order method builds ``m(s) = f(w) + g^T s + 1/2 s^T B s`` and moves somewhere:

* **Newton** (Eq. 32-33): ``B = H``; the step goes to the model's *critical point*, ``H s = -g``. If
  ``H`` is indefinite that point is a saddle of the model, if ``H`` is negative definite a maximum,
  which is why the Newton step "may be ascending or attracted by a saddle" (Fig. 7).
* **Trust region** (Eq. 8 / 34): the global *minimiser* of the same model inside
  ``||s||_M <= radius``, solved exactly by :func:`etr_core.subproblem.exact.solve_exact`.
* **Gauss-Newton / GGN** (Eq. 38): ``B = J^T J`` (+ ``lambda I``, Eq. 37), positive semi-definite.
* **Saddle-free Newton** (Dauphin et al. 2014): ``B = |H| = V |Lambda| V^T`` (+ ``lambda I``).

Legitimate but awkward inputs (zero gradient, singular matrices, a start on a saddle) never raise:
the step comes back with ``defined=False`` or a zero step and a ``message`` saying what happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etr_core._validation import check_choice, check_nonnegative, check_positive
from etr_core.toy.functions import ToyFunction

__all__ = [
    "NEWTON_KINDS",
    "LocalStep",
    "QuadraticModel",
    "all_local_steps",
    "classify_newton_step",
    "gauss_newton_step",
    "inertia",
    "newton_step",
    "quadratic_model",
    "rms_diagonal_at",
    "saddle_free_newton_step",
    "trust_region_step",
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


def _point(w: np.ndarray | Sequence[float]) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (2,):
        raise ValueError(f"w must be a point with 2 coordinates, got shape {w.shape}")
    return w


def _safe_value(fn: ToyFunction, w: np.ndarray) -> float | None:
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
    w = _point(w)
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


def _finite_model(model: QuadraticModel) -> bool:
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


_KIND_TEXT = {
    "descent": "the model is convex: the Newton step goes to its minimiser and points downhill",
    "ascent": "the step points uphill (gᵀs > 0): the model has negative curvature and its critical point "
    "is not a minimiser",
    "saddle-attracted": "the model is indefinite: the step heads to the model's saddle point, so Newton is "
    "attracted by the saddle of f",
    "stationary": "the gradient is zero: the Newton step is zero and the method cannot move",
    "singular": "the matrix is singular: the Newton system has no unique solution",
    "nonfinite": "the function or its derivatives are not finite here",
}


def _critical_point_of_model(B: np.ndarray) -> str:
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
        "eigenvalues": model.eigenvalues if _finite_model(model) else np.full(2, np.nan),
        "matrix": model.matrix,
        "condition_number": model.condition_number if _finite_model(model) else math.nan,
        **extra,
    }
    if not _finite_model(model):
        return LocalStep(
            method,
            label,
            model,
            None,
            "nonfinite",
            f"{label}: {_KIND_TEXT['nonfinite']}.",
            f0,
            details=details,
        )
    details["model_critical_point"] = _critical_point_of_model(B)
    if not np.any(g):
        step = np.zeros(2)
        return LocalStep(
            method,
            label,
            model,
            step,
            "stationary",
            f"{label}: {_KIND_TEXT['stationary']}.",
            f0,
            f_after=f0,
            details=details,
        )
    if inertia(B)[2]:
        lam = details["eigenvalues"]
        return LocalStep(
            method,
            label,
            model,
            None,
            "singular",
            f"{label}: the model matrix {model.label} is singular (eigenvalues "
            f"{lam[0]:.3g}, {lam[1]:.3g}); the system ({model.label}) s = −g has no unique "
            "solution. Add damping to define a step.",
            f0,
            details=details,
        )
    step = np.linalg.solve(B, -g)
    kind = classify_newton_step(g, B, step)
    f1 = _safe_value(fn, w + step)
    details["residual"] = float(np.linalg.norm(B @ step + g))
    message = f"{label}: {_KIND_TEXT[kind]}."
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
    w = _point(w)
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
            "undamped_condition_number": gn_kappa.condition_number if _finite_model(gn_kappa) else math.nan,
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
        H = fn.hessian(_point(w))
    hess_eigs = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.full(2, np.nan)
    return _newton_like(
        fn, model, "saddle_free_newton", label, {"damping": float(damping), "hessian_eigenvalues": hess_eigs}
    )


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
    w = _point(w)
    model = quadratic_model(fn, w, "hessian")
    if m is not None:
        m = np.asarray(m, dtype=np.float64).reshape(-1)
        if m.shape != (2,) or not np.all(np.isfinite(m)) or not np.all(m > 0):
            raise ValueError(f"m must be two finite positive numbers, got {m.tolist()}")
    details: dict[str, Any] = {"radius": radius, "m": None if m is None else m.copy()}
    label = "TR"
    if not _finite_model(model):
        return LocalStep(
            "trust_region",
            label,
            model,
            None,
            "nonfinite",
            f"{label}: {_KIND_TEXT['nonfinite']}.",
            model.value,
            details=details,
        )
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
    f1 = _safe_value(fn, w + step)
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
        "nonfinite": _KIND_TEXT["nonfinite"],
    }
    message = f"{label}: {texts.get(result.exit, result.exit)}."
    return LocalStep(
        "trust_region", label, model, step, result.exit, message, model.value, f_after=f1, details=details
    )


def all_local_steps(
    fn: ToyFunction,
    w: np.ndarray | Sequence[float],
    radius: float,
    m: np.ndarray | Sequence[float] | None = None,
    damping: float = 0.0,
    gn_damping: float | None = None,
) -> dict[str, LocalStep]:
    """Newton, TR, GN (if ``fn`` is a sum of squares) and SFN at one point, keyed by method name.

    ``damping`` applies to SFN and ``gn_damping`` (default: ``damping``) to Gauss-Newton; Newton is pure.
    """
    gn_damping = damping if gn_damping is None else gn_damping
    return {
        "newton": newton_step(fn, w),
        "trust_region": trust_region_step(fn, w, radius, m),
        "gauss_newton": gauss_newton_step(fn, w, gn_damping),
        "saddle_free_newton": saddle_free_newton_step(fn, w, damping),
    }
