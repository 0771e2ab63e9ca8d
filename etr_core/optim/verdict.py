"""The end of a trust-region step (paper Algorithm 1, lines 5-7): the trial evaluation, rho (Eq. 10, in
float64), acceptance or a bitwise restore, the radius update, and the step's :class:`StepRecord`.

An outcome is the tuple ``(trial_loss, rho, quality, accepted, fault)``; :meth:`_Verdict._judge`
makes one from a trial evaluation, :meth:`_Verdict._model_outcome` also from the faults that need no
evaluation (a non-finite step or Hessian product, a predicted decrease ``<= tiny_pred``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from etr_core.optim.records import _NAN, Closure, StepRecord
from etr_core.optim.step_io import _StepIO
from etr_core.step_support import count_fault
from etr_core.trust_region import classify_step, reduction_ratio, update_radius

Outcome = tuple[float, float, str, bool, str | None]


class _Verdict(_StepIO):
    """Trial, acceptance, radius update and the record of one step (module docstring)."""

    def _judge(
        self, closure: Closure, loss: float, s: Tensor, pred: float, *, forced: bool = False
    ) -> Outcome:
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

    def _model_outcome(self, closure: Closure, loss: float, result: Any) -> tuple[float, float, Outcome]:
        """Judge the step of a model with curvature (``result`` of a subproblem solve): a non-finite
        step, predicted decrease or Hessian product, or a predicted decrease ``<= tiny_pred``, is
        rejected without a trial evaluation. Returns (step_l2, pred, outcome)."""
        s = result.step
        step_l2 = float(torch.linalg.vector_norm(s))
        pred = float(result.pred_reduction)
        if result.exit == "nonfinite" or not math.isfinite(step_l2) or not math.isfinite(pred):
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonfinite_hvp")
        elif not pred > self._cfg.tiny_pred:
            outcome = (_NAN, -math.inf, "unsuccessful", False, "nonpositive_pred")
        else:
            outcome = self._judge(closure, loss, s, pred)
        return step_l2, pred, outcome

    def _settle(
        self,
        *,
        loss: float,
        grad_norm: float,
        updated: bool,
        result: Any,
        pred: float,
        step_l2: float,
        outcome: Outcome,
        adapt_radius: bool = True,
        stacklevel: int = 3,
    ) -> StepRecord:
        """Radius update (Algorithm 1, line 7), the warning for a faulty step, and the step's record.
        ``outcome`` is (trial_loss, rho, quality, accepted, fault) as :meth:`_judge` returns it;
        ``stacklevel`` is accepted for callers' compatibility (the warning's level is fixed)."""
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

    def _no_move(
        self, loss: float, grad_norm: float, exit_: str, fault: str | None, updated: bool
    ) -> StepRecord:
        """The record of a step that proposes nothing (non-finite loss or gradient, zero gradient);
        a fault is counted and warned once."""
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

    def _finish(self, record: StepRecord) -> None:
        """Book the step: counters (its Hessian products, the acceptance), the last verdict, the record."""
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
