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

Both rules check ``||g|| < gtol`` before the first iteration and after every accepted step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from etr_core import subproblem as _subproblem
from etr_core._objective import Objective, as_start
from etr_core._validation import (
    check_choice,
    check_closed_interval,
    check_greater,
    check_int,
    check_nonnegative,
    check_open_interval,
    check_positive,
    check_real,
)
from etr_core.config import default_gamma2
from etr_core.ellipsoids import make_ellipsoid
from etr_core.hvp import make_hvp
from etr_core.subproblem import first_order_tr_step
from etr_core.trust_region import classify_step, reduction_ratio, update_radius

__all__ = ["METHODS", "MinimizeResult", "minimize"]

METHODS = (
    "tr_uniform",
    "tr_adagrad",
    "tr_rms",
    "first_order_tr_uniform",
    "first_order_tr_adagrad",
    "first_order_tr_rms",
)
RULES = ("paper", "scipy")
SUBPROBLEMS = ("cg", "lanczos", "exact")

_PAPER_DEFAULTS: dict[str, Any] = dict(
    radius=1.0,
    max_radius=10.0,
    eta1=1e-4,
    eta2=0.95,
    gamma1=1.1,
    gamma2=None,
    krylov_tol=0.1,
    theta=0.5,
    max_krylov=50,
    stop_rule="residual",
    residual_norm="l2",
    root="positive",
    grow_only_on_boundary=False,
    ellipsoid_update="every_iteration",
    beta=0.8,
    eps=1e-10,
    eps_mode="paper",
    tiny_pred=0.0,
)
_SCIPY_DEFAULTS: dict[str, Any] = dict(
    radius=1.0,
    max_radius=1000.0,
    eta=0.15,
    krylov_tol=0.5,
    theta=0.5,
    max_krylov=None,
    stop_rule="residual",
    residual_norm="l2",
    root="best",
    ellipsoid_update="every_iteration",
    beta=0.8,
    eps=1e-10,
    eps_mode="paper",
)
_MESSAGES = {
    0: "Optimization terminated successfully.",
    1: "Maximum number of iterations has been exceeded.",
    2: "A bad approximation caused failure to predict improvement.",
    3: "The function value or gradient is not finite at the starting point.",
}


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


def _options(rule: str, d: int, subproblem: str, options: dict[str, Any]) -> dict[str, Any]:
    defaults = _PAPER_DEFAULTS if rule == "paper" else _SCIPY_DEFAULTS
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(
            f"unknown option(s) for rule={rule!r}: {sorted(unknown)}; allowed: {sorted(defaults)}"
        )
    o = {**defaults, **options}
    if subproblem == "lanczos" and o["stop_rule"] != "residual":
        raise ValueError(f"stop_rule must be 'residual' with subproblem='lanczos', got {o['stop_rule']!r}")
    o["radius"] = check_positive("radius", o["radius"])
    o["max_radius"] = check_positive("max_radius", o["max_radius"])
    if o["radius"] > o["max_radius"]:
        raise ValueError(f"radius must be <= max_radius = {o['max_radius']!r}, got {o['radius']!r}")
    if rule == "paper":
        o["eta1"] = check_open_interval("eta1", o["eta1"], 0.0, 1.0)
        o["eta2"] = check_open_interval("eta2", o["eta2"], 0.0, 1.0)
        if not o["eta1"] < o["eta2"]:
            raise ValueError(f"eta1 must be < eta2 = {o['eta2']!r}, got {o['eta1']!r}")
        o["gamma1"] = check_greater("gamma1", o["gamma1"], 1.0)
        if o["gamma2"] is not None:
            o["gamma2"] = check_greater("gamma2", o["gamma2"], 1.0)
        check_choice("grow_only_on_boundary", o["grow_only_on_boundary"], (True, False))
        o["tiny_pred"] = check_nonnegative("tiny_pred", o["tiny_pred"])
    else:
        o["eta"] = check_real("eta", o["eta"])
        if not 0.0 <= o["eta"] < 0.25:
            raise ValueError(f"eta must lie in [0, 0.25) (SciPy's trust-region rule), got {o['eta']!r}")
    o["krylov_tol"] = check_closed_interval("krylov_tol", o["krylov_tol"], 0.0, 1.0)
    if o["krylov_tol"] >= 1.0:
        raise ValueError(f"krylov_tol must be < 1 (Eq. 36), got {o['krylov_tol']!r}")
    o["theta"] = check_nonnegative("theta", o["theta"])
    if o["max_krylov"] is None:
        o["max_krylov"] = max(50, 20 * d)  # SciPy has no cap; CG needs at most d steps in exact arithmetic
    o["max_krylov"] = check_int("max_krylov", o["max_krylov"], minimum=0)
    check_choice("stop_rule", o["stop_rule"], ("residual", "model_decrease"))
    check_choice("residual_norm", o["residual_norm"], ("l2", "m_inv"))
    check_choice("root", o["root"], ("positive", "best"))
    check_choice("ellipsoid_update", o["ellipsoid_update"], ("every_iteration", "after_accept"))
    o["beta"] = check_open_interval("beta", o["beta"], 0.0, 1.0)
    o["eps"] = check_positive("eps", o["eps"])
    check_choice("eps_mode", o["eps_mode"], ("paper", "authors"))
    return o


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
    o = _options(rule, d, subproblem, options)
    first_order = method.startswith("first_order_")
    kind = method.rsplit("_", 1)[1]
    ellipsoid = make_ellipsoid(
        kind,
        **(
            {}
            if kind == "uniform"
            else {
                "eps": o["eps"],
                "eps_mode": o["eps_mode"],
                **({"beta": o["beta"]} if kind == "rms" else {}),
            }
        ),
    )
    gamma2 = None
    if rule == "paper":
        gamma2 = o["gamma2"] if o["gamma2"] is not None else default_gamma2(kind)

    objective = Objective(fun)
    need_graph = not first_order
    xg, f_t = objective.value(x)
    g = objective.gradient(xg, f_t, create_graph=need_graph)
    f = float(f_t.detach())
    radius = o["radius"]
    history: list[dict[str, Any]] = []
    hvp_products = 0
    H: Tensor | None = None  # the dense Hessian at x (subproblem="exact"), built once per point
    nit = 0
    last_accepted = True
    status: int

    if not (math.isfinite(f) and bool(torch.isfinite(g).all())):
        status = 3
    else:
        while True:
            grad_norm = float(torch.linalg.vector_norm(g.detach()))
            if grad_norm < gtol or (f_target is not None and f < f_target):
                status = 0
                break
            if nit >= max_iter:
                status = 1
                break
            updated = o["ellipsoid_update"] == "every_iteration" or last_accepted
            if updated:
                ellipsoid.update(g.detach())
            m = ellipsoid.diag(like=g)
            gd = g.detach()
            if first_order:
                result = first_order_tr_step(gd, m, radius)
            elif subproblem == "exact":
                if H is None:
                    H = objective.hessian(g, xg)
                result = _subproblem.solve_exact(gd, H, radius, m)
            else:
                hvp = make_hvp(g, [xg])
                result = _subproblem.solve_subproblem(
                    subproblem,
                    gd,
                    hvp,
                    radius,
                    m,
                    kappa=o["krylov_tol"],
                    theta=o["theta"],
                    max_iter=o["max_krylov"],
                    stop_rule=o["stop_rule"],
                    residual_norm=o["residual_norm"],
                    root=o["root"],
                )
            hvp_products += result.hvp_calls
            pred = float(result.pred_reduction)
            if rule == "scipy":
                # SciPy forms f - m(p) with m(p) = f + g^T p + p^T H p / 2: a decrease below f's
                # rounding unit reads as 0 there and ends the run (status 2); so it does here.
                pred = f - (f - pred)
            step = result.step.detach()
            record: dict[str, Any] = dict(
                iteration=nit,
                x=x.clone(),
                f=f,
                grad_norm=grad_norm,
                radius_before=radius,
                m=m.detach().clone(),
                ellipsoid_updated=updated,
                exit=result.exit,
                cg_iterations=int(result.iterations),
                hvp_calls=int(result.hvp_calls),
                step=step.clone(),
                step_m_norm=float(result.step_m_norm),
                pred_reduction=pred,
            )
            if rule == "scipy" and not pred > 0.0:
                record.update(
                    rho=math.nan,
                    accepted=False,
                    quality="unsuccessful",
                    trial_f=math.nan,
                    actual_reduction=math.nan,
                    radius_after=radius,
                )
                history.append(record)  # not counted in nit, as in SciPy
                status = 2
                break
            trial_f = math.nan
            if math.isfinite(pred) and pred > (o["tiny_pred"] if rule == "paper" else 0.0):
                x_trial = x + step
                xg_trial, f_trial_t = objective.value(x_trial)
                trial_f = float(f_trial_t.detach())
            rho = reduction_ratio(f, trial_f, pred, o["tiny_pred"] if rule == "paper" else 0.0)
            if rule == "paper":
                quality = classify_step(rho, o["eta1"], o["eta2"])
                accepted = quality != "unsuccessful"
                radius = update_radius(
                    radius,
                    quality,
                    o["gamma1"],
                    gamma2,
                    o["max_radius"],
                    hit_boundary=result.hit_boundary,
                    grow_only_on_boundary=o["grow_only_on_boundary"],
                )
            else:
                quality, accepted, radius = _scipy_rule(rho, radius, o, result.hit_boundary)
            record.update(
                rho=rho,
                accepted=accepted,
                quality=quality,
                trial_f=trial_f,
                actual_reduction=f - trial_f,
                radius_after=radius,
            )
            history.append(record)
            nit += 1
            last_accepted = accepted
            if accepted:
                x, xg, f_t, f, H = x_trial, xg_trial, f_trial_t, trial_f, None
                g = objective.gradient(xg, f_t, create_graph=need_graph)
                if not bool(torch.isfinite(g).all()):
                    status = 3
                    break
    grad = g.detach()
    return MinimizeResult(
        x=x.detach(),
        fun=f,
        jac=grad,
        grad_norm=float(torch.linalg.vector_norm(grad)),
        nit=nit,
        nfev=objective.nfev,
        njev=objective.njev,
        nhev=objective.nhev if subproblem == "exact" and not first_order else hvp_products,
        success=status == 0,
        status=status,
        message=_MESSAGES[status] if status != 3 or nit == 0 else "The gradient became non-finite.",
        method=method,
        rule=rule,
        history=history,
    )


def _scipy_rule(rho: float, radius: float, o: dict[str, Any], hit_boundary: bool) -> tuple[str, bool, float]:
    """SciPy ``_minimize_trust_region``: shrink x0.25 below 0.25, double above 0.75 on the boundary,
    accept above eta. A non-finite trial value gives rho = -inf (SciPy would stall on NaN)."""
    if rho < 0.25:
        radius = radius * 0.25
    elif rho > 0.75 and hit_boundary:
        radius = min(2.0 * radius, o["max_radius"])
    accepted = rho > o["eta"]
    quality = "unsuccessful" if not accepted else ("very_successful" if rho > 0.75 else "successful")
    return quality, accepted, radius
