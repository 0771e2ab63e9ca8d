"""Non-convex 2-D test functions for the Newton / trust-region pictures (appendix B, Figs. 7 and 8).

Every function offers its value, gradient and Hessian in numpy float64 and the same value as a torch
callable (for :func:`etr_core.minimize` and autograd). Functions that are sums of squares,
``f(w) = 1/2 ||r(w)||^2 + c``, also give the residual ``r`` and its Jacobian ``J`` so that the
Gauss-Newton matrix ``J^T J`` of Eq. 38 (the GGN with the squared loss) can be formed.

* ``paper`` -- the paper's ``f(w) = 1/2 w0^2 + 1/4 w1^4 - 1/2 w1^2`` (Fig. 7): minimisers
  ``(0, +-1)``, a saddle at the origin, negative curvature in the band ``|w1| < 1/sqrt(3)``. It is a
  sum of squares up to a constant: ``f = 1/2 (w0^2 + 1/2 (w1^2 - 1)^2) - 1/4``.
* ``rosenbrock`` -- ``(1 - w0)^2 + 100 (w1 - w0^2)^2``, the curved valley.
* ``himmelblau`` -- four minima, four saddles and one maximum; a sum of two squares.
* ``monkey_saddle`` -- ``w0^3 - 3 w0 w1^2``: a degenerate saddle (zero Hessian) at the origin and no
  minimiser; runs from anywhere diverge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from etr_core._validation import check_choice

__all__ = [
    "FUNCTIONS",
    "FUNCTION_NAMES",
    "CriticalPoint",
    "ToyFunction",
    "get_function",
    "quadratic_function",
]

# A formula written once for both backends: it receives the two coordinates (numpy arrays or torch
# tensors of any common shape) and the array module (numpy or torch).
Formula = Callable[[Any, Any, ModuleType], Any]


@dataclass(frozen=True)
class CriticalPoint:
    """A known stationary point: ``kind`` is ``"minimum"``, ``"saddle"`` or ``"maximum"``."""

    kind: str
    point: tuple[float, float]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.point, dtype=np.float64)


@dataclass(frozen=True)
class ToyFunction:
    """A smooth function of two variables with its derivatives and drawing metadata.

    ``view`` is the default box ``(x_min, x_max, y_min, y_max)``; ``log_levels`` says whether its level
    sets are best drawn on a logarithmic scale of ``f - f_min`` (steep valleys).
    """

    name: str
    title: str
    latex: str
    formula: Formula = field(repr=False)
    gradient_formula: Callable[[float, float], Sequence[float]] = field(repr=False)
    hessian_formula: Callable[[float, float], Sequence[Sequence[float]]] = field(repr=False)
    view: tuple[float, float, float, float]
    default_start: tuple[float, float]
    critical_points: tuple[CriticalPoint, ...] = ()
    min_value: float | None = None
    residual_formula: Formula | None = field(default=None, repr=False)
    jacobian_formula: Callable[[float, float], Sequence[Sequence[float]]] | None = field(
        default=None, repr=False
    )
    residual_offset: float = 0.0
    log_levels: bool = False
    bounded_below: bool = True

    # ------------------------------------------------------------------ numpy
    def value(self, w: np.ndarray | Sequence[float]) -> Any:
        """``f(w)`` for one point ``(2,)`` (a float) or a batch ``(..., 2)`` (an array)."""
        w = _as_points(w)
        out = self.formula(w[..., 0], w[..., 1], np)
        return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=np.float64)

    def gradient(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """The gradient at one point, shape ``(2,)`` float64."""
        x, y = _as_point(w)
        return np.asarray(self.gradient_formula(x, y), dtype=np.float64)

    def hessian(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """The Hessian at one point, shape ``(2, 2)`` float64 (symmetric)."""
        x, y = _as_point(w)
        return np.asarray(self.hessian_formula(x, y), dtype=np.float64)

    @property
    def is_least_squares(self) -> bool:
        """True when ``f = 1/2 ||r||^2 + residual_offset`` and a Jacobian is known (Gauss-Newton applies)."""
        return self.residual_formula is not None and self.jacobian_formula is not None

    def residuals(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """``r(w)`` with ``f(w) = 1/2 ||r(w)||^2 + residual_offset``; shape ``(k,)``."""
        self._require_least_squares()
        x, y = _as_point(w)
        return np.asarray(self.residual_formula(x, y, np), dtype=np.float64).reshape(-1)

    def jacobian(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """The Jacobian ``J = dr/dw``, shape ``(k, 2)``."""
        self._require_least_squares()
        x, y = _as_point(w)
        return np.asarray(self.jacobian_formula(x, y), dtype=np.float64)

    def gauss_newton_matrix(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """``J^T J``: the first term of the Gauss-Newton decomposition, Eq. 38 (PSD)."""
        J = self.jacobian(w)
        return J.T @ J

    def _require_least_squares(self) -> None:
        if not self.is_least_squares:
            names = ", ".join(n for n, f in FUNCTIONS.items() if f.is_least_squares)
            raise ValueError(
                f"function {self.name!r} is not a sum of squares; Gauss-Newton does not apply "
                f"(least-squares functions: {names})"
            )

    # ------------------------------------------------------------------ torch
    def torch_value(self, w: Any) -> Any:
        """``f`` on a 1-D torch tensor of length 2 (device and dtype of the input; autograd-friendly)."""
        import torch

        w = w.reshape(-1)
        if w.numel() != 2:
            raise ValueError(f"w must have 2 entries, got {w.numel()}")
        return self.formula(w[0], w[1], torch)

    def torch_gradient(self, w: Any) -> Any:
        """The gradient of :meth:`torch_value` by autograd (a new tensor, no graph)."""
        import torch

        w = w.detach().reshape(-1).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.torch_value(w), w)
        return grad.detach()

    def torch_hessian(self, w: Any) -> Any:
        """The Hessian of :meth:`torch_value` by ``torch.autograd.functional.hessian``."""
        import torch

        return torch.autograd.functional.hessian(self.torch_value, w.detach().reshape(-1))

    # ------------------------------------------------------------------ metadata
    def points_of_kind(self, kind: str) -> list[np.ndarray]:
        """Known critical points of one kind (``"minimum"``, ``"saddle"``, ``"maximum"``)."""
        check_choice("kind", kind, ("minimum", "saddle", "maximum"))
        return [c.as_array() for c in self.critical_points if c.kind == kind]

    def nearest_critical_point(self, w: np.ndarray | Sequence[float]) -> tuple[CriticalPoint | None, float]:
        """The known critical point closest to ``w`` and its Euclidean distance (``None, inf`` if none)."""
        x = np.asarray(w, dtype=np.float64).reshape(2)
        best, dist = None, math.inf
        for c in self.critical_points:
            d = float(np.linalg.norm(x - c.as_array()))
            if d < dist:
                best, dist = c, d
        return best, dist


def _as_points(w: np.ndarray | Sequence[float]) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape[-1:] != (2,):
        raise ValueError(f"w must have a trailing dimension of size 2, got shape {w.shape}")
    return w


def _as_point(w: np.ndarray | Sequence[float]) -> tuple[np.float64, np.float64]:
    # numpy scalars, not Python floats: an overflow then gives inf (reported by callers) instead of
    # an OverflowError.
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (2,):
        raise ValueError(f"w must be one point of shape (2,), got shape {w.shape}")
    return w[0], w[1]


# ---------------------------------------------------------------------------- the paper's function
SQRT2 = math.sqrt(2.0)


def _paper(x: Any, y: Any, xp: ModuleType) -> Any:
    return 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2


_PAPER = ToyFunction(
    name="paper",
    title="Paper Fig. 7: ½w₀² + ¼w₁⁴ − ½w₁²",
    latex=r"f(w) = \tfrac12 w_0^2 + \tfrac14 w_1^4 - \tfrac12 w_1^2",
    formula=_paper,
    gradient_formula=lambda x, y: (x, y**3 - y),
    hessian_formula=lambda x, y: ((1.0, 0.0), (0.0, 3.0 * y**2 - 1.0)),
    view=(-1.5, 1.5, -1.5, 1.5),
    default_start=(0.8, 0.3),
    critical_points=(
        CriticalPoint("minimum", (0.0, 1.0)),
        CriticalPoint("minimum", (0.0, -1.0)),
        CriticalPoint("saddle", (0.0, 0.0)),
    ),
    min_value=-0.25,
    # f + 1/4 = 1/2 (w0^2 + 1/2 (w1^2 - 1)^2): residuals r = (w0, (w1^2 - 1)/sqrt(2)).
    residual_formula=lambda x, y, xp: (x, (y**2 - 1.0) / SQRT2),
    jacobian_formula=lambda x, y: ((1.0, 0.0), (0.0, SQRT2 * y)),
    residual_offset=-0.25,
)


# ---------------------------------------------------------------------------- Rosenbrock
def _rosenbrock(x: Any, y: Any, xp: ModuleType) -> Any:
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


_ROSENBROCK = ToyFunction(
    name="rosenbrock",
    title="Rosenbrock: (1 − w₀)² + 100 (w₁ − w₀²)²",
    latex=r"f(w) = (1 - w_0)^2 + 100\,(w_1 - w_0^2)^2",
    formula=_rosenbrock,
    gradient_formula=lambda x, y: (-2.0 * (1.0 - x) - 400.0 * x * (y - x**2), 200.0 * (y - x**2)),
    hessian_formula=lambda x, y: ((2.0 - 400.0 * y + 1200.0 * x**2, -400.0 * x), (-400.0 * x, 200.0)),
    view=(-2.0, 2.0, -1.0, 3.0),
    default_start=(-1.2, 1.0),
    critical_points=(CriticalPoint("minimum", (1.0, 1.0)),),
    min_value=0.0,
    # f = 1/2 ||r||^2 with r = sqrt(2) (1 - w0, 10 (w1 - w0^2)).
    residual_formula=lambda x, y, xp: (SQRT2 * (1.0 - x), SQRT2 * 10.0 * (y - x**2)),
    jacobian_formula=lambda x, y: ((-SQRT2, 0.0), (-SQRT2 * 20.0 * x, SQRT2 * 10.0)),
    log_levels=True,
)


# ---------------------------------------------------------------------------- Himmelblau
def _himmelblau(x: Any, y: Any, xp: ModuleType) -> Any:
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def _himmelblau_gradient(x: float, y: float) -> tuple[float, float]:
    a, b = x * x + y - 11.0, x + y * y - 7.0
    return 4.0 * x * a + 2.0 * b, 2.0 * a + 4.0 * y * b


def _himmelblau_hessian(x: float, y: float) -> tuple[tuple[float, float], tuple[float, float]]:
    hxx = 12.0 * x * x + 4.0 * y - 42.0
    hyy = 12.0 * y * y + 4.0 * x - 26.0
    hxy = 4.0 * (x + y)
    return (hxx, hxy), (hxy, hyy)


_HIMMELBLAU = ToyFunction(
    name="himmelblau",
    title="Himmelblau: (w₀² + w₁ − 11)² + (w₀ + w₁² − 7)²",
    latex=r"f(w) = (w_0^2 + w_1 - 11)^2 + (w_0 + w_1^2 - 7)^2",
    formula=_himmelblau,
    gradient_formula=_himmelblau_gradient,
    hessian_formula=_himmelblau_hessian,
    view=(-5.0, 5.0, -5.0, 5.0),
    default_start=(-0.5, 0.5),
    critical_points=(
        CriticalPoint("minimum", (3.0, 2.0)),
        CriticalPoint("minimum", (-2.805118086953, 3.131312518251)),
        CriticalPoint("minimum", (-3.779310253378, -3.283185991286)),
        CriticalPoint("minimum", (3.58442834033, -1.848126526964)),
        CriticalPoint("maximum", (-0.270844590667, -0.92303855648)),
        CriticalPoint("saddle", (0.086677504555, 2.884254701175)),
        CriticalPoint("saddle", (3.385154183607, 0.073851879838)),
        CriticalPoint("saddle", (-3.073025750764, -0.081353044288)),
        CriticalPoint("saddle", (-0.127961346731, -1.953714980245)),
    ),
    min_value=0.0,
    residual_formula=lambda x, y, xp: (SQRT2 * (x**2 + y - 11.0), SQRT2 * (x + y**2 - 7.0)),
    jacobian_formula=lambda x, y: ((SQRT2 * 2.0 * x, SQRT2), (SQRT2, SQRT2 * 2.0 * y)),
    log_levels=True,
)


# ---------------------------------------------------------------------------- monkey saddle
def _monkey(x: Any, y: Any, xp: ModuleType) -> Any:
    return x**3 - 3.0 * x * y**2


_MONKEY = ToyFunction(
    name="monkey_saddle",
    title="Monkey saddle: w₀³ − 3 w₀ w₁² (unbounded below)",
    latex=r"f(w) = w_0^3 - 3\,w_0 w_1^2",
    formula=_monkey,
    gradient_formula=lambda x, y: (3.0 * x * x - 3.0 * y * y, -6.0 * x * y),
    hessian_formula=lambda x, y: ((6.0 * x, -6.0 * y), (-6.0 * y, -6.0 * x)),
    view=(-1.5, 1.5, -1.5, 1.5),
    default_start=(0.5, 0.4),
    critical_points=(CriticalPoint("saddle", (0.0, 0.0)),),
    min_value=None,
    bounded_below=False,
)

FUNCTIONS: dict[str, ToyFunction] = {f.name: f for f in (_PAPER, _ROSENBROCK, _HIMMELBLAU, _MONKEY)}
FUNCTION_NAMES: tuple[str, ...] = tuple(FUNCTIONS)


def get_function(name: str) -> ToyFunction:
    """The registered function called ``name`` (one of :data:`FUNCTION_NAMES`)."""
    check_choice("name", name, FUNCTION_NAMES)
    return FUNCTIONS[name]


def quadratic_function(
    Q: np.ndarray | Sequence[Sequence[float]],
    w_star: Sequence[float] = (0.0, 0.0),
    *,
    name: str = "quadratic",
    title: str | None = None,
    view: tuple[float, float, float, float] | None = None,
    default_start: tuple[float, float] | None = None,
) -> ToyFunction:
    """``f(w) = 1/2 (w - w*)^T Q (w - w*)`` for a symmetric positive definite 2x2 ``Q`` as a
    :class:`ToyFunction` (the Fig. 1 quadratic of :mod:`etr_core.toy.quadratics` in this interface).

    It is also a sum of squares, ``r = Q^{1/2} (w - w*)``, so Gauss-Newton equals Newton on it.
    """
    Q = np.asarray(Q, dtype=np.float64)
    if Q.shape != (2, 2) or not np.all(np.isfinite(Q)):
        raise ValueError(f"Q must be a finite 2x2 matrix, got shape {Q.shape}")
    if not np.allclose(Q, Q.T, rtol=1e-12, atol=1e-14 * float(np.abs(Q).max() + 1.0)):
        raise ValueError("Q must be symmetric")
    Q = 0.5 * (Q + Q.T)
    lam, V = np.linalg.eigh(Q)
    if not lam[0] > 0:
        raise ValueError(f"Q must be positive definite, got eigenvalues {lam.tolist()}")
    ws = np.asarray(w_star, dtype=np.float64).reshape(2)
    root = (V * np.sqrt(lam)) @ V.T
    q00, q01, q11 = float(Q[0, 0]), float(Q[0, 1]), float(Q[1, 1])
    r00, r01, r11 = float(root[0, 0]), float(root[0, 1]), float(root[1, 1])
    c0, c1 = float(ws[0]), float(ws[1])

    def formula(x: Any, y: Any, xp: ModuleType) -> Any:
        dx, dy = x - c0, y - c1
        return 0.5 * (q00 * dx * dx + 2.0 * q01 * dx * dy + q11 * dy * dy)

    def residual(x: Any, y: Any, xp: ModuleType) -> Any:
        dx, dy = x - c0, y - c1
        return (r00 * dx + r01 * dy, r01 * dx + r11 * dy)

    if view is None:
        half = 2.5 * max(1.0, float(np.linalg.norm(ws)))
        view = (c0 - half, c0 + half, c1 - half, c1 + half)
    if default_start is None:
        default_start = (view[0] + 0.8 * (view[1] - view[0]), view[2] + 0.7 * (view[3] - view[2]))
    kappa = float(lam[1] / lam[0])
    return ToyFunction(
        name=name,
        title=title or f"Quadratic, κ = {kappa:.4g}",
        latex=r"f(w) = \tfrac12 (w - w^\star)^\top Q\, (w - w^\star)",
        formula=formula,
        gradient_formula=lambda x, y: Q @ np.array([x - c0, y - c1]),
        hessian_formula=lambda x, y: Q.copy(),
        view=tuple(float(v) for v in view),
        default_start=(float(default_start[0]), float(default_start[1])),
        critical_points=(CriticalPoint("minimum", (c0, c1)),),
        min_value=0.0,
        residual_formula=residual,
        jacobian_formula=lambda x, y: root.copy(),
        log_levels=kappa > 20.0,
    )
