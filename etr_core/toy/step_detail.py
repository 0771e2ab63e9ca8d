"""One iteration of a 2-D trust-region run, taken apart for the app's Step view (Algorithm 1, Eq. 8, 36).

For iteration ``t`` of a :class:`~etr_core.toy.second_order.RunHistory`: the quadratic model at
``w_t``, the region ``||s||_{M_t} <= Delta_t``, every Steihaug-Toint CG iterate of the subproblem
solve (recomputed with the exact Hessian and the run's own solver options) and the step's ``rho``
and acceptance as the run recorded them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etr_core._validation import check_int
from etr_core.toy.functions import ToyFunction
from etr_core.toy.local_models import QuadraticModel, quadratic_model
from etr_core.toy.second_order import RunHistory

__all__ = ["StepDetail", "tr_step_detail"]

_SOLVER_OPTIONS = ("max_krylov", "krylov_tol", "theta", "stop_rule", "residual_norm", "root")


@dataclass(frozen=True)
class StepDetail:
    """Iteration ``t`` of a TR run: centre ``w_t`` (2,), radius ``Delta_t``, ellipsoid diagonal ``m``
    (2,), the model, the CG iterates as absolute points ``(k + 1, 2)`` (``w_t`` first), the proposed
    step, ``rho`` and whether it was accepted, the solver's exit and the predicted decrease."""

    iteration: int
    centre: np.ndarray
    radius: float
    m: np.ndarray
    model: QuadraticModel
    cg_points: np.ndarray
    step: np.ndarray
    rho: float
    accepted: bool
    exit: str
    predicted_decrease: float

    @property
    def target(self) -> np.ndarray:
        """``w_t + s_t``, the trial point."""
        return self.centre + self.step


def tr_step_detail(fn: ToyFunction, run: RunHistory, t: int) -> StepDetail:
    """Rebuild iteration ``t`` of the TR run ``run`` on ``fn`` (``0 <= t < run.nit``).

    Raises ``ValueError`` when the run has no trust region (Newton, GD) or ``t`` is out of range,
    ``TypeError`` when ``run`` is not a :class:`RunHistory`."""
    import torch

    from etr_core.subproblem.steihaug import steihaug_toint_pcg

    if not isinstance(run, RunHistory):
        raise TypeError(f"run must be a RunHistory, got {type(run).__name__}")
    if run.nit == 0 or not np.all(np.isfinite(run.radius)):
        raise ValueError(f"run {run.label!r} has no trust-region iterations to show")
    t = check_int("t", t, minimum=0, maximum=run.nit - 1)
    w = run.iterates[t]
    model = quadratic_model(fn, w)
    H = torch.as_tensor(model.matrix, dtype=torch.float64)
    options = {k: v for k, v in run.options.items() if k in _SOLVER_OPTIONS}
    solver = {"kappa": options.pop("krylov_tol", 0.1), "max_iter": options.pop("max_krylov", 50), **options}
    result = steihaug_toint_pcg(torch.as_tensor(model.gradient, dtype=torch.float64), lambda v: H @ v,
                                float(run.radius[t]), torch.as_tensor(run.m[t], dtype=torch.float64),
                                record=True, **solver)
    steps = [np.zeros(2)] + [h["step"].numpy().astype(np.float64) for h in (result.history or [])[1:]]
    final = result.step.detach().numpy().astype(np.float64)
    if not steps or not np.allclose(steps[-1], final):
        steps.append(final)
    return StepDetail(
        iteration=t,
        centre=w.copy(),
        radius=float(run.radius[t]),
        m=run.m[t].copy(),
        model=model,
        cg_points=w + np.stack(steps),
        step=final,
        rho=float(run.rho[t]),
        accepted=bool(run.accepted[t]),
        exit=str(run.exits[t]),
        predicted_decrease=float(result.pred_reduction),
    )
