"""``EllipsoidalTR``: stochastic ellipsoidal trust region with a quadratic model (paper Algorithm 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from etr_core.config import TRConfig
from etr_core.hessian_batch import subbatch_closure
from etr_core.initial_radius import cauchy_radius
from etr_core.optim.base import _TrustRegionBase
from etr_core.optim.options import ELLIPSOIDAL_OPTIONS, build_config, constructor_overrides, defaults_for
from etr_core.optim.records import Closure, StepRecord
from etr_core.step_support import guarded_step, hvp_fallback
from etr_core.subproblem import solve_subproblem

__all__ = ["EllipsoidalTR"]


class EllipsoidalTR(_TrustRegionBase):
    """Stochastic ellipsoidal trust-region method (paper Algorithm 1) as a ``torch.optim.Optimizer``.

    ``ellipsoid``: "rms" (default), "adagrad", "uniform", "hessian" (beyond the paper: the Hutchinson
    Hessian-diagonal ellipsoid of :mod:`etr_core.hessian_diagonal`, ``hessian_probes`` (1 to 1024)
    Hessian-vector products per step, counted in ``counters["hvp"]``; ``beta`` is its EMA factor;
    ``hessian_block`` "element", "layer" or "unit"; either option given with another ellipsoid raises
    ``ValueError``) or an ellipsoid object. Every option left
    at ``None`` takes its value from ``preset`` (a :class:`etr_core.config.TRConfig`, e.g.
    ``paper_table1("rms")`` or ``authors("mnist", "fc", "rms")``) or, without one, from paper
    Table 1: radius 1e-4, max_radius 10, eta1 1e-4, eta2 0.95, gamma1 1.1, gamma2 1.5 (1.75 for
    "rms"), krylov_tol 0.1, theta 0.5, max_krylov 50, solver "cg" (Steihaug-Toint PCG in the
    M-norm) or "lanczos" (GLTR). ``distributed=True`` averages gradient, Hessian products and
    losses over the ranks of the initialised process group (see :mod:`etr_core.distributed`).

    ``preset`` may also be a name: "paper" (Table 1, the default), "fast" (:func:`etr_core.config.fast`:
    Table 1 with ``radius="auto"``) or "authors:<dataset>:<model>".
    ``radius="auto"`` chooses Delta_0 at the first step as the M-norm length of that step's Cauchy
    point (:mod:`etr_core.initial_radius`; one Hessian-vector product). ``hessian_fraction`` in
    (0, 1] takes the Hessian products on the first part of the batch (:mod:`etr_core.hessian_batch`:
    the closure then takes a keyword argument ``batch_fraction``; a plain closure without it keeps
    the whole batch, warned once).

    ``step(closure, hessian_closure=None)`` returns the loss at ``w`` (before the step).
    ``hessian_closure``, when given, returns the loss on a separate (usually smaller) Hessian batch
    S_B; the Hessian products then go through its graph (Algorithm 1, line 3 samples L, g and B
    separately), and the gradient of the main batch is formed without a retained graph.
    """

    _OPTIONS = ELLIPSOIDAL_OPTIONS

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        ellipsoid: Any = None,
        radius: float | str | None = None,
        max_radius: float | None = None,
        eta1: float | None = None,
        eta2: float | None = None,
        gamma1: float | None = None,
        gamma2: float | None = None,
        krylov_tol: float | None = None,
        theta: float | None = None,
        max_krylov: int | None = None,
        solver: str | None = None,
        stop_rule: str | None = None,
        residual_norm: str | None = None,
        root: str | None = None,
        grow_only_on_boundary: bool | None = None,
        ellipsoid_update: str | None = None,
        beta: float | None = None,
        eps: float | None = None,
        eps_mode: str | None = None,
        tiny_pred: float | None = None,
        hessian_fraction: float | None = None,
        hessian_probes: int | None = None,
        hessian_block: str | None = None,
        preset: TRConfig | str | None = None,
        distributed: bool = False,
    ) -> None:
        overrides = constructor_overrides(locals(), ELLIPSOIDAL_OPTIONS)
        config = build_config(preset, ellipsoid, overrides)
        super().__init__(params, defaults_for(config, ELLIPSOIDAL_OPTIONS, 1.0, "tr"), distributed)

    def _solve(self, g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor):
        c = self._cfg
        return solve_subproblem(
            c.solver,
            g,
            hvp,
            self.radius,
            m,
            kappa=c.krylov_tol,
            theta=c.theta,
            max_iter=c.max_krylov,
            stop_rule=c.stop_rule,
            residual_norm=c.residual_norm,
            root=c.root,
        )

    @guarded_step
    def step(self, closure: Closure, hessian_closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One iteration of Algorithm 1 on the closure's batch; returns the loss at ``w``."""
        if hessian_closure is not None and not callable(hessian_closure):
            raise TypeError(f"hessian_closure must be callable or None, got {type(hessian_closure).__name__}")
        if hessian_closure is None and callable(closure):
            hessian_closure = subbatch_closure(self, closure, self._resolve().config.hessian_fraction)
        loss_t, prep = self._begin_step(closure, create_graph=hessian_closure is None)
        if prep is None:
            return loss_t
        loss, g, local_hvp, grad_norm, updated, m = prep
        del prep  # the only other reference to the retained graph (freed below)
        if hessian_closure is not None:
            local_hvp, updated, m = self._hessian_batch(hessian_closure, g, updated, m)
        if self._cfg.auto_radius and "auto_radius" not in self._region:
            self._choose_radius(g, self._reduced(local_hvp), m)
        result = self._solve(g, self._reduced(local_hvp), m)
        result = hvp_fallback(self, g, m, result)  # NaN/Inf curvature: Theorem 1's step instead
        del local_hvp  # frees the retained graph before the trial evaluation
        record = self._conclude(closure, loss, grad_norm, updated, result)
        self._finish(record)
        return loss_t

    def _choose_radius(self, g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor) -> None:
        """Delta_0 from the first Cauchy step (:mod:`etr_core.initial_radius`), once per run."""
        chosen = cauchy_radius(g, hvp, m)
        self.counters["hvp"] += 1
        radius = self.radius if chosen is None else min(max(chosen, 1e-12), self._options.cap)
        self.radius = radius
        self._region["auto_radius"] = radius

    def _conclude(self, closure: Closure, loss: float, grad_norm: float, updated: bool, result) -> StepRecord:
        step_l2, pred, outcome = self._model_outcome(closure, loss, result)
        return self._settle(
            loss=loss, grad_norm=grad_norm, updated=updated, result=result, pred=pred, step_l2=step_l2,
            outcome=outcome, stacklevel=3,
        )
