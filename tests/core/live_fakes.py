"""Stand-ins for ``etr_core.training.train`` used by the live-run tests.

They live in an importable module (not in a test file) so that a worker process can unpickle them.
Each honours the training loop's contract: ``train(config, *, callbacks, stop_event, data=None)``
calls ``on_step`` / ``on_eval`` with records and returns an object with ``stop_reason`` and
``summary``.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import torch


@dataclass
class FakeConfig:
    """What a live run reads from a config, plus knobs for the fake loop."""

    method: str
    max_steps: int | None = 10
    max_epochs: float | None = None
    max_seconds: float | None = None
    device: str = "cpu"
    dtype: str = "float32"
    cost: int = 1  # backprops per step
    eval_every: int = 2
    fail_at: int | None = None
    fail_with: str | None = None  # at fail_at, raise ValueError(fail_with) (a user error) instead
    sleep: float = 0.0
    gate: threading.Event | None = None  # the first step waits for it
    losses: tuple[float, ...] | None = None  # mini-batch loss of step i (last one repeated)
    reject_from: int | None = None  # TR steps from this one on are rejected and shrink the radius
    warn: bool = False  # a RuntimeWarning per step, as a faulty optimiser step raises
    exit_at: int | None = None  # the process dies (os._exit) at this step
    ignore_stop: bool = False  # keeps sleeping after a stop request


class FakeTrain:
    """Deterministic steps: backprops grow by ``cost``, loss is ``1/step`` unless ``losses`` is given."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.threads: dict[str, int] = {}
        self.data_ids: dict[str, int | None] = {}

    def __call__(self, config, *, callbacks=(), stop_event=None, data=None):
        self.threads[config.method] = torch.get_num_threads()
        self.data_ids[config.method] = None if data is None else id(data)
        step, backprops, radius = 0, 0, 1e-3
        summary = {"threads": torch.get_num_threads(), "pid": os.getpid()}
        for cb in callbacks:
            cb.on_eval(self._eval(config, step, backprops, self._loss(config, 0)))
        while config.max_steps is None or step < config.max_steps:
            if stop_event is not None and stop_event.is_set() and not config.ignore_stop:
                return SimpleNamespace(stop_reason="stopped", summary=summary)
            if config.gate is not None and step == 0:
                config.gate.wait(30)
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            time.sleep(config.sleep)
            with self.lock:
                self.active -= 1
            step += 1
            backprops += config.cost
            if config.fail_at is not None and step == config.fail_at:
                if config.fail_with is not None:
                    raise ValueError(config.fail_with)
                raise RuntimeError(f"boom in {config.method}")
            if config.exit_at is not None and step == config.exit_at:
                os._exit(3)
            if config.warn:
                warnings.warn(f"EllipsoidalTR step {step}: model decrease not positive; step rejected",
                              RuntimeWarning, stacklevel=1)
            rejected = config.reject_from is not None and step >= config.reject_from
            radius = radius / 1.5 if rejected else radius * 1.1
            record = {
                "event": "step", "step": step, "method": config.method, "forward": step, "backward": step,
                "hvp": backprops - step, "backprops": backprops, "epoch": step / 10, "seconds": step * 0.01,
                "loss": self._loss(config, step), "rho": 0.5 if step % 3 else -math.inf, "radius": radius,
                "accepted": (not rejected) if config.reject_from is not None else step % 3 != 0,
                "cg_iterations": config.cost - 1, "exit": "boundary", "phase": "tr",
            }
            for cb in callbacks:
                cb.on_step(record)
            if step % config.eval_every == 0:
                for cb in callbacks:
                    cb.on_eval(self._eval(config, step, backprops, self._loss(config, step)))
        return SimpleNamespace(stop_reason="max_steps", summary=summary)

    @staticmethod
    def _loss(config, step: int) -> float:
        if config.losses is not None:
            return config.losses[min(step, len(config.losses) - 1)]
        return 1.0 / (1 + step)

    @staticmethod
    def _eval(config, step, backprops, loss):
        return {"event": "eval", "step": step, "method": config.method, "backprops": backprops,
                "epoch": step / 10, "seconds": step * 0.01, "train_loss": loss,
                "train_acc": min(1.0, 0.1 * step), "test_loss": 1.2 * loss, "test_acc": min(1.0, 0.09 * step)}


def fake_train(config, *, callbacks=(), stop_event=None, data=None):
    """A picklable module-level train function (a fresh :class:`FakeTrain` per call)."""
    return FakeTrain()(config, callbacks=callbacks, stop_event=stop_event, data=data)

