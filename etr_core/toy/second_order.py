"""Whole runs of second-order methods on 2-D functions from one start (section 4, appendix B).

Pure Newton (Eq. 32), gradient descent and the deterministic trust-region methods ``TR_uni``,
``TR_ada`` and ``TR_rms`` (Algorithm 1 with the uniform, Adagrad and RMSProp ellipsoids, run by
:func:`etr_core.minimize.minimize`) produce one :class:`RunHistory` each: iterates, values, gradient
norms and, for TR, radius, rho, acceptance, CG iterations, Hessian-vector products and the ellipsoid
diagonal per iteration. Divergence (overflow, non-finite values, iterates escaping to infinity) and a
singular Newton system end a run with a ``status`` instead of an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etr_core._validation import check_choice, check_int, check_nonnegative, check_positive
from etr_core.toy.functions import ToyFunction
from etr_core.toy.local_models import newton_step

__all__ = [
    "METHOD_LABELS",
    "RUN_METHODS",
    "RunHistory",
    "compare_runs",
    "iterations_table",
    "run_gradient_descent",
    "run_method",
    "run_newton",
    "run_trust_region",
]

RUN_METHODS = ("newton", "tr_uniform", "tr_adagrad", "tr_rms", "gd")
METHOD_LABELS = {
    "newton": "Newton",
    "tr_uniform": "TR_uni",
    "tr_adagrad": "TR_ada",
    "tr_rms": "TR_rms",
    "gd": "GD",
}
STATUSES = ("converged", "max_iter", "diverged", "singular", "stalled", "nonfinite_start")
# Iterates farther than this from the origin count as diverged: in 2-D pictures nothing useful happens
# there and squaring such numbers overflows a few steps later.
DEFAULT_DIVERGENCE_NORM = 1e6
NONFINITE_START = "f or its gradient is not finite at the start."


@dataclass
class RunHistory:
    """One method's run. Arrays with one row per iteration *start* plus the final point: ``iterates``
    ``(k + 1, 2)``, ``f`` and ``grad_norm`` ``(k + 1,)``. Per iteration ``(k,)``: ``radius`` (before the
    step), ``rho``, ``accepted``, ``cg_iterations``, ``hvp_calls``, ``m`` ``(k, 2)`` (ellipsoid diagonal),
    ``exits`` (subproblem exit or Newton classification). Non-TR methods carry NaN radius/rho/m."""

    method: str
    label: str
    iterates: np.ndarray
    f: np.ndarray
    grad_norm: np.ndarray
    radius: np.ndarray
    rho: np.ndarray
    accepted: np.ndarray
    cg_iterations: np.ndarray
    hvp_calls: np.ndarray
    m: np.ndarray
    exits: list[str]
    status: str
    message: str
    nfev: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def nit(self) -> int:
        """Number of iterations run (accepted or not)."""
        return len(self.exits)

    @property
    def final_point(self) -> np.ndarray:
        return self.iterates[-1]

    @property
    def total_hvp(self) -> int:
        return int(np.sum(self.hvp_calls))

    @property
    def total_cg_iterations(self) -> int:
        return int(np.sum(self.cg_iterations))

    def iterations_to(
        self, gtol: float | None = None, ftol: float | None = None, f_min: float | None = None
    ) -> int | None:
        """First iteration count ``k`` at which ``||g_k|| <= gtol`` (or ``f_k - f_min <= ftol``);
        ``None`` if the run never got there. Give exactly one of ``gtol`` and ``ftol``."""
        if (gtol is None) == (ftol is None):
            raise ValueError("give exactly one of gtol and ftol")
        if gtol is not None:
            hit = np.flatnonzero(self.grad_norm <= check_nonnegative("gtol", gtol))
        else:
            if f_min is None:
                return None
            hit = np.flatnonzero(self.f - f_min <= check_nonnegative("ftol", ftol))
        return int(hit[0]) if hit.size else None


def _empty_run(method: str, x0: np.ndarray, f0: float, g0: float, status: str, message: str) -> RunHistory:
    none = np.empty(0)
    return RunHistory(
        method,
        METHOD_LABELS.get(method, method),
        x0.reshape(1, 2).copy(),
        np.array([f0]),
        np.array([g0]),
        none,
        none.copy(),
        np.empty(0, dtype=bool),
        np.empty(0, dtype=int),
        np.empty(0, dtype=int),
        np.empty((0, 2)),
        [],
        status,
        message,
    )


def _start(x0: Sequence[float]) -> np.ndarray:
    x = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x.shape != (2,):
        raise ValueError(f"x0 must have 2 coordinates, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x0 must be finite, got {x.tolist()}")
    return x


def _evaluate(fn: ToyFunction, w: np.ndarray) -> tuple[float, np.ndarray]:
    with np.errstate(all="ignore"):
        return float(fn.value(w)), fn.gradient(w)


def _first_order_loop(
    fn: ToyFunction,
    x0: np.ndarray,
    method: str,
    max_iter: int,
    gtol: float,
    divergence_norm: float,
    step_fn: Any,
) -> RunHistory:
    """Shared loop of Newton and GD: ``step_fn(w, f, g) -> (step or None, kind, message)``."""
    w = x0.copy()
    f, g = _evaluate(fn, w)
    if not (math.isfinite(f) and np.all(np.isfinite(g))):
        return _empty_run(method, w, f, math.nan, "nonfinite_start", NONFINITE_START)
    points, fs, gs, kinds = [w.copy()], [f], [float(np.linalg.norm(g))], []
    status, message = "max_iter", f"Stopped after {max_iter} iterations."
    while True:
        if gs[-1] <= gtol:
            status, message = "converged", f"‖g‖ ≤ {gtol:g} after {len(kinds)} iterations."
            break
        if len(kinds) >= max_iter:
            break
        step, kind, why = step_fn(w, fs[-1], g)
        if step is None:
            status, message = "singular", why
            break
        with np.errstate(all="ignore"):
            w = w + step
        f, g = _evaluate(fn, w)
        kinds.append(kind)
        finite = math.isfinite(f) and np.all(np.isfinite(g)) and np.all(np.isfinite(w))
        points.append(w.copy())
        fs.append(f if math.isfinite(f) else math.nan)
        gs.append(float(np.linalg.norm(g)) if finite else math.nan)
        if not finite or float(np.linalg.norm(w)) > divergence_norm:
            status = "diverged"
            message = (
                f"Diverged at iteration {len(kinds)}: ‖w‖ = {float(np.linalg.norm(w)):.3g}"
                + ("" if finite else " (overflow: non-finite value or gradient)")
                + "."
            )
            break
    k = len(kinds)
    nan = np.full(k, np.nan)
    return RunHistory(
        method,
        METHOD_LABELS[method],
        np.array(points),
        np.array(fs),
        np.array(gs),
        nan.copy(),
        nan.copy(),
        np.ones(k, dtype=bool),
        np.zeros(k, dtype=int),
        np.zeros(k, dtype=int),
        np.full((k, 2), np.nan),
        kinds,
        status,
        message,
        nfev=k + 1,
    )


def run_newton(
    fn: ToyFunction,
    x0: Sequence[float],
    *,
    max_iter: int = 50,
    gtol: float = 1e-8,
    damping: float = 0.0,
    divergence_norm: float = DEFAULT_DIVERGENCE_NORM,
) -> RunHistory:
    """Pure Newton, ``w <- w - H^{-1} g`` (Eq. 32), or damped with ``(H + damping I)`` (Eq. 37). The
    per-iteration ``exits`` hold each step's classification (descent / ascent / saddle-attracted)."""
    max_iter = check_int("max_iter", max_iter, minimum=0)
    gtol = check_nonnegative("gtol", gtol)
    damping = check_nonnegative("damping", damping)
    divergence_norm = check_positive("divergence_norm", divergence_norm)

    def step_fn(w: np.ndarray, f: float, g: np.ndarray) -> tuple[np.ndarray | None, str, str]:
        local = newton_step(fn, w, damping)
        return local.step, local.kind, local.message

    run = _first_order_loop(fn, _start(x0), "newton", max_iter, gtol, divergence_norm, step_fn)
    run.options = {"damping": damping}
    return run


def run_gradient_descent(
    fn: ToyFunction,
    x0: Sequence[float],
    *,
    lr: float = 0.1,
    max_iter: int = 200,
    gtol: float = 1e-8,
    divergence_norm: float = DEFAULT_DIVERGENCE_NORM,
) -> RunHistory:
    """Gradient descent with a constant step size, ``w <- w - lr g`` (the baseline of section 5)."""
    lr = check_positive("lr", lr)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    gtol = check_nonnegative("gtol", gtol)
    divergence_norm = check_positive("divergence_norm", divergence_norm)

    def step_fn(w: np.ndarray, f: float, g: np.ndarray) -> tuple[np.ndarray, str, str]:
        return -lr * g, "gradient", ""

    run = _first_order_loop(fn, _start(x0), "gd", max_iter, gtol, divergence_norm, step_fn)
    run.options = {"lr": lr}
    return run


def run_trust_region(
    fn: ToyFunction,
    x0: Sequence[float],
    method: str = "tr_rms",
    *,
    max_iter: int = 100,
    gtol: float = 1e-8,
    radius: float = 1.0,
    divergence_norm: float = DEFAULT_DIVERGENCE_NORM,
    **options: Any,
) -> RunHistory:
    """A deterministic second-order TR run (Algorithm 1, paper rules) via :func:`etr_core.minimize`.

    ``method`` is ``"tr_uniform"``, ``"tr_adagrad"`` or ``"tr_rms"``; ``options`` go to ``minimize``
    (e.g. ``max_radius``, ``eta1``, ``max_krylov``, ``subproblem``). A run whose iterates leave the ball
    ``||w|| <= divergence_norm``, or, for a function unbounded below, whose value falls below
    ``-divergence_norm`` (the run then stops there), is reported as diverged.
    """
    import torch

    from etr_core.minimize import minimize

    check_choice("method", method, ("tr_uniform", "tr_adagrad", "tr_rms"))
    max_iter = check_int("max_iter", max_iter, minimum=0)
    gtol = check_nonnegative("gtol", gtol)
    radius = check_positive("radius", radius)
    divergence_norm = check_positive("divergence_norm", divergence_norm)
    x = _start(x0)
    f0, g0 = _evaluate(fn, x)
    if not (math.isfinite(f0) and np.all(np.isfinite(g0))):
        return _empty_run(method, x, f0, math.nan, "nonfinite_start", NONFINITE_START)
    max_radius = max(float(options.pop("max_radius", 10.0)), radius)
    f_floor = None if fn.bounded_below else -divergence_norm
    result = minimize(
        fn.torch_value,
        torch.as_tensor(x),
        method,
        gtol=gtol,
        max_iter=max_iter,
        radius=radius,
        max_radius=max_radius,
        f_target=f_floor,
        **options,
    )
    hist = result.history
    points = np.array([h["x"].numpy() for h in hist] + [result.x.numpy()], dtype=np.float64).reshape(-1, 2)
    fs = np.array([h["f"] for h in hist] + [result.fun], dtype=np.float64)
    gs = np.array([h["grad_norm"] for h in hist] + [result.grad_norm], dtype=np.float64)
    k = len(hist)
    run = RunHistory(
        method=method,
        label=METHOD_LABELS[method],
        iterates=points,
        f=fs,
        grad_norm=gs,
        radius=np.array([h["radius_before"] for h in hist], dtype=np.float64),
        rho=np.array([h["rho"] for h in hist], dtype=np.float64),
        accepted=np.array([bool(h["accepted"]) for h in hist], dtype=bool),
        cg_iterations=np.array([h["cg_iterations"] for h in hist], dtype=int),
        hvp_calls=np.array([h["hvp_calls"] for h in hist], dtype=int),
        m=np.array([h["m"].numpy() for h in hist], dtype=np.float64).reshape(k, 2),
        exits=[str(h["exit"]) for h in hist],
        status="converged" if result.success else "max_iter",
        message=result.message,
        nfev=int(result.nfev),
        options={"radius": radius, "max_radius": max_radius, **options},
    )
    norms = np.linalg.norm(points, axis=1)
    escaped = np.flatnonzero(~np.isfinite(norms) | (norms > divergence_norm))
    if result.status == 3 or escaped.size:
        run.status = "diverged"
        run.message = f"Diverged after {k} iterations: {result.message}"
    elif f_floor is not None and result.fun < f_floor:
        run.status = "diverged"
        run.message = f"f fell below {f_floor:.3g} after {k} iterations: the function is unbounded below."
    elif result.status == 2:
        run.status = "stalled"
    elif result.success:
        run.message = f"‖g‖ ≤ {gtol:g} after {k} iterations."
    return run


def run_method(fn: ToyFunction, x0: Sequence[float], method: str, **kwargs: Any) -> RunHistory:
    """Dispatch to :func:`run_newton`, :func:`run_gradient_descent` or :func:`run_trust_region`."""
    check_choice("method", method, RUN_METHODS)
    if method == "newton":
        return run_newton(fn, x0, **kwargs)
    if method == "gd":
        return run_gradient_descent(fn, x0, **kwargs)
    return run_trust_region(fn, x0, method, **kwargs)


def compare_runs(
    fn: ToyFunction,
    x0: Sequence[float],
    methods: Iterable[str] = RUN_METHODS,
    *,
    max_iter: int = 100,
    gtol: float = 1e-8,
    radius: float = 1.0,
    lr: float = 0.1,
    tr_options: dict[str, Any] | None = None,
) -> dict[str, RunHistory]:
    """Run every method in ``methods`` from the same start; returns ``{method: RunHistory}``."""
    runs: dict[str, RunHistory] = {}
    for method in methods:
        check_choice("method", method, RUN_METHODS)
        if method == "newton":
            runs[method] = run_newton(fn, x0, max_iter=max_iter, gtol=gtol)
        elif method == "gd":
            runs[method] = run_gradient_descent(fn, x0, lr=lr, max_iter=max_iter, gtol=gtol)
        else:
            runs[method] = run_trust_region(
                fn, x0, method, max_iter=max_iter, gtol=gtol, radius=radius, **dict(tr_options or {})
            )
    return runs


def iterations_table(
    runs: dict[str, RunHistory], fn: ToyFunction, *, gtol: float = 1e-6, ftol: float = 1e-8
) -> list[dict[str, Any]]:
    """One row per run: iterations to ``||g|| <= gtol`` and to ``f - f_min <= ftol`` (``None`` = never),
    status, final value, the known critical point the run ended nearest to, and the work done
    (accepted steps, CG iterations, Hessian-vector products, function evaluations)."""
    rows = []
    for run in runs.values():
        end = run.final_point
        nearest, dist = fn.nearest_critical_point(end) if np.all(np.isfinite(end)) else (None, math.inf)
        ended_at = "—"
        if nearest is not None and dist <= 1e-3 * max(1.0, float(np.linalg.norm(nearest.as_array()))):
            ended_at = f"{nearest.kind} ({nearest.point[0]:.3g}, {nearest.point[1]:.3g})"
        rows.append(
            {
                "method": run.label,
                "status": run.status,
                "iterations": run.nit,
                "to ‖g‖ ≤ gtol": run.iterations_to(gtol=gtol),
                "to f − f* ≤ ftol": run.iterations_to(ftol=ftol, f_min=fn.min_value),
                "accepted": int(np.sum(run.accepted)),
                "final f": float(run.f[-1]),
                "ended at": ended_at,
                "CG iterations": run.total_cg_iterations,
                "Hv products": run.total_hvp,
                "f evaluations": run.nfev,
            }
        )
    return rows
