"""Deterministic ellipsoidal trust-region driver for small functions (paper section 4, Algorithm 1).

``minimize(fun, x0, method)`` runs Algorithm 1 on a full (not sampled) objective given as a torch
callable on a float64 vector; autograd supplies the gradient and the Hessian-vector products. It
keeps the whole history (iterates, radii, rho, ellipsoid diagonals, solver exits), which is what
the 2-D pictures and the teaching pages draw.

Two outer rules:

* ``rule="paper"``: Algorithm 1 -- accept if rho >= eta1, grow the radius by gamma1 if
  rho >= eta2, shrink by gamma2 if rho < eta1 (defaults: eta1 1e-4, eta2 0.95, gamma1 1.1,
  gamma2 1.5 (1.75 for "rms"), max_radius 10). The initial radius defaults to 1.0: Table 1's 1e-4
  is a choice for network training, not for small test functions.
* ``rule="scipy"``: the rules of ``scipy.optimize.minimize(method="trust-ncg")`` -- radius 1,
  max_radius 1000, accept if rho > eta = 0.15, shrink x0.25 if rho < 0.25, double if rho > 0.75
  and the step hit the boundary, stop (status 2) on a non-positive predicted decrease; Steihaug CG
  with kappa 0.5, theta 1/2, both boundary roots compared at negative curvature. With the uniform
  ellipsoid the iterates are SciPy's.

Both rules check ``||g|| < gtol`` before the first iteration and after every accepted step. The
options and outer rules live in ``etr_core._minimize_rules``, the iteration loop in
``etr_core._minimize_loop``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from etr_core._minimize_loop import LoopSettings, run_loop, start_state
from etr_core._minimize_rules import (
    MESSAGES,
    METHODS,
    RULES,
    SUBPROBLEMS,
    method_ellipsoid,
    paper_gamma2,
    resolve_options,
)
from etr_core._objective import Objective, as_start
from etr_core._validation import check_choice, check_int, check_nonnegative, check_real

__all__ = ["METHODS", "MinimizeResult", "minimize"]


@dataclass
class MinimizeResult:
    """Outcome of :func:`minimize`, shaped like SciPy's ``OptimizeResult`` plus the full history.

    ``history`` holds one dict per iteration (accepted or not) with keys ``iteration``, ``x`` (the
    iterate the step starts from), ``f``, ``grad_norm``, ``radius_before``, ``radius_after``,
    ``rho``, ``accepted``, ``quality``, ``m`` (ellipsoid diagonal), ``ellipsoid_updated``, ``exit``
    (subproblem exit), ``cg_iterations``, ``hvp_calls``, ``step``, ``step_m_norm``,
    ``pred_reduction``, ``trial_f``, ``actual_reduction``. With ``status == 2`` (rule "scipy") the
    last record is the failed iteration, which ``nit`` does not count (as SciPy).

    Counters as SciPy's: ``nfev`` is the number of calls of ``fun`` (one per point: the gradient
    and the dense Hessian come from that call's graph), ``njev`` the number of gradients (one per
    accepted point), ``nhev`` the Hessian-vector products of the Krylov solvers or, with
    ``subproblem="exact"``, the number of dense Hessians built (one per point a subproblem is
    solved at; a rejected step reuses it). SciPy's trust-exact also builds one at every rejected
    trial point, so its ``nhev`` exceeds ours by the number of rejected steps.
    """

    x: Tensor
    fun: float
    jac: Tensor
    grad_norm: float
    nit: int
    nfev: int
    njev: int
    nhev: int
    success: bool
    status: int
    message: str
    method: str
    rule: str
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def iterates(self) -> Tensor:
        """Every iterate, one row per iteration start plus the final point, shape (nit + 1, d)."""
        rows = [h["x"] for h in self.history[: self.nit]] + [self.x]
        return torch.stack(rows)

    @property
    def radii(self) -> list[float]:
        return [h["radius_before"] for h in self.history]

    @property
    def rhos(self) -> list[float]:
        return [h["rho"] for h in self.history]


def minimize(
    fun: Callable[[Tensor], Tensor],
    x0: Any,
    method: str = "tr_rms",
    *,
    rule: str = "paper",
    gtol: float = 1e-8,
    max_iter: int | None = None,
    f_target: float | None = None,
    subproblem: str = "cg",
    **options: Any,
) -> MinimizeResult:
    """Minimise ``fun`` from ``x0`` with a deterministic (ellipsoidal) trust-region method.

    ``method``: "tr_uniform" | "tr_adagrad" | "tr_rms" (quadratic model of Eq. 8, subproblem
    ``subproblem`` = "cg" Steihaug-Toint PCG, "lanczos" GLTR or "exact" More-Sorensen on the dense
    Hessian) or "first_order_tr_uniform" | "first_order_tr_adagrad" | "first_order_tr_rms" (linear
    model, Theorem 1 step, no Hessian). ``rule``: "paper" (Algorithm 1) or "scipy" (trust-ncg rules,
    see the module docstring). Stops when ``||g|| < gtol`` (checked before the first iteration),
    when ``f < f_target`` if given, or after ``max_iter`` iterations (default ``200 d``, as SciPy).

    ``options`` (paper rule): radius, max_radius, eta1, eta2, gamma1, gamma2, krylov_tol, theta,
    max_krylov, stop_rule, residual_norm, root, grow_only_on_boundary, ellipsoid_update, beta, eps,
    eps_mode, tiny_pred. SciPy rule: radius, max_radius, eta, krylov_tol, theta, max_krylov,
    stop_rule, residual_norm, root, ellipsoid_update, beta, eps, eps_mode.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    check_choice("method", method, METHODS)
    check_choice("rule", rule, RULES)
    check_choice("subproblem", subproblem, SUBPROBLEMS)
    gtol = check_nonnegative("gtol", gtol)
    x = as_start(x0)
    d = x.numel()
    max_iter = 200 * d if max_iter is None else check_int("max_iter", max_iter, minimum=0)
    if f_target is not None:
        f_target = check_real("f_target", f_target)
    o = resolve_options(rule, d, subproblem, options)
    first_order = method.startswith("first_order_")
    kind = method.rsplit("_", 1)[1]
    ellipsoid = method_ellipsoid(kind, o)
    gamma2 = paper_gamma2(kind, o) if rule == "paper" else None
    settings = LoopSettings(rule, subproblem, first_order, gtol, max_iter, f_target, o, gamma2)
    objective = Objective(fun)
    state = start_state(objective, ellipsoid, x, o["radius"], need_graph=not first_order)
    status = run_loop(state, settings)
    grad = state.g.detach()
    nit = state.nit
    return MinimizeResult(
        x=state.x.detach(),
        fun=state.f,
        jac=grad,
        grad_norm=float(torch.linalg.vector_norm(grad)),
        nit=nit,
        nfev=objective.nfev,
        njev=objective.njev,
        nhev=objective.nhev if subproblem == "exact" and not first_order else state.hvp_products,
        success=status == 0,
        status=status,
        message=MESSAGES[status] if status != 3 or nit == 0 else "The gradient became non-finite.",
        method=method,
        rule=rule,
        history=state.history,
    )
