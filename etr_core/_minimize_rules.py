"""Options, defaults and outer rules of :func:`etr_core.minimize.minimize`.

``resolve_options`` fills in and checks the keyword options of one rule ("paper" or "scipy"),
``method_ellipsoid`` builds the ellipsoid a method names, and ``outer_update`` applies the rule's
acceptance test and radius update to one reduction ratio.
"""

from __future__ import annotations

from typing import Any

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
from etr_core.ellipsoids import Ellipsoid, make_ellipsoid
from etr_core.trust_region import classify_step, update_radius

__all__ = [
    "MESSAGES",
    "METHODS",
    "RULES",
    "SUBPROBLEMS",
    "method_ellipsoid",
    "outer_update",
    "paper_gamma2",
    "resolve_options",
    "scipy_rule",
]

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

PAPER_DEFAULTS: dict[str, Any] = dict(
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
SCIPY_DEFAULTS: dict[str, Any] = dict(
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
MESSAGES = {
    0: "Optimization terminated successfully.",
    1: "Maximum number of iterations has been exceeded.",
    2: "A bad approximation caused failure to predict improvement.",
    3: "The function value or gradient is not finite at the starting point.",
}


def resolve_options(rule: str, d: int, subproblem: str, options: dict[str, Any]) -> dict[str, Any]:
    """The rule's defaults updated by ``options``, each value checked; ``d`` is the dimension.

    Raises TypeError for an option the rule does not know and ValueError (or TypeError, from the
    checks) for a value out of range. ``max_krylov=None`` becomes ``max(50, 20 d)``.
    """
    defaults = PAPER_DEFAULTS if rule == "paper" else SCIPY_DEFAULTS
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
        _check_paper_options(o)
    else:
        o["eta"] = check_real("eta", o["eta"])
        if not 0.0 <= o["eta"] < 0.25:
            raise ValueError(f"eta must lie in [0, 0.25) (SciPy's trust-region rule), got {o['eta']!r}")
    _check_solver_options(o, d)
    return o


def _check_paper_options(o: dict[str, Any]) -> None:
    """Check (and normalise in place) the options only the paper rule has."""
    o["eta1"] = check_open_interval("eta1", o["eta1"], 0.0, 1.0)
    o["eta2"] = check_open_interval("eta2", o["eta2"], 0.0, 1.0)
    if not o["eta1"] < o["eta2"]:
        raise ValueError(f"eta1 must be < eta2 = {o['eta2']!r}, got {o['eta1']!r}")
    o["gamma1"] = check_greater("gamma1", o["gamma1"], 1.0)
    if o["gamma2"] is not None:
        o["gamma2"] = check_greater("gamma2", o["gamma2"], 1.0)
    check_choice("grow_only_on_boundary", o["grow_only_on_boundary"], (True, False))
    o["tiny_pred"] = check_nonnegative("tiny_pred", o["tiny_pred"])


def _check_solver_options(o: dict[str, Any], d: int) -> None:
    """Check (and normalise in place) the Krylov-solver and ellipsoid options both rules share."""
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


def method_ellipsoid(kind: str, o: dict[str, Any]) -> Ellipsoid:
    """The ellipsoid ``kind`` ("uniform" | "adagrad" | "rms") with the resolved options' eps,
    eps_mode and (rms only) beta."""
    if kind == "uniform":
        return make_ellipsoid(kind)
    extra = {"beta": o["beta"]} if kind == "rms" else {}
    return make_ellipsoid(kind, eps=o["eps"], eps_mode=o["eps_mode"], **extra)


def paper_gamma2(kind: str, o: dict[str, Any]) -> float:
    """The paper rule's shrink factor: the ``gamma2`` option, or Table 1's default for ``kind``."""
    return o["gamma2"] if o["gamma2"] is not None else default_gamma2(kind)


def outer_update(
    rule: str, rho: float, radius: float, o: dict[str, Any], gamma2: float | None, hit_boundary: bool
) -> tuple[str, bool, float]:
    """``(quality, accepted, new radius)`` after a step with reduction ratio ``rho`` under ``rule``.

    Paper rule: Algorithm 1 (``classify_step`` with eta1/eta2, ``update_radius`` with gamma1,
    ``gamma2`` and max_radius). SciPy rule: :func:`scipy_rule`.
    """
    if rule != "paper":
        return scipy_rule(rho, radius, o, hit_boundary)
    quality = classify_step(rho, o["eta1"], o["eta2"])
    radius = update_radius(
        radius,
        quality,
        o["gamma1"],
        gamma2,
        o["max_radius"],
        hit_boundary=hit_boundary,
        grow_only_on_boundary=o["grow_only_on_boundary"],
    )
    return quality, quality != "unsuccessful", radius


def scipy_rule(rho: float, radius: float, o: dict[str, Any], hit_boundary: bool) -> tuple[str, bool, float]:
    """SciPy ``_minimize_trust_region``: shrink x0.25 below 0.25, double above 0.75 on the boundary,
    accept above eta. A non-finite trial value gives rho = -inf (SciPy would stall on NaN)."""
    if rho < 0.25:
        radius = radius * 0.25
    elif rho > 0.75 and hit_boundary:
        radius = min(2.0 * radius, o["max_radius"])
    accepted = rho > o["eta"]
    quality = "unsuccessful" if not accepted else ("very_successful" if rho > 0.75 else "successful")
    return quality, accepted, radius
