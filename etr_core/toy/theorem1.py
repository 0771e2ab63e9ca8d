"""Theorem 1 (Eq. 5) checked at one iterate of a first-order run: the method's preconditioned step is
the minimiser of the linear model over its implicit trust region, compared with a closed form and a
search over the region's boundary (paper section 3.1, Eq. 14 for the KKT residual)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etr_core._validation import check_int
from etr_core.toy.first_order import Trajectory

__all__ = ["Theorem1Check", "check_theorem1"]


@dataclass(frozen=True)
class Theorem1Check:
    """Theorem 1 at step ``t`` of a run: the method's step next to two independent solutions of
    ``min q^T s  s.t.  ||s||_A <= r`` (Eq. 5) and the KKT residual of Eq. 14 with ``lambda = ||q||_{A^-1}``.

    ``closed_form_step`` is ``-r A^-1 q / ||q||_{A^-1}`` solved through a Cholesky factor of ``A``;
    ``boundary_search_step`` minimises ``q^T s`` over ``n_boundary`` points ``s = r C^-T (cos phi, sin phi)``
    of the ellipse's boundary (``A = C C^T``), refined by a bounded scalar search around the best one.
    """

    method: str
    iteration: int
    centre: np.ndarray
    model_gradient: np.ndarray
    shape: np.ndarray
    step_size: float
    radius: float
    method_step: np.ndarray
    closed_form_step: np.ndarray
    boundary_search_step: np.ndarray
    n_boundary: int
    method_model_change: float
    closed_form_model_change: float
    boundary_search_model_change: float
    step_norm_A: float
    multiplier: float
    kkt_residual: float
    closed_form_error: float
    boundary_search_error: float

    @property
    def holds(self) -> bool:
        """True when the method's step is feasible with ``||s||_A = r``, no boundary point has a lower
        model value, the closed form agrees to rounding (scaled by ``cond(A)``) and KKT holds."""
        tiny = np.finfo(np.float64).tiny
        size = max(float(np.linalg.norm(self.closed_form_step)), tiny)
        cond = float(np.linalg.cond(self.shape))
        decrease = abs(self.method_model_change)
        rel = max(1e-9, 1e-14 * cond)    # rounding in A^-1 grows with the ellipse's aspect ratio
        return bool(
            abs(self.step_norm_A - self.radius) <= rel * max(self.radius, tiny)
            and self.method_model_change <= self.boundary_search_model_change + rel * decrease
            and self.closed_form_error <= rel * size
            and self.kkt_residual <= rel * max(float(np.linalg.norm(self.model_gradient)), tiny)
        )


def check_theorem1(trajectory: Trajectory, iteration: int, n_boundary: int = 4096) -> Theorem1Check:
    """Check Theorem 1 (Eq. 4-5; Corollary 1 for the square-root preconditioners) at one step.

    Uses the recorded ``A_t``, ``q_t`` and radius; solves the linear-model trust-region problem by the
    closed form and by a dense search over the ellipse's boundary, and evaluates the KKT condition
    ``q + lambda A s / ||s||_A = 0`` (Eq. 14) at the method's step.
    """
    from scipy.optimize import minimize_scalar

    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    n = trajectory.n_steps
    if n == 0:
        raise ValueError("trajectory has no steps to check")
    t = check_int("iteration", iteration, minimum=0, maximum=n - 1)
    n_boundary = check_int("n_boundary", n_boundary, minimum=16, maximum=10_000_000)
    q = trajectory.model_gradients[t].astype(np.float64)
    A = trajectory.shapes[t].astype(np.float64)
    r = float(trajectory.radii[t])
    s = trajectory.steps[t].astype(np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(A)) and math.isfinite(r)) or not np.any(q):
        raise ValueError(f"step {t} has a zero or non-finite gradient; Theorem 1 needs g_t != 0")
    C = np.linalg.cholesky(A)
    y = np.linalg.solve(C, q)                      # C^-1 q, so ||q||_{A^-1} = ||y||
    dual = float(np.linalg.norm(y))
    closed = -r * np.linalg.solve(C.T, y) / dual

    def boundary_point(phi: float) -> np.ndarray:
        return r * np.linalg.solve(C.T, np.array([math.cos(phi), math.sin(phi)]))

    phis = np.linspace(0.0, 2.0 * math.pi, n_boundary, endpoint=False)
    pts = r * np.linalg.solve(C.T, np.stack([np.cos(phis), np.sin(phis)]))   # (2, n)
    best = int(np.argmin(q @ pts))
    h = 2.0 * math.pi / n_boundary
    res = minimize_scalar(lambda phi: float(q @ boundary_point(phi)), bounds=(phis[best] - h, phis[best] + h),
                          method="bounded", options={"xatol": 1e-13})
    dense = boundary_point(float(res.x))
    s_norm = float(math.sqrt(max(s @ A @ s, 0.0)))
    kkt = q + dual * (A @ s) / s_norm if s_norm > 0 else q
    return Theorem1Check(
        method=trajectory.method,
        iteration=t,
        centre=trajectory.iterates[t].copy(),
        model_gradient=q,
        shape=A,
        step_size=float(trajectory.step_sizes[t]),
        radius=r,
        method_step=s,
        closed_form_step=closed,
        boundary_search_step=dense,
        n_boundary=n_boundary,
        method_model_change=float(q @ s),
        closed_form_model_change=float(q @ closed),
        boundary_search_model_change=float(q @ dense),
        step_norm_A=s_norm,
        multiplier=dual,
        kkt_residual=float(np.linalg.norm(kkt)),
        closed_form_error=float(np.linalg.norm(s - closed)),
        boundary_search_error=float(np.linalg.norm(s - dense)),
    )
