"""The iteration loop of :func:`etr_core.minimize.minimize` (Algorithm 1 on a full objective).

``LoopState`` holds the current point (value, gradient with its graph, dense Hessian once built),
the radius, the counters and the history; ``run_loop`` iterates until a stopping test fires and
returns SciPy's status code (0 converged, 1 iteration cap, 2 no predicted decrease under the
"scipy" rule, 3 non-finite value or gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from etr_core import subproblem as _subproblem
from etr_core._minimize_rules import outer_update
from etr_core._objective import Objective
from etr_core.ellipsoids import Ellipsoid
from etr_core.hvp import make_hvp
from etr_core.subproblem import SubproblemResult, first_order_tr_step
from etr_core.trust_region import reduction_ratio

__all__ = ["LoopSettings", "LoopState", "run_loop", "start_state"]


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs from the call: rule, subproblem solver, stopping tests, resolved options
    (``options``, from ``resolve_options``) and the paper rule's shrink factor (None for "scipy")."""

    rule: str
    subproblem: str
    first_order: bool
    gtol: float
    max_iter: int
    f_target: float | None
    options: dict[str, Any]
    gamma2: float | None

    @property
    def tiny_pred(self) -> float:
        """Predicted decreases at or below this are not evaluated (and never accepted)."""
        return self.options["tiny_pred"] if self.rule == "paper" else 0.0


@dataclass
class LoopState:
    """The current point ``x`` (float64, shape (d,)) with its leaf ``xg``, value ``f_t``/``f`` and
    gradient ``g`` (with a graph unless first-order), the radius, the dense Hessian ``H`` at ``x``
    (subproblem "exact", built at most once per point), the counters and the history records."""

    objective: Objective
    ellipsoid: Ellipsoid
    need_graph: bool
    x: Tensor
    xg: Tensor
    f_t: Tensor
    f: float
    g: Tensor
    radius: float
    history: list[dict[str, Any]] = field(default_factory=list)
    hvp_products: int = 0
    H: Tensor | None = None
    nit: int = 0
    last_accepted: bool = True


def start_state(
    objective: Objective, ellipsoid: Ellipsoid, x: Tensor, radius: float, need_graph: bool
) -> LoopState:
    """Evaluate ``fun`` and its gradient at the start ``x`` (shape (d,)) and return the loop state."""
    xg, f_t = objective.value(x)
    g = objective.gradient(xg, f_t, create_graph=need_graph)
    f = float(f_t.detach())
    return LoopState(objective, ellipsoid, need_graph, x, xg, f_t, f, g, radius)


def run_loop(state: LoopState, s: LoopSettings) -> int:
    """Iterate until a stopping test fires; returns the status code (see the module docstring)."""
    if not (math.isfinite(state.f) and bool(torch.isfinite(state.g).all())):
        return 3
    while True:
        grad_norm = float(torch.linalg.vector_norm(state.g.detach()))
        if grad_norm < s.gtol or (s.f_target is not None and state.f < s.f_target):
            return 0
        if state.nit >= s.max_iter:
            return 1
        status = _iteration(state, s, grad_norm)
        if status is not None:
            return status


def _iteration(state: LoopState, s: LoopSettings, grad_norm: float) -> int | None:
    """One iteration: ellipsoid update, subproblem, trial point, rho, radius; a status ends the run."""
    g = state.g
    updated = s.options["ellipsoid_update"] == "every_iteration" or state.last_accepted
    if updated:
        state.ellipsoid.update(g.detach())
    m = state.ellipsoid.diag(like=g)
    result = _solve(state, s, m)
    state.hvp_products += result.hvp_calls
    pred = float(result.pred_reduction)
    if s.rule == "scipy":
        # SciPy forms f - m(p) with m(p) = f + g^T p + p^T H p / 2: a decrease below f's
        # rounding unit reads as 0 there and ends the run (status 2); so it does here.
        pred = state.f - (state.f - pred)
    step = result.step.detach()
    record = _record(state, grad_norm, m, updated, result, step, pred)
    if s.rule == "scipy" and not pred > 0.0:
        nan = math.nan
        record.update(rho=nan, accepted=False, quality="unsuccessful", trial_f=nan, actual_reduction=nan)
        record.update(radius_after=state.radius)
        state.history.append(record)  # not counted in nit, as in SciPy
        return 2
    trial = None
    trial_f = math.nan
    if math.isfinite(pred) and pred > s.tiny_pred:
        trial = state.x + step
        xg_trial, f_trial_t = state.objective.value(trial)
        trial_f = float(f_trial_t.detach())
    rho = reduction_ratio(state.f, trial_f, pred, s.tiny_pred)
    quality, accepted, state.radius = outer_update(
        s.rule, rho, state.radius, s.options, s.gamma2, result.hit_boundary
    )
    record.update(rho=rho, accepted=accepted, quality=quality, trial_f=trial_f)
    record.update(actual_reduction=state.f - trial_f, radius_after=state.radius)
    state.history.append(record)
    state.nit += 1
    state.last_accepted = accepted
    if not accepted:
        return None
    # rho is -inf unless the trial point was evaluated, so an accepted step always has one
    state.x, state.xg, state.f_t, state.f, state.H = trial, xg_trial, f_trial_t, trial_f, None
    state.g = state.objective.gradient(state.xg, state.f_t, create_graph=state.need_graph)
    if not bool(torch.isfinite(state.g).all()):
        return 3
    return None


def _solve(state: LoopState, s: LoopSettings, m: Tensor) -> SubproblemResult:
    """The step at the current point within ``||s||_M <= radius`` (``m``: the diagonal of M)."""
    gd = state.g.detach()
    if s.first_order:
        return first_order_tr_step(gd, m, state.radius)
    if s.subproblem == "exact":
        if state.H is None:
            state.H = state.objective.hessian(state.g, state.xg)
        return _subproblem.solve_exact(gd, state.H, state.radius, m)
    o = s.options
    hvp = make_hvp(state.g, [state.xg])
    return _subproblem.solve_subproblem(
        s.subproblem,
        gd,
        hvp,
        state.radius,
        m,
        kappa=o["krylov_tol"],
        theta=o["theta"],
        max_iter=o["max_krylov"],
        stop_rule=o["stop_rule"],
        residual_norm=o["residual_norm"],
        root=o["root"],
    )


def _record(
    state: LoopState,
    grad_norm: float,
    m: Tensor,
    updated: bool,
    result: SubproblemResult,
    step: Tensor,
    pred: float,
) -> dict[str, Any]:
    """The history record of the iteration, before the trial point is judged."""
    return dict(
        iteration=state.nit,
        x=state.x.clone(),
        f=state.f,
        grad_norm=grad_norm,
        radius_before=state.radius,
        m=m.detach().clone(),
        ellipsoid_updated=updated,
        exit=result.exit,
        cg_iterations=int(result.iterations),
        hvp_calls=int(result.hvp_calls),
        step=step.clone(),
        step_m_norm=float(result.step_m_norm),
        pred_reduction=pred,
    )
