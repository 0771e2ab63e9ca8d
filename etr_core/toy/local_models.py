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

from collections.abc import Sequence

import numpy as np

from etr_core.toy.functions import ToyFunction
from etr_core.toy.newton_steps import gauss_newton_step, newton_step, saddle_free_newton_step
from etr_core.toy.quadratic_model import (
    NEWTON_KINDS,
    SINGULAR_RTOL,
    LocalStep,
    QuadraticModel,
    classify_newton_step,
    inertia,
    quadratic_model,
)
from etr_core.toy.tr_local_step import rms_diagonal_at, trust_region_step

__all__ = [
    "NEWTON_KINDS",
    "SINGULAR_RTOL",
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
