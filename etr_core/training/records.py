"""What a run hands out: :class:`RunResult`, the records sent to callbacks, and the clock that
times the training work only (section 5: seconds exclude evaluation, logging and checkpoints)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from etr_core import devices
from etr_core.training.run_config import TrainConfig


@dataclass
class RunResult:
    """What :func:`train` returns: the per-step and per-evaluation records, the summary and the model."""

    config: TrainConfig
    steps: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module
    run_dir: Path | None = None

    @property
    def stop_reason(self) -> str:
        return str(self.summary["stop_reason"])

    @property
    def losses(self) -> list[float]:
        """Mini-batch loss of every step, in order."""
        return [r["loss"] for r in self.steps]


# -- callbacks ------------------------------------------------------------------------------------------


def _dispatch(callbacks: Sequence[Any], event: str, record: dict[str, Any]) -> None:
    """Objects get ``on_<event>(record)`` where they define it; plain callables get every record
    (with ``record["event"]`` telling which)."""
    for cb in callbacks:
        method = getattr(cb, f"on_{event}", None)
        if method is not None:
            method(record)
        elif callable(cb) and not any(hasattr(cb, f"on_{e}") for e in ("step", "eval", "end")):
            cb(record)


class _Clock:
    """Wall-clock seconds of training work only: ``start``/``stop`` around each step, CUDA synchronised."""

    def __init__(self, device: torch.device, elapsed: float = 0.0) -> None:
        self.device = device
        self.elapsed = elapsed
        self._t0: float | None = None

    def start(self) -> None:
        devices.synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        devices.synchronize(self.device)
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None

