"""One training step of each kind: a first-order step (loss, gradient, update, with the fault
fallback) and a trust-region step (Algorithm 1 through the optimiser's closure), on one mini-batch.

How each step is counted (forward passes, gradient backprops, Hessian-vector products) is
described in :mod:`etr_core.training`. :class:`_StepFunctions` is a part of
:class:`etr_core.training.trainer._Trainer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

# First-order steps: parameters are copied aside every this many steps (the fault fallback, see
# _Trainer._first_order_step); the copy costs one parameter pass, a 1/SNAPSHOT_EVERY share of a step.
SNAPSHOT_EVERY = 16


def _first_order(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr)
    if name == "Adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown first-order optimiser {name!r}")


class _StepFunctions:
    """The mini-batch, the first-order step with its parameter snapshots, and the TR step."""

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next_batch()
        if self.distributed:
            from etr_core import distributed as etr_dist

            usable = idx.numel() - idx.numel() % self.world
            if usable == 0:
                raise ValueError(f"batch of {idx.numel()} examples cannot be split over {self.world} ranks")
            idx = etr_dist.shard(idx[:usable], self.rank, self.world)
        idx = idx.to(self.device)
        return self.train_x[idx], self.train_y[idx]

    def _first_order_step(self, optimizer: torch.optim.Optimizer, xb, yb) -> tuple[float, bool]:
        """Loss, gradient and update, as lean as a bare loop; returns (loss, finite).

        The safety work is one host read of the loss (which the step record needs anyway) and a
        parameter snapshot every ``SNAPSHOT_EVERY`` steps. A non-finite loss stops the run before its
        backward, so that step changes nothing; gradients and updates are not checked per step: an
        update that overflows (or a finite loss with a non-finite gradient) shows in the next step's
        loss, and :meth:`_recover` then puts the last snapshot back if the parameters are non-finite.
        """
        optimizer.zero_grad(set_to_none=True)
        loss = self._data_loss(self.model(xb), yb)
        if self.l2_alpha != 0.0:
            loss = loss + self._penalty()
        self.counters["forward"] += 1
        value = loss.detach()
        if self.distributed:
            from etr_core import distributed as etr_dist

            value = etr_dist.all_reduce_mean(value.double())
        value = float(value)
        if not math.isfinite(value):
            self._recover()
            return value, False
        if self._snapshot_step is None or self.step - self._snapshot_step >= SNAPSHOT_EVERY:
            self._snapshot()
        loss.backward()
        self.counters["backward"] += 1
        if self.distributed:
            from etr_core import distributed as etr_dist

            for p in self.params:
                if p.grad is not None:
                    etr_dist.all_reduce_mean(p.grad)
        optimizer.step()
        return value, True

    @torch.no_grad()
    def _snapshot(self) -> None:
        """Copy the parameters (whose loss at this step was finite) aside, in one fused call."""
        if self._backup is None:
            self._backup = [torch.empty_like(p) for p in self.params]
        torch._foreach_copy_(self._backup, self.params)
        self._snapshot_step = self.step

    @torch.no_grad()
    def _recover(self) -> None:
        """After a fault: keep finite parameters; restore the last snapshot over non-finite ones."""
        if self._backup is None or all(bool(torch.isfinite(p).all()) for p in self.params):
            return
        torch._foreach_copy_(self.params, self._backup)
        self._restored_to = self._snapshot_step

    def _tr_step(self, xb, yb) -> tuple[float, dict[str, Any]]:
        before = dict(self.optimizer.counters)

        def closure(batch_fraction: float = 1.0) -> torch.Tensor:
            if batch_fraction < 1.0:  # the Hessian sub-batch of hessian_fraction (etr_core.hessian_batch)
                k = max(1, math.ceil(batch_fraction * xb.shape[0]))
                return self._data_loss(self.model(xb[:k]), yb[:k]) + self._penalty()
            return self._data_loss(self.model(xb), yb) + self._penalty()

        self.optimizer.step(closure)
        rec = self.optimizer.last_step
        for key in ("forward", "backward", "hvp", "accepted"):
            self.counters[key] += self.optimizer.counters[key] - before[key]
        extra = {
            "rho": rec.rho,
            "radius": rec.radius_after,
            "radius_before": rec.radius_before,
            "accepted": rec.accepted,
            "quality": rec.quality,
            "cg_iterations": rec.cg_iterations,
            "hvp_calls": rec.hvp_calls,
            "other_hvp_calls": rec.other_hvp_calls,
            "exit": rec.exit,
            "trial_loss": rec.trial_loss,
            "pred_reduction": rec.pred_reduction,
            "actual_reduction": rec.actual_reduction,
            "step_m_norm": rec.step_m_norm,
            "step_l2_norm": rec.step_l2_norm,
            "grad_norm": rec.grad_norm,
            "fault": rec.fault,
        }
        return float(rec.loss), extra
