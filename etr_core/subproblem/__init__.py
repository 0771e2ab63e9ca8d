"""Trust-region subproblem solvers (paper Eq. 8, Eq. 36, appendix B.2); all return SubproblemResult."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from etr_core.subproblem.boundary import boundary_roots, boundary_tau
from etr_core.subproblem.exact import solve_exact
from etr_core.subproblem.first_order import cauchy_point, first_order_tr_step
from etr_core.subproblem.gltr import gltr
from etr_core.subproblem.result import (
    BOUNDARY_EXITS,
    EXIT_BOUNDARY,
    EXIT_CONVERGED,
    EXIT_HARD_CASE,
    EXIT_MAX_ITER,
    EXIT_MODEL_INCREASE,
    EXIT_NEGATIVE_CURVATURE,
    EXIT_NONFINITE,
    EXIT_ZERO_GRADIENT,
    SubproblemResult,
)
from etr_core.subproblem.steihaug import STOP_RULES, steihaug_toint_pcg

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
    "SOLVERS",
    "STOP_RULES",
    "SubproblemResult",
    "boundary_roots",
    "boundary_tau",
    "cauchy_point",
    "first_order_tr_step",
    "gltr",
    "solve_exact",
    "solve_subproblem",
    "steihaug_toint_pcg",
]

_SOLVERS: dict[str, Callable[..., SubproblemResult]] = {
    "cg": steihaug_toint_pcg,
    "steihaug": steihaug_toint_pcg,
    "lanczos": gltr,
    "gltr": gltr,
}
SOLVERS = ("cg", "lanczos")


def solve_subproblem(
    solver: str, g: Tensor, hvp: Callable[[Tensor], Tensor], radius: float, m: Tensor, **kwargs: Any
) -> SubproblemResult:
    """Dispatch to ``steihaug_toint_pcg`` (``solver="cg"``) or ``gltr`` (``solver="lanczos"``);
    both take the same arguments (Eq. 8 with the Eq. 36 stop rule)."""
    fn = _SOLVERS.get(solver)
    if fn is None:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}; got {solver!r}")
    return fn(g, hvp, radius, m, **kwargs)
