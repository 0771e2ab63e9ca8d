"""The common result of every trust-region subproblem solver (paper Eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "BOUNDARY_EXITS",
    "EXIT_BOUNDARY",
    "EXIT_CONVERGED",
    "EXIT_HARD_CASE",
    "EXIT_MAX_ITER",
    "EXIT_MODEL_INCREASE",
    "EXIT_NEGATIVE_CURVATURE",
    "EXIT_NONFINITE",
    "EXIT_ZERO_GRADIENT",
    "SubproblemResult",
]

EXIT_CONVERGED = "converged"                  # interior point meeting the stop rule (Eq. 36)
EXIT_BOUNDARY = "boundary"                    # the step reached ||s||_M = radius
EXIT_NEGATIVE_CURVATURE = "negative_curvature"  # p^T B p <= 0 met; moved to the boundary along p
EXIT_MAX_ITER = "max_iter"                    # iteration cap reached
EXIT_ZERO_GRADIENT = "zero_gradient"          # g = 0: the zero step
EXIT_NONFINITE = "nonfinite"                  # g or a Hessian-vector product had NaN/Inf: zero step
EXIT_MODEL_INCREASE = "model_increase"        # the step would raise the model: a fault, reported
EXIT_HARD_CASE = "hard_case"                  # exact solver: More-Sorensen hard case (on the boundary)

BOUNDARY_EXITS = frozenset({EXIT_BOUNDARY, EXIT_NEGATIVE_CURVATURE, EXIT_HARD_CASE})


@dataclass
class SubproblemResult:
    """Outcome of one approximate solve of ``min_s g^T s + 1/2 s^T B s  s.t. ||s||_M <= radius``.

    ``pred_reduction`` is ``m(0) - m(s)`` with its sign: a negative value is a fault (the exit
    then reads ``"model_increase"`` and ``reason`` keeps the solver's own exit), never hidden.
    ``multiplier`` is the Lagrange multiplier ``lambda`` of ``(B + lambda M) s = -g`` where the solver
    knows it. ``on_boundary`` says whether the step lies on the trust-region boundary.
    """

    step: Tensor
    pred_reduction: float
    exit: str
    iterations: int
    hvp_calls: int
    step_m_norm: float
    history: list[dict] | None = None
    multiplier: float | None = None
    on_boundary: bool | None = None
    reason: str | None = None

    @property
    def hit_boundary(self) -> bool:
        """True when the step ends on the trust-region boundary (drives radius growth rules)."""
        if self.on_boundary is not None:
            return self.on_boundary
        return self.exit in BOUNDARY_EXITS or self.reason in BOUNDARY_EXITS

    @property
    def model_change(self) -> float:
        """``m(s) - m(0) = -pred_reduction``."""
        return -self.pred_reduction
