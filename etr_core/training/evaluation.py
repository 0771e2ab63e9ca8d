"""The loss of a run (cross-entropy, or pixel-wise binary cross-entropy for autoencoders, plus the
authors' L2 term under ``preset="authors"``) and the full-data evaluation records (section 5).

Evaluation passes are not counted in the training counters. :class:`_Evaluation` is a part of
:class:`etr_core.training.trainer._Trainer`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from etr_core.training.records import _dispatch


class _Evaluation:
    """Losses, full train/test evaluation and the progress counters every record carries."""

    def _data_loss(self, out: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.task == "autoencoder":
            return F.binary_cross_entropy_with_logits(out, target, reduction=reduction)
        return F.cross_entropy(out, target, reduction=reduction)

    def _penalty(self) -> torch.Tensor | float:
        if self.l2_alpha == 0.0:
            return 0.0
        return 0.5 * self.l2_alpha * sum((p * p).sum() for p in self.params)

    @torch.no_grad()
    def _evaluate_split(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        was_training = self.model.training
        self.model.eval()
        total, correct = 0.0, 0
        bs = self.config.eval_batch_size
        for i in range(0, x.shape[0], bs):
            out = self.model(x[i : i + bs])
            target = y[i : i + bs]
            total += float(self._data_loss(out, target, reduction="sum").double())
            if self.task == "classification":
                correct += int((out.argmax(1) == target).sum())
        self.model.train(was_training)
        n = x.shape[0] * (1 if self.task == "classification" else y.shape[1])
        loss = total / n
        return loss, (correct / x.shape[0] if self.task == "classification" else None)

    def _progress(self) -> dict[str, Any]:
        c = self.counters
        return {
            "step": self.step,
            "forward": c["forward"],
            "backward": c["backward"],
            "hvp": c["hvp"],
            "backprops": c["backward"] + c["hvp"],
            "samples": self.sampler.samples_seen,
            "epoch": self.sampler.epochs,
            "seconds": self.clock.elapsed,
        }

    def _eval(self) -> None:
        train_loss, train_acc = self._evaluate_split(self.train_x, self.train_y)
        test_loss, test_acc = self._evaluate_split(self.test_x, self.test_y)
        record = {
            "event": "eval",
            **self._progress(),
            "method": self.config.method,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }
        self.evals.append(record)
        if self.is_main:
            if self.writer is not None:
                self.writer.append_eval(record)
            _dispatch(self.callbacks, "eval", record)
