"""Persistence of the trust-region optimisers: ``state_dict`` / ``load_state_dict``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from etr_core.config import TRConfig
from etr_core.optim.records import COUNTER_KEYS, StepRecord


class _TRState(torch.optim.Optimizer):
    """State handling shared by the trust-region optimisers."""

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
