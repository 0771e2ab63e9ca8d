"""The step path shared by the trust-region optimisers (paper Algorithm 1)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from etr_core import distributed as etr_dist
from etr_core.hvp import HessianVectorProduct, apply_grad_hooks, flat_grad, grad_with_graph, unflatten_like
from etr_core.optim.records import _NAN, Closure, StepRecord, _Prepared
from etr_core.optim.state import _TRState
from etr_core.step_support import cap_radius, count_fault
from etr_core.subproblem.scaling import safe_norm
from etr_core.trust_region import classify_step, reduction_ratio, update_radius


class _TrustRegionBase(_TRState):
    """Shared loop of Algorithm 1; subclasses supply the step proposal."""

    def _evaluate(self, closure: Closure, *, grad_enabled: bool) -> Tensor:
        guard = self.__dict__.get("_guard")  # one random state, one buffer update per step (step_guard)
        if guard is not None:
            guard.before_call(trial=not grad_enabled)
        with torch.set_grad_enabled(grad_enabled):
            loss = closure()
        if guard is not None:
            guard.after_call(trial=not grad_enabled)
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
        params = self._params
        saved = self.__dict__.get("_saved")
        if saved is None or saved.numel() != sum(p.numel() for p in params) or saved.dtype != params[0].dtype:
            # scratch space for the bitwise restore, not state: (re)allocated after unpickling or a new group
            self._saved = torch.empty(self.dim, dtype=params[0].dtype, device=params[0].device)
        self._saved_views = unflatten_like(self._saved, params)
        torch._foreach_copy_(self._saved_views, params)

    @torch.no_grad()
    def _restore_params(self) -> None:
        torch._foreach_copy_(self._params, self._saved_views)
        guard = self.__dict__.get("_guard")
        if guard is not None:
            guard.rejected()  # the rejected trial's buffer updates leave no trace

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
        # frozen parameters (requires_grad=False) count as constants: zero gradient, never moved
        if create_graph:
            g, hvp = grad_with_graph(loss, self._params, allow_frozen=True)
        else:
            g, hvp = flat_grad(loss, self._params, allow_frozen=True), None
        self.counters["backward"] += 1
        apply_grad_hooks(self._params, g)  # p.register_hook hooks: once, on g at w (step_support)
        if self.distributed:
            g = etr_dist.all_reduce_mean(g)  # g is a fresh tensor: reduce in place
        self._step_grad = g  # left in p.grad after the step
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
            count_fault(self, fault, f"{fault}; parameters not moved")
        return record

    def _begin_step(
        self, closure: Closure, *, create_graph: bool
    ) -> tuple[Tensor, _Prepared | None]:
        """The part of every step before the model: loss and gradient, the no-move outcomes (non-finite
        loss or gradient, zero gradient; each recorded here), the ellipsoid update and its diagonal.
        Returns the detached loss to hand back and, when the step goes on, what it needs."""
        if closure is None or not callable(closure):
            raise TypeError(f"{type(self).__name__}.step needs a closure that returns the batch loss")
        self._options = options = self._resolve()  # param_groups, read at every step
        self._cfg = options.config
        self._sync_state(options)
        self._hvp_mark = self.counters["hvp"]  # the record accounts for every product of the step
        self._ell = self._bind_ellipsoid(options.config)
        loss_t, loss, g, hvp = self._loss_and_grad(closure, create_graph=create_graph)
        loss_t = loss_t.detach()  # the forward graph lives on only inside the Hessian products
        if g is None:
            self._finish(self._no_move(loss, _NAN, "nonfinite", "nonfinite_loss", False))
            return loss_t, None
        grad_norm = safe_norm(g)  # no overflow for finite entries (float32 norms above 1.8e19)
        if not math.isfinite(grad_norm):
            self._finish(self._no_move(loss, grad_norm, "nonfinite", "nonfinite_gradient", False))
            return loss_t, None
        updated = self._update_ellipsoid(g, hvp)
        if grad_norm == 0.0:
            self._finish(self._no_move(loss, 0.0, "zero_gradient", None, updated))
            return loss_t, None
        cap_radius(self, g.dtype)
        return loss_t, _Prepared(loss, g, hvp, grad_norm, updated, self._ell.diag(like=g))

    def _hessian_batch(
        self, hessian_closure: Closure, g: Tensor, updated: bool, m: Tensor
    ) -> tuple[HessianVectorProduct, bool, Tensor]:
        """Algorithm 1's separate Hessian batch: its graph (one counted backward), and for the
        Hessian-diagonal ellipsoid the probes of that batch. Returns (hvp, updated, m)."""
        h_loss = self._evaluate(hessian_closure, grad_enabled=True)
        self._check_no_backward()
        _, hvp = grad_with_graph(h_loss, self._params, allow_frozen=True)
        self.counters["backward"] += 1
        if hasattr(self._ell, "update_curvature"):  # the Hessian ellipsoid probes the Hessian batch
            updated = self._update_ellipsoid(g, hvp)
            m = self._ell.diag(like=g)
        return hvp, updated, m

    def _update_ellipsoid(self, g: Tensor, hvp: HessianVectorProduct | None = None) -> bool:
        if not (self._cfg.ellipsoid_update == "every_iteration" or self._last_accepted):
            return False
        if not hasattr(self._ell, "update_curvature"):
            self._ell.update(g)
            return True
        # the Hessian-diagonal ellipsoid (beyond the paper): probes of the batch's Hessian, each one
        # counted Hessian-vector product; without a graph yet (hessian_closure) the caller updates later
        if hvp is None:
            return False
        reduced = self._reduced(hvp) if hasattr(self, "_reduced") else hvp
        shapes = [p.shape for p in self._params]
        try:
            self.counters["hvp"] += self._ell.update_curvature(reduced, shapes, g, self.counters["steps"])
        except ValueError:  # a NaN/Inf product: keep the previous diagonal (the fallback handles the step)
            self.counters["hvp"] += self._ell.probes
            return False
        return True

    def _finish(self, record: StepRecord) -> None:
        self.counters["steps"] += 1
        self.counters["hvp"] += record.hvp_calls
        mark = self.__dict__.pop("_hvp_mark", None)
        if mark is not None:  # products outside the solver: estimator probes, the automatic radius
            record.other_hvp_calls = self.counters["hvp"] - mark - record.hvp_calls
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
                self._cfg.gamma1,
                self._cfg.gamma2_value,
                self._options.cap,
                hit_boundary=result.hit_boundary,
                grow_only_on_boundary=self._cfg.grow_only_on_boundary,
            )
        if fault is not None:
            count_fault(self, fault, f"{fault}; step rejected")
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
        rho = reduction_ratio(loss, trial_f, pred, self._cfg.tiny_pred)
        quality = classify_step(rho, self._cfg.eta1, self._cfg.eta2)
        accepted = quality != "unsuccessful"
        fault = None if math.isfinite(trial_f) else "nonfinite_trial_loss"
        if not accepted:
            self._restore_params()
        return trial_f, rho, quality, accepted, fault
