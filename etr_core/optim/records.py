"""What one optimiser step did: :class:`StepRecord` and the step's internal hand-over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from torch import Tensor

from etr_core.hvp import HessianVectorProduct

__all__ = ["COUNTER_KEYS", "Closure", "StepRecord"]

Closure = Callable[[], Tensor]

COUNTER_KEYS = ("forward", "backward", "hvp", "steps", "accepted")

_NAN = float("nan")


@dataclass
class StepRecord:
    """What one ``step`` did (Algorithm 1, one iteration).

    ``pred_reduction`` is m(0) - m(s), ``actual_reduction`` is loss - trial_loss (both on the batch),
    ``rho`` their ratio in float64 (Eq. 10). ``quality`` is "very_successful" | "successful" |
    "unsuccessful", "none" when no step was proposed (zero or non-finite gradient or loss), or
    "forced" for ``FirstOrderTR(radius_rule="eta")``, which accepts every step untested.
    ``hvp_calls`` counts the subproblem solver's Hessian-vector products, ``other_hvp_calls`` the
    step's others (the Hessian-diagonal ellipsoid's probes, the automatic initial radius's product):
    ``counters["hvp"]`` grows by their sum.
    """

    step: int
    loss: float
    trial_loss: float
    rho: float
    radius_before: float
    radius_after: float
    accepted: bool
    quality: str
    exit: str
    cg_iterations: int
    hvp_calls: int
    pred_reduction: float
    actual_reduction: float
    step_m_norm: float
    step_l2_norm: float
    grad_norm: float
    ellipsoid_updated: bool
    fault: str | None = None
    other_hvp_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NAN = float("nan")


class _Prepared(NamedTuple):
    """What a step needs after the gradient: float64 loss, flat gradient, Hessian-vector product of the
    batch (``None`` when not formed), gradient norm, whether the ellipsoid was updated, its diagonal."""

    loss: float
    g: Tensor
    hvp: HessianVectorProduct | None
    grad_norm: float
    updated: bool
    m: Tensor
