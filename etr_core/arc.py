"""``EllipsoidalARC``: adaptive cubic regularisation (Cartis, Gould & Toint 2011) in an ellipsoidal norm.

The paper's footnote 4: the matrix-induced norms "directly transfer to the cubic regularization
framework". Each ``step(closure)`` minimises (approximately, over a Lanczos Krylov space,
:func:`etr_core.subproblem.cubic.arc_subproblem`) the cubic model

    m(s) = L + g^T s + 1/2 s^T B s + sigma/3 ||s||_M^3,        ||s||_M^2 = s^T diag(m) s,

with ``diag(m)`` from the same ellipsoids as :class:`etr_core.optim.EllipsoidalTR` ("uniform",
"adagrad", "rms", "hessian"), then judges ``rho = (L(w) - L(w + s)) / (m(0) - m(s))`` (CGT 2011
Eq. 2.4, the cubic term included, float64) on the same batch and updates ``sigma`` as CGT 2011
Algorithm 2.1: ``rho >= eta2 = 0.9`` (very successful): accept, ``sigma <- max(sigma / gamma1,
sigma_min / lr)``; ``rho >= eta1 = 0.1`` (successful): accept, sigma kept; otherwise reject (parameters
restored bitwise) and ``sigma <- min(gamma2 sigma, sigma_max)``, ``gamma1 = 2`` and ``gamma2 = 4``.
CGT's section 7 uses ``gamma2 = 2`` (pass ``gamma2=2.0``); 4 is the default because it was faster on
every network measured here (digits MLP, 8 seeds, backprops to 99% training accuracy: 330 against 432;
Fashion-MNIST MLP, one seed: 248 against 268 to training loss 0.7; ``benchmarks/bench_arc_sigma.py``).
``1/sigma`` plays the part of the trust-region radius.

Everything else is EllipsoidalTR's (the shared base class): the closure API (``closure()`` returns the
batch loss without calling ``backward``; optional ``hessian_closure``), one random state and one
buffer update per step, ``p.grad`` after the step, the counters (forward, backward, hvp, steps,
accepted; the Hessian ellipsoid's probes included in ``hvp``), ``last_step`` records, faults (a
non-finite Hessian product falls back to the first-order cubic step ``s = -alpha M^-1 g``,
``alpha = (sigma ||g||_{M^-1})^{-1/2}``, counted in ``fault_counts["hvp_fallback"]``), options in
``param_groups`` and state in torch's layout. The region's scalar is ``sigma``: it sits in the first
parameter's state under ``radius`` (the slot the trust region's Delta uses), with ``initial_radius``
the group's ``sigma`` it started from; read it as ``opt.sigma``. ``lr`` divides the lower bound,
``sigma >= sigma_min / lr`` (1.0 = CGT's rule), so a torch LR scheduler lowering ``lr`` keeps steps short.

Initial sigma (the default, ``sigma="auto"``, option ``auto_sigma=True``): sigma_0 is chosen at the first
step from that step's Cauchy point in the M-norm, as ``radius="auto"`` does for the trust region
(:mod:`etr_core.initial_radius`, one counted Hessian-vector product): with ``Delta_C`` the M-length of
the Cauchy step and ``||g||_{M^-1}`` the gradient's dual norm, ``sigma_0 = ||g||_{M^-1} / Delta_C^2``,
the sigma whose multiplier ``sigma ||s||_M`` at the Cauchy length equals the model's curvature along
the Cauchy direction (per unit M-length squared); the first step along that direction is then 0.62
Delta_C long. Where that curvature is not positive the group's ``sigma`` (1.0) stays; a number given as
``sigma`` starts there instead (CGT's sigma_0 = 1 is ``sigma=1.0``). The choice is kept in the region's
state under ``auto_radius`` (the slot of the trust region's automatic radius), so a resumed run does not
choose again. Why not CGT's constant 1: sigma has the units of the norm, and in the RMSProp norm
(``m ~ |g|``) 1 is far too small on the networks here (digits MLP, 8 seeds,
``benchmarks/bench_arc_sigma.py``: sigma_0 = 1 takes 615 backprops to 99% training accuracy with 60% of
the first 20 steps rejected; the automatic choice, 2-5 x 10^2 there, takes 432).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from etr_core._validation import check_bool, check_positive, check_real
from etr_core.config import TRConfig
from etr_core.ellipsoids import DEFAULT_EPS
from etr_core.initial_radius import cauchy_radius
from etr_core.optim.base import _TrustRegionBase
from etr_core.optim.options import TORCH_GROUP_KEYS, GroupOptions, check_hessian_options
from etr_core.optim.records import _NAN, Closure
from etr_core.step_support import count_fault, guarded_step
from etr_core.subproblem.cubic import arc_subproblem
from etr_core.subproblem.result import SubproblemResult

__all__ = ["ARC_DEFAULTS", "ARC_OPTIONS", "EllipsoidalARC"]

ARC_DEFAULTS: dict[str, Any] = {
    "ellipsoid": "rms", "sigma": 1.0, "sigma_min": 1e-8, "sigma_max": 1e16, "lr": 1.0,
    "eta1": 0.1, "eta2": 0.9, "gamma1": 2.0, "gamma2": 4.0, "ellipsoid_update": "every_iteration",
    "beta": 0.8, "eps": DEFAULT_EPS, "eps_mode": "paper", "tiny_pred": 0.0,
    "krylov_tol": 0.1, "theta": 0.5, "max_krylov": 50, "hessian_probes": 1, "hessian_block": "element",
    "auto_sigma": True,
}
ARC_OPTIONS = tuple(ARC_DEFAULTS)
_TR_FIELDS = ("ellipsoid", "eta1", "eta2", "gamma1", "gamma2", "ellipsoid_update", "beta", "eps",
              "eps_mode", "tiny_pred", "krylov_tol", "theta", "max_krylov", "hessian_probes", "hessian_block")
# options added after states were first saved, with the value that reproduces those states' runs
_LATER = {"auto_sigma": False}
_CANONICAL = {"uni": "uniform", "sphere": "uniform", "ada": "adagrad", "rmsprop": "rms"}


def _group_options(group: Mapping[str, Any], where: str) -> GroupOptions:
    missing = [k for k in ARC_OPTIONS if k not in group and k not in _LATER]
    if missing:
        raise ValueError(f"{where} lacks option(s) {missing}")
    unknown = sorted(str(k) for k in group if k not in ARC_OPTIONS and k not in TORCH_GROUP_KEYS)
    if unknown:
        raise TypeError(
            f"{where}: unknown EllipsoidalARC option(s) {unknown}; options: {sorted(ARC_OPTIONS)}"
        )
    try:
        sigma = check_positive("sigma", group["sigma"])
        sigma_min = check_positive("sigma_min", group["sigma_min"])
        sigma_max = check_positive("sigma_max", group["sigma_max"])
        if not sigma_min <= sigma <= sigma_max:
            raise ValueError(f"sigma must lie in [sigma_min, sigma_max] = [{sigma_min!r}, {sigma_max!r}], "
                             f"got {sigma!r}")
        lr = check_positive("lr", group["lr"])
        check_bool("auto_sigma", group.get("auto_sigma", _LATER["auto_sigma"]))
        fields = {k: group[k] for k in _TR_FIELDS}
        if isinstance(fields["ellipsoid"], str):
            fields["ellipsoid"] = _CANONICAL.get(fields["ellipsoid"].lower(), fields["ellipsoid"].lower())
        # the trust-region configuration carries the shared fields; its radius slot holds sigma
        config = TRConfig(radius=sigma, max_radius=sigma_max, solver="lanczos", label="ARC", **fields)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None
    return GroupOptions(config, lr, "arc", sigma)


def _values(group: Mapping[str, Any]) -> tuple[Any, ...]:
    options = _group_options(group, "")
    c = options.config
    return (c.ellipsoid, options.radius, float(group["sigma_min"]), c.max_radius, options.lr,
            *(getattr(c, k) for k in _TR_FIELDS[1:]),
            bool(group.get("auto_sigma", _LATER["auto_sigma"])))


class EllipsoidalARC(_TrustRegionBase):
    """Adaptive cubic regularisation in the ellipsoidal norm as a ``torch.optim.Optimizer`` (module
    docstring). Options (each a key of every param group, equal in all groups): ``ellipsoid``
    ("rms", "adagrad", "uniform", "hessian"), ``sigma`` (initial; default ``"auto"``: chosen at the first
    step from its Cauchy point, the option ``auto_sigma``; a number starts there), ``sigma_min`` (1e-8),
    ``sigma_max`` (1e16), ``lr`` (1.0), ``eta1`` (0.1), ``eta2`` (0.9), ``gamma1``/``gamma2`` (2, 4),
    ``krylov_tol``/``theta`` (stop when the model gradient's ``M^-1`` norm is ``<= ||g|| min(krylov_tol,
    ||g||^theta)``), ``max_krylov`` (50), and the ellipsoid's ``beta``, ``eps``, ``eps_mode``,
    ``ellipsoid_update``; ``hessian_probes`` (1) and ``hessian_block`` ("element", "layer", "unit") for
    ``ellipsoid="hessian"``; ``tiny_pred`` rejects a predicted decrease at or below it."""

    _OPTIONS = ARC_OPTIONS

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], ellipsoid: Any = None, *,
                 distributed: bool = False, **options: Any) -> None:
        unknown = sorted(set(options) - set(ARC_OPTIONS))
        if unknown:
            raise TypeError(f"unknown EllipsoidalARC option(s) {unknown}; options: {sorted(ARC_OPTIONS)}")
        if isinstance(options.get("sigma"), str):
            if options["sigma"].lower() != "auto":
                raise ValueError(f"sigma must be a positive number or 'auto', got {options['sigma']!r}")
            options = {**options, "sigma": None, "auto_sigma": True}
        elif options.get("sigma") is not None and options.get("auto_sigma") is None:
            options = {**options, "auto_sigma": False}  # a number given as sigma is the start, not a fallback
        defaults = {**ARC_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        if ellipsoid is not None:
            if not isinstance(ellipsoid, str):
                raise TypeError(
                    f"ellipsoid must be a name ('rms', 'adagrad', 'uniform', 'hessian'), got {ellipsoid!r}"
                )
            defaults["ellipsoid"] = ellipsoid
        config = _group_options(defaults, "options").config
        check_hessian_options(config.ellipsoid, config.hessian_probes, config.hessian_block)
        defaults["ellipsoid"] = config.ellipsoid
        super().__init__(params, defaults, distributed)

    @classmethod
    def _resolve_groups(cls, groups: list[Any]) -> GroupOptions:
        first = _group_options(groups[0], "param_groups[0]")
        if len(groups) > 1:
            reference = _values(groups[0])
            for i, group in enumerate(groups[1:], 1):
                _group_options(group, f"param_groups[{i}]")
                for key, a, b in zip(("ellipsoid", "sigma", "sigma_min", "sigma_max", "lr", *_TR_FIELDS[1:],
                                      "auto_sigma"),
                                     reference, _values(group)):
                    if a != b:
                        raise ValueError(
                            f"{key} differs between param groups: param_groups[0] has {a!r}, "
                            f"param_groups[{i}] has {b!r}; EllipsoidalARC keeps one sigma over all "
                            f"parameters, so set {key} equal in every group"
                        )
        return first

    @property
    def sigma(self) -> float:
        """The current regularisation weight sigma_k (CGT 2011)."""
        return self.radius

    @guarded_step
    def step(self, closure: Closure, hessian_closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One ARC iteration on the closure's batch; returns the loss at ``w`` (before the step)."""
        if hessian_closure is not None and not callable(hessian_closure):
            raise TypeError(f"hessian_closure must be callable or None, got {type(hessian_closure).__name__}")
        loss_t, prep = self._begin_step(closure, create_graph=hessian_closure is None)
        if prep is None:
            return loss_t
        loss, g, hvp, grad_norm, updated, m = prep
        del prep
        if hessian_closure is not None:
            hvp, updated, m = self._hessian_batch(hessian_closure, g, updated, m)
        if self.param_groups[0].get("auto_sigma", _LATER["auto_sigma"]) and "auto_radius" not in self._region:
            self._choose_sigma(g, self._reduced(hvp), m)
        sigma = self.sigma
        c = self._cfg
        result = arc_subproblem(g, self._reduced(hvp), sigma, m, kappa=c.krylov_tol, theta=c.theta,
                                max_iter=max(c.max_krylov, 1))
        if result.exit == "nonfinite":
            result = self._fallback(g, m, sigma, result)
        del hvp
        s = result.step
        step_l2 = float(torch.linalg.vector_norm(s))
        pred = float(result.pred_reduction)
        if result.exit == "nonfinite" or not (math.isfinite(step_l2) and math.isfinite(pred)):
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonfinite_hvp")
        elif not pred > c.tiny_pred:
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonpositive_pred")
        else:
            outcome = self._judge(closure, loss, s, pred)
        record = self._settle(loss=loss, grad_norm=grad_norm, updated=updated, result=result, pred=pred,
                              step_l2=step_l2, outcome=outcome, adapt_radius=False, stacklevel=3)
        self.radius = self._next_sigma(sigma, outcome[2])
        record.radius_after = self.radius
        self._finish(record)
        return loss_t

    def _choose_sigma(self, g: Tensor, hvp, m: Tensor) -> None:
        """sigma_0 = ||g||_{M^-1} / Delta_C^2 from the first Cauchy step (module docstring), once per run;
        one counted Hessian-vector product; clipped to ``[sigma_min / lr, sigma_max]``."""
        delta = cauchy_radius(g, hvp, m)
        self.counters["hvp"] += 1
        if delta is not None:
            dual = math.sqrt(float(torch.dot(g.double(), (g / m).double())))
            floor = min(check_real("sigma_min", self.param_groups[0]["sigma_min"]) / self._options.lr,
                        self._cfg.max_radius)
            chosen = dual / (delta * delta)
            if math.isfinite(chosen) and chosen > 0:
                self.radius = min(max(chosen, floor), self._cfg.max_radius)
        self._region["auto_radius"] = self.radius  # the slot of the automatic radius: chosen once

    def _reduced(self, hvp):
        if not self.distributed:
            return hvp
        from etr_core import distributed as etr_dist

        return lambda v: etr_dist.all_reduce_mean(hvp(v))

    def _next_sigma(self, sigma: float, quality: str) -> float:
        """CGT 2011 Algorithm 2.1 (section 7 constants): smaller after a very successful step, larger
        after an unsuccessful one, kept otherwise; within ``[sigma_min / lr, sigma_max]``."""
        c, lr = self._cfg, self._options.lr
        floor = min(check_real("sigma_min", self.param_groups[0]["sigma_min"]) / lr, c.max_radius)
        if quality == "very_successful":
            sigma = sigma / c.gamma1
        elif quality == "unsuccessful":
            sigma = sigma * c.gamma2_value
        return min(max(sigma, floor), c.max_radius)

    def _fallback(self, g: Tensor, m: Tensor, sigma: float, result: SubproblemResult) -> SubproblemResult:
        """The minimiser of ``g^T s + sigma/3 ||s||_M^3`` along ``-M^-1 g`` when the curvature is NaN/Inf."""
        z = g / m
        gamma = float(torch.dot(g.double(), z.double()))
        if not (math.isfinite(gamma) and gamma > 0):
            return result
        alpha = 1.0 / math.sqrt(sigma * math.sqrt(gamma))
        count_fault(self, "hvp_fallback",
                    "a Hessian-vector product was NaN/Inf with a finite gradient; took the first-order "
                    "cubic step -alpha M^-1 g in the same ellipsoid instead")
        return SubproblemResult(step=-alpha * z, pred_reduction=2.0 / 3.0 * alpha * gamma,
                                exit="hvp_fallback",
                                iterations=result.iterations, hvp_calls=result.hvp_calls,
                                step_m_norm=alpha * math.sqrt(gamma), multiplier=None, on_boundary=False)
