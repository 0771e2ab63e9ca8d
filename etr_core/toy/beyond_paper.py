"""The paper's future work on the 2-D landscapes: the Hessian-diagonal ellipsoid and ellipsoidal ARC.

* :func:`run_hessian_tr` -- Algorithm 1 (paper rules: Steihaug-Toint PCG, Eq. 36 stop, Table 1 radius
  update) with ``M_t = diag(m_t)`` from :class:`etr_core.hessian_diagonal.HessianDiagonalEllipsoid`:
  ``m = sqrt(EMA_beta(d_hat^2) + eps)`` with ``d_hat`` the Hessian diagonal at ``w_t`` (section 6's
  "(block-) diagonal Hessian approximations"). ``probes="exact"`` uses the two probes ``(1, 1)`` and
  ``(1, -1)``, whose Hutchinson mean is exactly ``diag(H)`` in 2-D; an integer draws that many
  Rademacher probes (Bekas et al. 2007), seeded per iteration.
* :func:`run_arc` -- adaptive cubic regularisation (Cartis, Gould & Toint 2011, Algorithm 2.1) in the
  same norms (footnote 4): the cubic model's step from :func:`etr_core.subproblem.cubic.arc_subproblem`
  for the current ``sigma_t``, ``rho`` with the cubic term in the prediction, and CGT's sigma update.
* :func:`hessian_diagonal_limit` -- the closed form on a quadratic ``1/2 (w - w*)^T A (w - w*)``:
  after ``t`` updates with exact probes ``m_t = sqrt((1 - beta^t) diag(A)^2 + eps)``, which tends to
  ``|diag(A)|``, the exact diagonal (Jacobi) preconditioner.

Each run is a :class:`~etr_core.toy.second_order.RunHistory` (ARC: :class:`ArcHistory`, ``radius``
NaN because ARC has no region, ``sigma`` per iteration), so the 2-D page draws them like the others.
Hessian-vector products are counted: the probes and every Krylov product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from etr_core._validation import check_choice, check_int, check_nonnegative, check_positive
from etr_core.config import default_gamma2
from etr_core.ellipsoids import make_ellipsoid
from etr_core.hessian_diagonal import HessianDiagonalEllipsoid, hutchinson_diagonal_estimate, probe_generator
from etr_core.subproblem.cubic import arc_subproblem
from etr_core.subproblem.steihaug import steihaug_toint_pcg
from etr_core.toy.functions import ToyFunction
from etr_core.toy.second_order import DEFAULT_DIVERGENCE_NORM, RunHistory
from etr_core.trust_region import classify_step, reduction_ratio, update_radius

__all__ = ["ARC_ELLIPSOIDS", "BEYOND_LABELS", "ArcHistory", "hessian_diagonal_limit", "run_arc",
           "run_beyond", "run_hessian_tr"]

BEYOND_LABELS = {"tr_hess": "TR_hess", "arc_rms": "ARC_rms", "arc_hess": "ARC_hess"}
ARC_ELLIPSOIDS = ("rms", "hessian", "uniform")
_EXACT_PROBES = np.array([[1.0, 1.0], [1.0, -1.0]])


@dataclass
class ArcHistory(RunHistory):
    """An ARC run: :class:`RunHistory` (``radius`` NaN) plus ``sigma`` ``(k,)``, the regularisation
    weight each iteration's cubic model used, and ``steps`` ``(k, 2)``, the proposed steps."""

    sigma: np.ndarray = field(default_factory=lambda: np.empty(0))
    steps: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))

    @property
    def sigma_after(self) -> np.ndarray:
        """``(k,)``: sigma after each iteration's update (the last one is the run's final sigma)."""
        return np.append(self.sigma[1:], float(self.options.get("sigma", np.nan)))[: self.nit]


def hessian_diagonal_limit(A: np.ndarray, steps: int, *, beta: float = 0.8, eps: float = 1e-10) -> np.ndarray:
    """``m_t = sqrt((1 - beta^t) diag(A)^2 + eps)``: the Hessian-diagonal ellipsoid after ``steps`` exact
    updates on a quadratic with Hessian ``A`` ((2, 2); the EMA starts at 0). ``steps -> inf`` gives
    ``sqrt(diag(A)^2 + eps) ~ |diag(A)|``, the exact diagonal preconditioner."""
    A = np.asarray(A, dtype=np.float64)
    if A.shape != (2, 2):
        raise ValueError(f"A must have shape (2, 2), got {A.shape}")
    steps = check_int("steps", steps, minimum=0)
    return np.sqrt((1.0 - beta**steps) * np.diag(A) ** 2 + eps)


def _diag_estimate(H: np.ndarray, probes: int | str, seed: int, t: int) -> tuple[np.ndarray, int]:
    """``(d_hat, Hessian-vector products used)`` at one iterate."""
    Ht = torch.as_tensor(H, dtype=torch.float64)
    if probes == "exact":
        z = torch.as_tensor(_EXACT_PROBES)
        return (z * (z @ Ht.T)).mean(0).numpy(), 2
    d = hutchinson_diagonal_estimate(_hvp(H), [(2,)], int(probes), generator=probe_generator(seed, t),
                                     dtype=torch.float64)
    return d.numpy(), int(probes)


def _hvp(H: np.ndarray) -> Any:
    """``v -> H v`` for the (2, 2) Hessian ``H`` (float64 tensors)."""
    Ht = torch.as_tensor(H, dtype=torch.float64)
    return lambda v: Ht @ v


def _check_probes(probes: Any) -> int | str:
    if probes == "exact":
        return probes
    if isinstance(probes, str):
        raise ValueError(f"probes must be 'exact' or an integer >= 1, got {probes!r}")
    return check_int("probes", probes, minimum=1)


class _Loop:
    """Bookkeeping shared by both runs: per-iteration records and the stop tests."""

    def __init__(self, fn: ToyFunction, x0: Sequence[float], gtol: float, divergence_norm: float) -> None:
        self.fn, self.gtol, self.divergence_norm = fn, gtol, divergence_norm
        self.w = np.asarray(x0, dtype=np.float64).reshape(-1)
        if self.w.shape != (2,) or not np.all(np.isfinite(self.w)):
            raise ValueError(f"x0 must be 2 finite coordinates, got {np.asarray(x0).tolist()}")
        self.f, self.g = self.evaluate(self.w)
        self.points, self.fs, self.gs = [self.w.copy()], [self.f], [float(np.linalg.norm(self.g))]
        self.rows: dict[str, list] = {k: [] for k in ("radius", "rho", "accepted", "cg", "hvp", "m", "exit",
                                                      "sigma", "step")}
        self.nfev = 1
        self.status, self.message = "max_iter", ""

    def evaluate(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        with np.errstate(all="ignore"):
            return float(self.fn.value(w)), np.asarray(self.fn.gradient(w), dtype=np.float64)

    def done(self, max_iter: int) -> bool:
        if not (math.isfinite(self.f) and np.all(np.isfinite(self.g))):
            self.status, self.message = "nonfinite_start", "f or its gradient is not finite at the start."
            return True
        k = len(self.rows["exit"])
        if self.gs[-1] <= self.gtol:
            self.status, self.message = "converged", f"‖g‖ ≤ {self.gtol:g} after {k} iterations."
            return True
        if k >= max_iter:
            self.message = f"Stopped after {max_iter} iterations."
            return True
        return False

    def judge(self, step: np.ndarray, pred: float) -> tuple[float, np.ndarray, float, np.ndarray]:
        trial = self.w + step
        f_new, g_new = self.evaluate(trial)
        self.nfev += 1
        return reduction_ratio(self.f, f_new, pred), trial, f_new, g_new

    def record(self, **row: Any) -> None:
        for key, value in row.items():
            self.rows[key].append(value)
        self.points.append(self.w.copy())
        self.fs.append(self.f)
        self.gs.append(float(np.linalg.norm(self.g)))

    def diverged(self) -> bool:
        norm = float(np.linalg.norm(self.w))
        if not math.isfinite(norm) or norm > self.divergence_norm or (
                not self.fn.bounded_below and self.f < -self.divergence_norm):
            self.status = "diverged"
            k = len(self.rows["exit"])
            self.message = f"Diverged after {k} iterations: ‖w‖ = {norm:.3g}, f = {self.f:.3g}."
            return True
        return False

    def history(self, method: str, options: dict[str, Any], cls: type = RunHistory,
                **extra: Any) -> RunHistory:
        r, k = self.rows, len(self.rows["exit"])
        return cls(method=method, label=BEYOND_LABELS[method], iterates=np.array(self.points).reshape(-1, 2),
                   f=np.array(self.fs), grad_norm=np.array(self.gs),
                   radius=np.array(r["radius"], dtype=float),
                   rho=np.array(r["rho"], dtype=float), accepted=np.array(r["accepted"], dtype=bool),
                   cg_iterations=np.array(r["cg"], dtype=int), hvp_calls=np.array(r["hvp"], dtype=int),
                   m=np.array(r["m"], dtype=float).reshape(k, 2), exits=list(r["exit"]), status=self.status,
                   message=self.message, nfev=self.nfev, options=options, **extra)

    def move(self, accepted: bool, trial: np.ndarray, f_new: float, g_new: np.ndarray) -> None:
        if accepted:
            self.w, self.f, self.g = trial, f_new, g_new


def run_hessian_tr(
    fn: ToyFunction, x0: Sequence[float], *, max_iter: int = 100, gtol: float = 1e-8, radius: float = 1.0,
    max_radius: float = 10.0, probes: int | str = "exact", beta: float = 0.8, eps: float = 1e-10,
    seed: int = 0, max_krylov: int = 50, krylov_tol: float = 0.1, eta1: float = 1e-4, eta2: float = 0.95,
    gamma1: float = 1.1, divergence_norm: float = DEFAULT_DIVERGENCE_NORM,
) -> RunHistory:
    """Algorithm 1 with the Hessian-diagonal ellipsoid (module docstring) from ``x0`` ((2,)); the radius
    update is Table 1's (``gamma1`` grow, ``gamma2 = 1.5`` shrink). ``hvp_calls`` counts the probes plus
    the CG products. Raises ``ValueError`` for a bad ``x0``, ``probes``, ``radius`` or ``max_iter``."""
    probes = _check_probes(probes)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    radius = check_positive("radius", radius)
    max_radius = max(check_positive("max_radius", max_radius), radius)
    loop = _Loop(fn, x0, check_nonnegative("gtol", gtol), check_positive("divergence_norm", divergence_norm))
    ell = HessianDiagonalEllipsoid(beta=beta, eps=eps, probes=1 if probes == "exact" else probes, seed=seed)
    gamma2 = default_gamma2("hessian")
    while not loop.done(max_iter):
        t = len(loop.rows["exit"])
        H = fn.hessian(loop.w)
        d_hat, used = _diag_estimate(H, probes, seed, t)
        ell.update(torch.as_tensor(d_hat))
        m = ell.diag(like=torch.zeros(2, dtype=torch.float64))
        res = steihaug_toint_pcg(torch.as_tensor(loop.g), _hvp(H), radius, m, kappa=krylov_tol,
                                 max_iter=max_krylov)
        step = res.step.numpy().astype(np.float64)
        rho, trial, f_new, g_new = loop.judge(step, float(res.pred_reduction))
        quality = classify_step(rho, eta1, eta2)
        loop.move(quality != "unsuccessful", trial, f_new, g_new)
        loop.record(radius=radius, rho=rho, accepted=quality != "unsuccessful", cg=res.iterations,
                    hvp=res.hvp_calls + used, m=m.numpy().copy(), exit=str(res.exit), sigma=math.nan,
                    step=step)
        radius = update_radius(radius, quality, gamma1, gamma2, max_radius)
        if loop.diverged():
            break
    return loop.history("tr_hess", {"radius": radius, "max_radius": max_radius, "probes": probes,
                                    "beta": beta, "eps": eps, "max_krylov": max_krylov,
                                    "krylov_tol": krylov_tol})


def run_arc(
    fn: ToyFunction, x0: Sequence[float], *, ellipsoid: str = "rms", max_iter: int = 100, gtol: float = 1e-8,
    sigma: float = 1.0, sigma_min: float = 1e-8, sigma_max: float = 1e16, probes: int | str = "exact",
    beta: float = 0.8, eps: float = 1e-10, seed: int = 0, max_krylov: int = 50, krylov_tol: float = 0.0,
    eta1: float = 0.1, eta2: float = 0.9, gamma1: float = 2.0, gamma2: float = 2.0,
    divergence_norm: float = DEFAULT_DIVERGENCE_NORM,
) -> ArcHistory:
    """ARC (CGT 2011 Algorithm 2.1, section 7 constants) in the ``ellipsoid`` norm ("rms", "hessian" or
    "uniform") from ``x0``: each iteration minimises ``g^T s + 1/2 s^T H s + sigma_t/3 ||s||_M^3`` over
    the Lanczos space, accepts when ``rho >= eta1`` and sets ``sigma_{t+1}`` = ``max(sigma_t / gamma1,
    sigma_min)`` if ``rho >= eta2``, ``sigma_t`` if ``rho >= eta1``, ``min(gamma2 sigma_t, sigma_max)``
    otherwise. ``krylov_tol = 0`` (default) solves the 2-D cubic model exactly (two Lanczos products,
    CGT 2011 Theorem 3.1's global minimiser); ``max_krylov = 1`` stops after one. Raises ``ValueError``
    for a bad ``ellipsoid``, ``sigma``, ``x0`` or ``max_iter``."""
    check_choice("ellipsoid", ellipsoid, ARC_ELLIPSOIDS)
    probes = _check_probes(probes)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    sigma_min = check_positive("sigma_min", sigma_min)
    sigma_max = check_positive("sigma_max", sigma_max)
    sigma = min(max(check_positive("sigma", sigma), sigma_min), sigma_max)
    loop = _Loop(fn, x0, check_nonnegative("gtol", gtol), check_positive("divergence_norm", divergence_norm))
    if ellipsoid == "hessian":
        ell = HessianDiagonalEllipsoid(beta=beta, eps=eps, probes=1 if probes == "exact" else probes,
                                       seed=seed)
    else:
        ell = make_ellipsoid(ellipsoid, **({} if ellipsoid == "uniform" else {"beta": beta, "eps": eps}))
    while not loop.done(max_iter):
        t = len(loop.rows["exit"])
        H = fn.hessian(loop.w)
        used = 0
        if ellipsoid == "hessian":
            d_hat, used = _diag_estimate(H, probes, seed, t)
            ell.update(torch.as_tensor(d_hat))
        else:
            ell.update(torch.as_tensor(loop.g))
        m = ell.diag(like=torch.zeros(2, dtype=torch.float64))
        res = arc_subproblem(torch.as_tensor(loop.g), _hvp(H), sigma, m, kappa=krylov_tol,
                             max_iter=max_krylov)
        step = res.step.numpy().astype(np.float64)
        rho, trial, f_new, g_new = loop.judge(step, float(res.pred_reduction))
        quality = classify_step(rho, eta1, eta2)
        loop.move(quality != "unsuccessful", trial, f_new, g_new)
        loop.record(radius=math.nan, rho=rho, accepted=quality != "unsuccessful", cg=res.iterations,
                    hvp=res.hvp_calls + used, m=m.numpy().copy(), exit=str(res.exit), sigma=sigma, step=step)
        if quality == "very_successful":
            sigma = max(sigma / gamma1, sigma_min)
        elif quality == "unsuccessful":
            sigma = min(sigma * gamma2, sigma_max)
        if loop.diverged():
            break
    method = "arc_hess" if ellipsoid == "hessian" else "arc_rms"
    run = loop.history(method, {"ellipsoid": ellipsoid, "sigma": sigma, "max_krylov": max_krylov,
                                       "krylov_tol": krylov_tol},
                       ArcHistory, sigma=np.array(loop.rows["sigma"], dtype=float),
                       steps=np.array(loop.rows["step"], dtype=float).reshape(-1, 2))
    if ellipsoid == "uniform":
        run.label = "ARC_uni"
    return run


def run_beyond(fn: ToyFunction, x0: Sequence[float], method: str, *, max_iter: int = 100, gtol: float = 1e-8,
               radius: float = 1.0, **options: Any) -> RunHistory:
    """``"tr_hess"`` (:func:`run_hessian_tr`, initial radius ``radius``), ``"arc_rms"`` or ``"arc_hess"``
    (:func:`run_arc`, ``sigma_0 = 1 / radius``: a large region is a weak cubic penalty)."""
    check_choice("method", method, tuple(BEYOND_LABELS))
    if method == "tr_hess":
        return run_hessian_tr(fn, x0, max_iter=max_iter, gtol=gtol, radius=radius, **options)
    return run_arc(fn, x0, ellipsoid="hessian" if method == "arc_hess" else "rms", max_iter=max_iter,
                   gtol=gtol, sigma=1.0 / check_positive("radius", radius), **options)
