"""Stochastic ellipsoidal trust-region optimisers (paper Algorithm 1; appendix B, Fig. 5).

``EllipsoidalTR`` runs one iteration of Algorithm 1 per ``step(closure)``: loss and gradient on the
mini-batch (with a retained graph), ellipsoid update (Eq. 2-3, Corollary 1), an approximate solve
of the subproblem (Eq. 8) with Hessian-vector products through that graph until Eq. 36 holds, the
trial loss on the *same* batch, rho of Eq. 10 in float64, and acceptance plus radius update
(Algorithm 1, line 7). ``FirstOrderTR`` is the same loop with the linear model of Theorem 1.

The closure contract (as for ``torch.optim.LBFGS``, but without ``backward``): ``closure()``
evaluates the current mini-batch with autograd enabled and returns the scalar loss. ``step`` calls
it twice, once at ``w`` and once under ``no_grad`` at the trial point ``w + s``; both calls must
use the same batch and the same module mode. ``step`` sets every parameter's ``.grad`` to ``None``
before calling the closure and raises ``RuntimeError`` if the closure filled one (it must not call
``backward``: the optimiser forms the gradient itself, with the graph the Hessian products need).

Faults never move the parameters and never loop:

* loss at ``w`` or its gradient NaN/Inf -> no move, ``RuntimeWarning``, radius unchanged (the point,
  not the radius, is at fault; the ellipsoid is not touched), ``fault="nonfinite_loss"`` /
  ``"nonfinite_gradient"``;
* zero gradient -> no move, radius unchanged, ``exit="zero_gradient"``;
* NaN/Inf in a Hessian-vector product or in the step -> step rejected, radius shrunk,
  ``fault="nonfinite_hvp"``;
* a predicted decrease ``<= tiny_pred`` (including a model increase) -> rejected without a trial
  evaluation, radius shrunk, ``fault="nonpositive_pred"``;
* NaN/Inf trial loss -> rho = -inf, rejected, parameters restored bitwise, radius shrunk,
  ``fault="nonfinite_trial_loss"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from etr_core import distributed as etr_dist
from etr_core._validation import check_choice, check_positive
from etr_core.config import TRConfig, default_gamma2
from etr_core.ellipsoids import m_inv_norm, make_ellipsoid
from etr_core.hvp import HessianVectorProduct, flat_grad, grad_with_graph, unflatten_like
from etr_core.subproblem import first_order_tr_step, solve_subproblem
from etr_core.trust_region import classify_step, reduction_ratio, update_radius

__all__ = ["EllipsoidalTR", "FirstOrderTR", "StepRecord"]

Closure = Callable[[], Tensor]

COUNTER_KEYS = ("forward", "backward", "hvp", "steps", "accepted")


@dataclass
class StepRecord:
    """What one ``step`` did (Algorithm 1, one iteration).

    ``pred_reduction`` is m(0) - m(s), ``actual_reduction`` is loss - trial_loss (both on the batch),
    ``rho`` their ratio in float64 (Eq. 10). ``quality`` is "very_successful" | "successful" |
    "unsuccessful", "none" when no step was proposed (zero or non-finite gradient or loss), or
    "forced" for ``FirstOrderTR(radius_rule="eta")``, which accepts every step untested.
    """

    step: int
    loss: float
    trial_loss: float
    rho: float
    radius_before: float
    radius_after: float
    accepted: bool
    quality: str
    exit: str
    cg_iterations: int
    hvp_calls: int
    pred_reduction: float
    actual_reduction: float
    step_m_norm: float
    step_l2_norm: float
    grad_norm: float
    ellipsoid_updated: bool
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NAN = float("nan")


class _Prepared(NamedTuple):
    """What a step needs after the gradient: float64 loss, flat gradient, Hessian-vector product of the
    batch (``None`` when not formed), gradient norm, whether the ellipsoid was updated, its diagonal."""

    loss: float
    g: Tensor
    hvp: HessianVectorProduct | None
    grad_norm: float
    updated: bool
    m: Tensor


class _TrustRegionBase(torch.optim.Optimizer):
    """Shared loop of Algorithm 1; subclasses supply the step proposal."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        config: TRConfig,
        ellipsoid: Any,
        distributed: bool,
    ) -> None:
        super().__init__(params, {})
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} supports one parameter group, got {len(self.param_groups)}"
            )
        self._params: list[Tensor] = list(self.param_groups[0]["params"])
        if not self._params:
            raise ValueError("params is empty: pass the tensors to optimise")
        for i, p in enumerate(self._params):
            if not p.requires_grad:
                raise ValueError(
                    f"params[{i}] (shape {tuple(p.shape)}) does not require grad; pass only trainable "
                    "parameters, e.g. [p for p in model.parameters() if p.requires_grad]"
                )
            if not p.is_floating_point():
                raise TypeError(f"params[{i}] must be floating point, got dtype {p.dtype}")
        first = self._params[0]
        for i, p in enumerate(self._params):
            if p.dtype != first.dtype or p.device != first.device:
                raise TypeError(
                    "all params must share one dtype and device; "
                    f"params[0] is {first.dtype} on {first.device}, params[{i}] is {p.dtype} on {p.device}"
                )
        if not isinstance(distributed, bool):
            raise TypeError(f"distributed must be a bool, got {distributed!r}")
        if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group "
                "(call etr_core.distributed.setup() first)"
            )
        self.config = config
        self.distributed = distributed
        self.ellipsoid = make_ellipsoid(ellipsoid, **_ellipsoid_options(ellipsoid, config))
        self.radius = float(config.radius)
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_KEYS, 0)
        self.last_step: StepRecord | None = None
        self._last_accepted = True
        self.param_groups[0].update(config.to_dict())
        numel = sum(p.numel() for p in self._params)
        with torch.no_grad():
            self._saved = torch.empty(numel, dtype=first.dtype, device=first.device)
            self._saved_views = unflatten_like(self._saved, self._params)

    # -- internals -----------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of optimised scalars d."""
        return self._saved.numel()

    def _evaluate(self, closure: Closure, *, grad_enabled: bool) -> Tensor:
        with torch.set_grad_enabled(grad_enabled):
            loss = closure()
        self.counters["forward"] += 1
        if not isinstance(loss, Tensor):
            raise TypeError(f"closure must return the loss as a tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(f"closure must return a scalar loss, got shape {tuple(loss.shape)}")
        return loss

    def _check_no_backward(self) -> None:
        if any(p.grad is not None for p in self._params):
            raise RuntimeError(
                "the closure called backward(): return the loss without calling backward; "
                f"{type(self).__name__} forms the gradient (and the graph for Hessian products) itself"
            )

    def _mean_float(self, loss: Tensor) -> float:
        """float64 value of the loss, averaged over ranks in distributed mode."""
        value = loss.detach().reshape(1).to(torch.float64)
        if self.distributed:
            value = etr_dist.all_reduce_mean(value.clone())
        return float(value)

    @torch.no_grad()
    def _save_params(self) -> None:
        torch._foreach_copy_(self._saved_views, self._params)

    @torch.no_grad()
    def _restore_params(self) -> None:
        torch._foreach_copy_(self._params, self._saved_views)

    @torch.no_grad()
    def _add_step(self, s: Tensor) -> None:
        torch._foreach_add_(self._params, unflatten_like(s, self._params))

    def _loss_and_grad(
        self, closure: Closure, create_graph: bool
    ) -> tuple[Tensor, float, Tensor | None, HessianVectorProduct | None]:
        """Loss (tensor and rank-averaged float64), the rank-averaged flat gradient (``None`` when the
        loss is not finite) and, with ``create_graph``, the Hessian-vector product of the local batch."""
        for p in self._params:
            p.grad = None
        loss = self._evaluate(closure, grad_enabled=True)
        self._check_no_backward()
        f = self._mean_float(loss)
        if not math.isfinite(f):
            return loss, f, None, None
        if create_graph:
            g, hvp = grad_with_graph(loss, self._params)
        else:
            g, hvp = flat_grad(loss, self._params), None
        self.counters["backward"] += 1
        if self.distributed:
            g = etr_dist.all_reduce_mean(g)  # g is a fresh tensor: reduce in place
        return loss, f, g, hvp

    def _no_move(
        self, loss: float, grad_norm: float, exit_: str, fault: str | None, updated: bool
    ) -> StepRecord:
        record = StepRecord(
            step=self.counters["steps"],
            loss=loss,
            trial_loss=_NAN,
            rho=_NAN,
            radius_before=self.radius,
            radius_after=self.radius,
            accepted=False,
            quality="none",
            exit=exit_,
            cg_iterations=0,
            hvp_calls=0,
            pred_reduction=0.0,
            actual_reduction=_NAN,
            step_m_norm=0.0,
            step_l2_norm=0.0,
            grad_norm=grad_norm,
            ellipsoid_updated=updated,
            fault=fault,
        )
        if fault is not None:
            warnings.warn(
                f"{type(self).__name__} step {record.step}: {fault}; parameters not moved",
                RuntimeWarning,
                stacklevel=3,
            )
        return record

    def _begin_step(
        self, closure: Closure, *, create_graph: bool
    ) -> tuple[Tensor, _Prepared | None]:
        """The part of every step before the model: loss and gradient, the no-move outcomes (non-finite
        loss or gradient, zero gradient; each recorded here), the ellipsoid update and its diagonal.
        Returns the detached loss to hand back and, when the step goes on, what it needs."""
        if closure is None or not callable(closure):
            raise TypeError(f"{type(self).__name__}.step needs a closure that returns the batch loss")
        loss_t, loss, g, hvp = self._loss_and_grad(closure, create_graph=create_graph)
        loss_t = loss_t.detach()  # the forward graph lives on only inside the Hessian products
        if g is None:
            self._finish(self._no_move(loss, _NAN, "nonfinite", "nonfinite_loss", False))
            return loss_t, None
        grad_norm = float(torch.linalg.vector_norm(g))
        if not math.isfinite(grad_norm):
            self._finish(self._no_move(loss, grad_norm, "nonfinite", "nonfinite_gradient", False))
            return loss_t, None
        updated = self._update_ellipsoid(g)
        if grad_norm == 0.0:
            self._finish(self._no_move(loss, 0.0, "zero_gradient", None, updated))
            return loss_t, None
        return loss_t, _Prepared(loss, g, hvp, grad_norm, updated, self.ellipsoid.diag(like=g))

    def _update_ellipsoid(self, g: Tensor) -> bool:
        if self.config.ellipsoid_update == "every_iteration" or self._last_accepted:
            self.ellipsoid.update(g)
            return True
        return False

    def _finish(self, record: StepRecord) -> None:
        self.counters["steps"] += 1
        self.counters["hvp"] += record.hvp_calls
        if record.accepted:
            self.counters["accepted"] += 1
        if record.quality != "none":
            self._last_accepted = record.accepted
        self.last_step = record

    def _settle(
        self,
        *,
        loss: float,
        grad_norm: float,
        updated: bool,
        result: Any,
        pred: float,
        step_l2: float,
        outcome: tuple[float, float, str, bool, str | None],
        adapt_radius: bool = True,
        stacklevel: int = 3,
    ) -> StepRecord:
        """Radius update (Algorithm 1, line 7), the warning for a faulty step, and the step's record.
        ``outcome`` is (trial_loss, rho, quality, accepted, fault) as :meth:`_judge` returns it."""
        trial_f, rho, quality, accepted, fault = outcome
        radius_before = self.radius
        if adapt_radius:
            self.radius = update_radius(
                self.radius,
                quality,
                self.config.gamma1,
                self.config.gamma2_value,
                self.config.max_radius,
                hit_boundary=result.hit_boundary,
                grow_only_on_boundary=self.config.grow_only_on_boundary,
            )
        if fault is not None:
            warnings.warn(
                f"{type(self).__name__} step {self.counters['steps']}: {fault}; step rejected",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
        return StepRecord(
            step=self.counters["steps"],
            loss=loss,
            trial_loss=trial_f,
            rho=rho,
            radius_before=radius_before,
            radius_after=self.radius,
            accepted=accepted,
            quality=quality,
            exit=result.exit,
            cg_iterations=int(result.iterations),
            hvp_calls=int(result.hvp_calls),
            pred_reduction=pred,
            actual_reduction=loss - trial_f,
            step_m_norm=float(result.step_m_norm),
            step_l2_norm=step_l2,
            grad_norm=grad_norm,
            ellipsoid_updated=updated,
            fault=fault,
        )

    def _judge(
        self, closure: Closure, loss: float, s: Tensor, pred: float, *, forced: bool = False
    ) -> tuple[float, float, str, bool, str | None]:
        """Apply ``s``, evaluate the trial loss, accept or restore bitwise. Returns
        (trial_loss, rho, quality, accepted, fault)."""
        self._save_params()
        self._add_step(s)
        if forced:
            return _NAN, _NAN, "forced", True, None
        trial = self._evaluate(closure, grad_enabled=False)
        trial_f = self._mean_float(trial)
        rho = reduction_ratio(loss, trial_f, pred, self.config.tiny_pred)
        quality = classify_step(rho, self.config.eta1, self.config.eta2)
        accepted = quality != "unsuccessful"
        fault = None if math.isfinite(trial_f) else "nonfinite_trial_loss"
        if not accepted:
            self._restore_params()
        return trial_f, rho, quality, accepted, fault

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs: radius, ellipsoid state, counters, step count."""
        return {
            "kind": type(self).__name__,
            "config": self.config.to_dict(),
            "radius": self.radius,
            "ellipsoid": self.ellipsoid.state_dict(),
            "counters": dict(self.counters),
            "last_accepted": self._last_accepted,
            "last_step": None if self.last_step is None else self.last_step.to_dict(),
            **self._extra_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the configuration included)."""
        if not isinstance(state_dict, dict) or state_dict.get("kind") != type(self).__name__:
            got = state_dict.get("kind") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"state_dict is for {got!r}, expected {type(self).__name__!r}")
        self.config = TRConfig.from_dict(state_dict["config"])
        self.param_groups[0].update(self.config.to_dict())
        self.radius = float(state_dict["radius"])
        ell = dict(state_dict["ellipsoid"])
        if isinstance(ell.get("v"), Tensor):
            ell["v"] = ell["v"].to(device=self._saved.device, dtype=self._saved.dtype)
        self.ellipsoid.load_state_dict(ell)
        self.counters = {k: int(state_dict["counters"][k]) for k in COUNTER_KEYS}
        self._last_accepted = bool(state_dict["last_accepted"])
        last = state_dict.get("last_step")
        self.last_step = None if last is None else StepRecord(**last)
        self._load_extra(state_dict)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state_dict: dict[str, Any]) -> None:
        pass


def _ellipsoid_options(ellipsoid: Any, config: TRConfig) -> dict[str, Any]:
    if not isinstance(ellipsoid, str):
        return {}
    name = ellipsoid.lower()
    if name in ("uniform", "uni", "sphere"):
        return {}
    options: dict[str, Any] = {"eps": config.eps, "eps_mode": config.eps_mode}
    if name in ("rms", "rmsprop"):
        options["beta"] = config.beta
    return options


_CONFIG_FIELDS = {
    "radius",
    "max_radius",
    "eta1",
    "eta2",
    "gamma1",
    "gamma2",
    "krylov_tol",
    "theta",
    "max_krylov",
    "solver",
    "stop_rule",
    "residual_norm",
    "root",
    "grow_only_on_boundary",
    "ellipsoid_update",
    "beta",
    "eps",
    "eps_mode",
    "tiny_pred",
}


def _build_config(preset: TRConfig | None, ellipsoid: Any, overrides: dict[str, Any]) -> tuple[TRConfig, Any]:
    if preset is not None and not isinstance(preset, TRConfig):
        raise TypeError(
            f"preset must be a TRConfig (e.g. etr_core.config.paper_table1('rms')), got {preset!r}"
        )
    base = preset if preset is not None else TRConfig(ellipsoid="rms")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    if ellipsoid is None:
        ellipsoid = base.ellipsoid
    if isinstance(ellipsoid, str):
        check_choice(
            "ellipsoid", ellipsoid.lower(), ("uniform", "uni", "sphere", "adagrad", "ada", "rms", "rmsprop")
        )
        canonical = {"uni": "uniform", "sphere": "uniform", "ada": "adagrad", "rmsprop": "rms"}
        changes["ellipsoid"] = canonical.get(ellipsoid.lower(), ellipsoid.lower())
    else:
        changes["ellipsoid"] = getattr(ellipsoid, "name", base.ellipsoid)
    if (
        changes["ellipsoid"] != base.ellipsoid
        and "gamma2" not in changes
        and base.gamma2 is not None
        and base.gamma2 == default_gamma2(base.ellipsoid)
    ):
        changes["gamma2"] = None  # Table 1's shrink factor follows the ellipsoid
    return base.replace(**changes), ellipsoid


class EllipsoidalTR(_TrustRegionBase):
    """Stochastic ellipsoidal trust-region method (paper Algorithm 1) as a ``torch.optim.Optimizer``.

    ``ellipsoid``: "rms" (default), "adagrad", "uniform" or an ellipsoid object. Every option left
    at ``None`` takes its value from ``preset`` (a :class:`etr_core.config.TRConfig`, e.g.
    ``paper_table1("rms")`` or ``authors("mnist", "fc", "rms")``) or, without one, from paper
    Table 1: radius 1e-4, max_radius 10, eta1 1e-4, eta2 0.95, gamma1 1.1, gamma2 1.5 (1.75 for
    "rms"), krylov_tol 0.1, theta 0.5, max_krylov 50, solver "cg" (Steihaug-Toint PCG in the
    M-norm) or "lanczos" (GLTR). ``distributed=True`` averages gradient, Hessian products and
    losses over the ranks of the initialised process group (see :mod:`etr_core.distributed`).

    ``step(closure, hessian_closure=None)`` returns the loss at ``w`` (before the step).
    ``hessian_closure``, when given, returns the loss on a separate (usually smaller) Hessian batch
    S_B; the Hessian products then go through its graph (Algorithm 1, line 3 samples L, g and B
    separately), and the gradient of the main batch is formed without a retained graph.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        ellipsoid: Any = None,
        radius: float | None = None,
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
        preset: TRConfig | None = None,
        distributed: bool = False,
    ) -> None:
        overrides = dict(
            radius=radius,
            max_radius=max_radius,
            eta1=eta1,
            eta2=eta2,
            gamma1=gamma1,
            gamma2=gamma2,
            krylov_tol=krylov_tol,
            theta=theta,
            max_krylov=max_krylov,
            solver=solver,
            stop_rule=stop_rule,
            residual_norm=residual_norm,
            root=root,
            grow_only_on_boundary=grow_only_on_boundary,
            ellipsoid_update=ellipsoid_update,
            beta=beta,
            eps=eps,
            eps_mode=eps_mode,
            tiny_pred=tiny_pred,
        )
        config, ellipsoid = _build_config(preset, ellipsoid, overrides)
        super().__init__(params, config, ellipsoid, distributed)

    def _reduced(self, base: HessianVectorProduct) -> Callable[[Tensor], Tensor]:
        if not self.distributed:
            return base

        def reduced(v: Tensor) -> Tensor:
            return etr_dist.all_reduce_mean(base(v))

        return reduced

    def _solve(self, g: Tensor, hvp: Callable[[Tensor], Tensor], m: Tensor):
        c = self.config
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

    def step(self, closure: Closure, hessian_closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One iteration of Algorithm 1 on the closure's batch; returns the loss at ``w``."""
        if hessian_closure is not None and not callable(hessian_closure):
            raise TypeError(f"hessian_closure must be callable or None, got {type(hessian_closure).__name__}")
        loss_t, prep = self._begin_step(closure, create_graph=hessian_closure is None)
        if prep is None:
            return loss_t
        loss, g, local_hvp, grad_norm, updated, m = prep
        del prep  # the only other reference to the retained graph (freed below)
        if hessian_closure is not None:
            h_loss = self._evaluate(hessian_closure, grad_enabled=True)
            self._check_no_backward()
            _, local_hvp = grad_with_graph(h_loss, self._params)
            self.counters["backward"] += 1
        result = self._solve(g, self._reduced(local_hvp), m)
        del local_hvp  # frees the retained graph before the trial evaluation
        record = self._conclude(closure, loss, grad_norm, updated, result)
        self._finish(record)
        return loss_t

    def _conclude(self, closure: Closure, loss: float, grad_norm: float, updated: bool, result) -> StepRecord:
        s = result.step
        step_l2 = float(torch.linalg.vector_norm(s))
        pred = float(result.pred_reduction)
        if result.exit == "nonfinite" or not math.isfinite(step_l2) or not math.isfinite(pred):
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonfinite_hvp")
        elif not pred > self.config.tiny_pred:
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonpositive_pred")
        else:
            outcome = self._judge(closure, loss, s, pred)
        return self._settle(
            loss=loss, grad_norm=grad_norm, updated=updated, result=result, pred=pred, step_l2=step_l2,
            outcome=outcome, stacklevel=3,
        )


class FirstOrderTR(_TrustRegionBase):
    """First-order trust-region method (paper appendix B, Fig. 5): Algorithm 1 with the linear model
    ``m(s) = L + g^T s``, whose minimiser on the ellipsoid is ``s = -radius M^-1 g / ||g||_{M^-1}``
    (Theorem 1) with predicted decrease ``radius ||g||_{M^-1}``. No Hessian products.

    ``radius_rule="tr"`` (default) adapts the radius by rho as in Algorithm 1. ``radius_rule="eta"``
    sets ``radius_t = lr ||g_t||_{M_t^-1}`` and accepts every step without a trial evaluation: by
    Theorem 1 the iterates are then those of preconditioned gradient descent ``w - lr M^-1 g``
    (SGD, Adagrad or RMSProp with the square-root ellipsoid).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        ellipsoid: Any = None,
        radius: float | None = None,
        max_radius: float | None = None,
        eta1: float | None = None,
        eta2: float | None = None,
        gamma1: float | None = None,
        gamma2: float | None = None,
        grow_only_on_boundary: bool | None = None,
        ellipsoid_update: str | None = None,
        beta: float | None = None,
        eps: float | None = None,
        eps_mode: str | None = None,
        tiny_pred: float | None = None,
        radius_rule: str = "tr",
        lr: float | None = None,
        preset: TRConfig | None = None,
        distributed: bool = False,
    ) -> None:
        overrides = dict(
            radius=radius,
            max_radius=max_radius,
            eta1=eta1,
            eta2=eta2,
            gamma1=gamma1,
            gamma2=gamma2,
            grow_only_on_boundary=grow_only_on_boundary,
            ellipsoid_update=ellipsoid_update,
            beta=beta,
            eps=eps,
            eps_mode=eps_mode,
            tiny_pred=tiny_pred,
        )
        config, ellipsoid = _build_config(preset, ellipsoid, overrides)
        self.radius_rule = check_choice("radius_rule", radius_rule, ("tr", "eta"))
        if radius_rule == "eta":
            if lr is None:
                raise ValueError("radius_rule='eta' needs lr > 0 (the step size eta of Theorem 1)")
            self.lr: float | None = check_positive("lr", lr)
        else:
            if lr is not None:
                raise ValueError(
                    f"lr is only used with radius_rule='eta', got lr={lr!r} with radius_rule='tr'"
                )
            self.lr = None
        super().__init__(params, config, ellipsoid, distributed)

    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """One first-order TR iteration on the closure's batch; returns the loss at ``w``."""
        loss_t, prep = self._begin_step(closure, create_graph=False)
        if prep is None:
            return loss_t
        loss, g, _, grad_norm, updated, m = prep
        forced = self.radius_rule == "eta"
        if forced:
            self.radius = self.lr * float(m_inv_norm(g, m))
        result = first_order_tr_step(g, m, self.radius)
        pred = float(result.pred_reduction)
        outcome = self._judge(closure, loss, result.step, pred, forced=forced)
        self._finish(
            self._settle(
                loss=loss, grad_norm=grad_norm, updated=updated, result=result, pred=pred,
                step_l2=float(torch.linalg.vector_norm(result.step)), outcome=outcome,
                adapt_radius=not forced, stacklevel=2,
            )
        )
        return loss_t

    def _extra_state(self) -> dict[str, Any]:
        return {"radius_rule": self.radius_rule, "lr": self.lr}

    def _load_extra(self, state_dict: dict[str, Any]) -> None:
        self.radius_rule = state_dict.get("radius_rule", self.radius_rule)
        self.lr = state_dict.get("lr", self.lr)
