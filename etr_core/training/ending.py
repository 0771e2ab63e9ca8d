"""The end of a training run: the stopping limits checked before every step, the clean-up after the
loop (recovery of non-finite parameters, final evaluation, last checkpoint, callbacks) and the
summary. :class:`_Ending` is a part of :class:`etr_core.training.trainer._Trainer`.
"""

from __future__ import annotations

from typing import Any

from etr_core.models import count_parameters
from etr_core.training.records import RunResult, _dispatch


class _Ending:
    """Stopping limits, the end of the run and its summary record."""

    def _limit_reached(self) -> str | None:
        """The reason to stop before the next step ("stopped", "max_steps", "max_epochs",
        "max_seconds", "max_backprops"), or None to go on."""
        c = self.config
        if self.stop_event is not None and self.stop_event.is_set():
            return "stopped"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_epochs is not None and self.sampler.epochs >= c.max_epochs:
            return "max_epochs"
        if c.max_seconds is not None and self.clock.elapsed >= c.max_seconds:
            return "max_seconds"
        used = self.counters["backward"] + self.counters["hvp"]
        if c.max_backprops is not None and used >= c.max_backprops:
            return "max_backprops"
        return None

    def _finish(self) -> RunResult:
        """After the loop: recover non-finite parameters, evaluate at the last step if not done yet,
        write the last checkpoint and the summary, call the "end" callbacks; returns the result."""
        if self.stop_reason != "nonfinite_loss" and self._snapshot_step is not None:
            self._recover()  # the last first-order update is not followed by a loss check
            if self._restored_to is not None:
                self.stop_reason = "nonfinite_loss"
                self.stop_detail = (
                    f"non-finite parameters after the update of step {self.step}; the parameters keep "
                    f"their last finite values (those step {self._restored_to + 1} started from)"
                )
        if not self.evals or self.evals[-1]["step"] != self.step:
            self._eval()
        summary = self._summary()
        if self.writer is not None:
            self._checkpoint()
            self.writer.write_summary(summary)
            self.writer.close()
        if self.is_main:
            _dispatch(self.callbacks, "end", {"event": "end", **summary})
        return RunResult(self.config, self.steps, self.evals, summary, self.model, self.run_dir)

    def _summary(self) -> dict[str, Any]:
        """The summary record: progress counters, method, stop reason, last evaluation, cost per epoch."""
        last = self.evals[-1]
        epochs = self.sampler.epochs
        summary = {
            **self._progress(),
            "method": self.config.method,
            "label": self.config.method if self.lr is None else f"{self.config.method} (lr={self.lr:g})",
            "preset": self.config.preset,
            "lr": self.lr,
            "batch_size": self.main_batch,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "accepted": self.counters["accepted"],
            "train_loss": last["train_loss"],
            "train_acc": last["train_acc"],
            "test_loss": last["test_loss"],
            "test_acc": last["test_acc"],
            "seconds_per_epoch": self.clock.elapsed / epochs if epochs > 0 else None,
            "parameters": count_parameters(self.model),
            "resumed_from_step": self.resumed_from,
            "pivot_evaluations": self.pivot_state["evals"],
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }
        return summary
