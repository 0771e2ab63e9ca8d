"""Which step runs next: the optimisers of a run, the authors' first-order warm-up and batch-size
pivot (``preset="authors"`` only, labelled in every record), and one step of the loop.

:class:`_Schedule` is a part of :class:`etr_core.training.trainer._Trainer`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from etr_core.training.run_config import resolve_tr_config
from etr_core.training.steps import _first_order


class _Schedule:
    """Builds the run's optimisers and chooses the phase (warm-up, TR, first-order) of each step."""

    def _setup_optimizers(self) -> int:
        """Build the optimiser (and the authors' warm-up optimiser, pivot and L2 term, with
        ``preset="authors"``); returns the main batch size."""
        config = self.config
        self.tr_config = resolve_tr_config(config) if config.is_tr else None
        if config.is_tr:
            from etr_core.optim import EllipsoidalTR

            if config.spec.cubic:
                from etr_core.arc import EllipsoidalARC

                c = self.tr_config
                self.optimizer = EllipsoidalARC(
                    self.params, ellipsoid=c.ellipsoid, beta=c.beta, eps=c.eps, eps_mode=c.eps_mode,
                    krylov_tol=c.krylov_tol, theta=c.theta, max_krylov=c.max_krylov,
                    hessian_probes=c.hessian_probes, hessian_block=c.hessian_block,
                    distributed=self.distributed,
                )
            else:
                self.optimizer = EllipsoidalTR(
                    self.params, preset=self.tr_config, distributed=self.distributed
                )
            batch = self.tr_config.batch_size
            self.lr = None
        else:
            self.lr = config.lr if config.lr is not None else config.spec.default_lr
            self.optimizer = _first_order(config.method, self.params, self.lr)
            batch = config.batch_size or config.spec.default_batch_size
        self.warmup = (
            self.tr_config.warmup if (self.tr_config is not None and config.preset == "authors") else None
        )
        self.pivot = (
            self.tr_config.pivot if (self.tr_config is not None and config.preset == "authors") else None
        )
        self.l2_alpha = (
            self.tr_config.l2_alpha if (self.tr_config is not None and config.preset == "authors") else 0.0
        )
        self.warmup_optimizer = (
            _first_order(self.warmup.optimizer, self.params, self.warmup.lr)
            if self.warmup is not None
            else None
        )
        return batch

    def _phase(self) -> str:
        if not self.config.is_tr:
            return "first_order"
        if self.warmup is not None and self.sampler.samples_seen < self.warmup.epochs * self.data.n_train:
            return "warmup"
        return "tr"

    def _maybe_pivot(self) -> str | None:
        """The authors' pivot: at the first TR step of every ``every_epochs``-th epoch,
        undo the steps since the last pivot if the full training loss did not decrease, and grow the
        batch. The radius and the ellipsoid are not rolled back (as in their code)."""
        epoch = self.sampler.samples_seen // self.data.n_train
        if epoch % self.pivot.every_epochs != 0 or epoch == self.pivot_state["last_epoch"]:
            return None
        self.pivot_state["last_epoch"] = epoch
        self.pivot_state["evals"] += 1
        loss, _ = self._evaluate_split(self.train_x, self.train_y)
        snapshot = self.pivot_state["snapshot"]
        if snapshot is not None and not loss < self.pivot_state["loss"]:
            with torch.no_grad():
                for p, saved in zip(self.params, snapshot):
                    p.copy_(saved)
            # grow up to max_fraction * n, but never shrink (their cap can be below |S| on small sets)
            current = self.sampler.batch_size
            cap = max(current, int(self.pivot.max_fraction * self.data.n_train))
            self.sampler.batch_size = min(int(current * self.pivot.batch_mult), cap, self.data.n_train)
            return "undone"
        self.pivot_state["loss"] = loss
        self.pivot_state["snapshot"] = [p.detach().clone() for p in self.params]
        return "kept"

    def _one_step(self) -> dict[str, Any]:
        phase = self._phase()
        if phase == "tr" and not self.pivot_state["tr_started"]:
            # the TR batch replaces the warm-up batch once; a pivot may grow it afterwards
            self.pivot_state["tr_started"] = True
            self.sampler.batch_size = min(self.main_batch, self.data.n_train)
        pivot = self._maybe_pivot() if (phase == "tr" and self.pivot is not None) else None
        batch_size = self.sampler.batch_size
        xb, yb = self._batch()
        if phase == "tr":
            loss, extra = self._tr_step(xb, yb)
            finite = math.isfinite(loss)
        else:
            optimizer = self.warmup_optimizer if phase == "warmup" else self.optimizer
            loss, finite = self._first_order_step(optimizer, xb, yb)
            lr = self.warmup.lr if phase == "warmup" else self.lr
            extra = {"lr": lr}
            if finite:
                self.counters["accepted"] += 1
        self.counters["steps"] += 1
        self.step += 1
        if not finite:
            self.stop_reason = "nonfinite_loss"
            self.stop_detail = (
                f"non-finite loss, gradient or update at step {self.step} (loss={loss!r}); the parameters "
                "keep their last finite values"
                + ("" if self._restored_to is None else f" (those step {self._restored_to + 1} started from)")
            )
        record = {"loss": loss, "batch_size": batch_size, "phase": phase, **extra}
        if pivot is not None:
            record["pivot"] = pivot
        return record
