"""When a method can no longer make progress, and what happens to the optimiser's warnings.

:class:`StallRule` decides, from the records the training loop emits, that a method has *converged*
(its loss reached the rounding floor of its floating-point type) or *stalled* (the trust-region
radius fell below a floor, or every one of the last ``reject_patience`` steps was rejected,
Algorithm 1 line 6). The live engine then stops that method so it no longer uses its budget.

:class:`WarningCounter` replaces the per-step ``RuntimeWarning`` lines of a faulty optimiser step
(one per step, thousands per run) with one log line per method and a count.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from etr_core._validation import check_int, check_positive

__all__ = ["LOG", "MethodMonitor", "StallRule", "WarningCounter", "loss_floor_for"]

LOG = logging.getLogger("etr_core.live")

_EPS = {"float32": 2.0**-23, "float64": 2.0**-52}


def loss_floor_for(dtype: str) -> float:
    """The loss below which a method counts as converged: the machine epsilon of ``dtype``
    (``1.19e-7`` for float32). Cross-entropy is computed as ``-log_softmax``; once the probability of
    the right class is within one ulp of 1 the per-example loss rounds to 0, so a mean loss at this
    level carries no signal a further step could follow."""
    return _EPS.get(str(dtype), _EPS["float32"])


@dataclass(frozen=True)
class StallRule:
    """The documented rule for ending a method early (all thresholds inclusive).

    * converged: the full-training-set loss of an evaluation, or the mini-batch loss of
      ``loss_patience`` consecutive steps, is at or below ``loss_floor`` (``None``: the machine
      epsilon of the run's dtype, :func:`loss_floor_for`);
    * stalled (trust-region methods): the radius after a step is below ``radius_floor``, or the
      last ``reject_patience`` steps were all rejected.
    """

    loss_floor: float | None = None
    loss_patience: int = 10
    reject_patience: int = 50
    radius_floor: float = 1e-10

    def __post_init__(self) -> None:
        if self.loss_floor is not None:
            check_positive("loss_floor", self.loss_floor)
        check_int("loss_patience", self.loss_patience, minimum=1)
        check_int("reject_patience", self.reject_patience, minimum=1)
        check_positive("radius_floor", self.radius_floor)


class MethodMonitor:
    """Applies a :class:`StallRule` to one method's records; ``verdict`` is ``None`` until it fires,
    then ``(status, detail)`` with status ``"converged"`` or ``"stalled"``."""

    def __init__(self, rule: StallRule, dtype: str = "float32") -> None:
        self.rule = rule
        self.floor = rule.loss_floor if rule.loss_floor is not None else loss_floor_for(dtype)
        self.low_losses = 0
        self.rejections = 0
        self.verdict: tuple[str, str] | None = None

    def on_step(self, record: dict[str, Any]) -> tuple[str, str] | None:
        if self.verdict is not None:
            return self.verdict
        loss = _float(record.get("loss"))
        self.low_losses = self.low_losses + 1 if loss <= self.floor else 0
        accepted = record.get("accepted")
        if accepted is not None:
            self.rejections = 0 if accepted else self.rejections + 1
        radius = _float(record.get("radius"))
        if self.low_losses >= self.rule.loss_patience:
            self.verdict = ("converged",
                            f"mini-batch loss {loss:.3g} <= {self.floor:.3g} for {self.low_losses} steps")
        elif self.rejections >= self.rule.reject_patience:
            self.verdict = ("stalled",
                            f"the last {self.rejections} steps were all rejected at loss {loss:.3g}")
        elif radius < self.rule.radius_floor:
            self.verdict = ("stalled", f"radius {radius:.3g} below the floor {self.rule.radius_floor:g}")
        return self.verdict

    def on_eval(self, record: dict[str, Any]) -> tuple[str, str] | None:
        loss = _float(record.get("train_loss"))
        if self.verdict is None and loss <= self.floor:
            self.verdict = ("converged", f"training loss {loss:.3g} <= {self.floor:.3g}")
        return self.verdict


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class WarningCounter:
    """Counts warnings per method (the thread's ``method`` set with :meth:`bind`) and logs the first of
    each method once; later ones are only counted. :meth:`install` makes it the process's
    ``warnings.showwarning`` with an ``always`` filter for ``RuntimeWarning`` (no per-message registry
    that grows with every distinct step number). Meant for the worker process, which it owns."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self._local = threading.local()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._original: Any = None

    def bind(self, method: str) -> None:
        """Attribute warnings raised in the calling thread to ``method``."""
        self._local.method = method

    def install(self) -> None:
        self._original = warnings.showwarning
        warnings.simplefilter("always", RuntimeWarning)
        warnings.showwarning = self.show

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        method = getattr(self._local, "method", "run")
        with self._lock:
            self.counts[method] = self.counts.get(method, 0) + 1
            first = self.counts[method] == 1
        if first:
            LOG.warning("live run %s: %s: %s: %s (later warnings of this method are counted, not printed)",
                        self.label, method, category.__name__, message)

    def count(self, method: str) -> int:
        with self._lock:
            return self.counts.get(method, 0)
