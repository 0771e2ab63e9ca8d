"""``FirstOrderTR``: the trust region with the linear model of Theorem 1 (paper appendix B, Fig. 5)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from etr_core._validation import check_choice, check_positive
from etr_core.config import TRConfig
from etr_core.ellipsoids import m_inv_norm
from etr_core.optim.base import _TrustRegionBase
from etr_core.optim.options import FIRST_ORDER_OPTIONS, build_config, constructor_overrides, defaults_for
from etr_core.optim.records import Closure
from etr_core.step_support import cap_radius, guarded_step
from etr_core.subproblem import first_order_tr_step

__all__ = ["FirstOrderTR"]


class FirstOrderTR(_TrustRegionBase):
    """First-order trust-region method (paper appendix B, Fig. 5): Algorithm 1 with the linear model
    ``m(s) = L + g^T s``, whose minimiser on the ellipsoid is ``s = -radius M^-1 g / ||g||_{M^-1}``
    (Theorem 1) with predicted decrease ``radius ||g||_{M^-1}``. No Hessian products.

    ``radius_rule="tr"`` (default) adapts the radius by rho as in Algorithm 1. ``radius_rule="eta"``
    sets ``radius_t = lr ||g_t||_{M_t^-1}`` and accepts every step without a trial evaluation: by
    Theorem 1 the iterates are then those of preconditioned gradient descent ``w - lr M^-1 g``
    (SGD, Adagrad or RMSProp with the square-root ellipsoid).
    """

    _OPTIONS = FIRST_ORDER_OPTIONS

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        ellipsoid: Any = None,
        radius: float | None = None,
        max_radius: float | None = None,
        eta1: float | None = None,
        eta2: float | None = None,
        gamma1: float | None = None,
        gamma2: float | None = None,
        grow_only_on_boundary: bool | None = None,
        ellipsoid_update: str | None = None,
        beta: float | None = None,
        eps: float | None = None,
        eps_mode: str | None = None,
        tiny_pred: float | None = None,
        radius_rule: str = "tr",
        lr: float | None = None,
        preset: TRConfig | None = None,
        distributed: bool = False,
    ) -> None:
        overrides = constructor_overrides(locals(), FIRST_ORDER_OPTIONS)
        config = build_config(preset, ellipsoid, overrides)
        if config.ellipsoid == "hessian":
            raise ValueError(
                "ellipsoid='hessian' needs Hessian-vector products, which FirstOrderTR never forms; "
                "use EllipsoidalTR(params, ellipsoid='hessian') or etr_core.EllipsoidalARC"
            )
        check_choice("radius_rule", radius_rule, ("tr", "eta"))
        if radius_rule == "eta":
            if lr is None:
                raise ValueError("radius_rule='eta' needs lr > 0 (the step size eta of Theorem 1)")
            lr = check_positive("lr", lr)
        elif lr is not None:
            raise ValueError(
                f"lr is a step size only with radius_rule='eta', got lr={lr!r} with radius_rule='tr' "
                "(there the group's lr scales the radius cap, 1.0 by default, for LR schedulers)"
            )
        defaults = defaults_for(config, FIRST_ORDER_OPTIONS, 1.0 if lr is None else lr, radius_rule)
        super().__init__(params, defaults, distributed)

    @property
    def radius_rule(self) -> str:
        """"tr" (adaptive radius, Algorithm 1) or "eta" (radius = lr ||g||_{M^-1}), from param_groups."""
        return self._resolve().radius_rule

    @property
    def lr(self) -> float:
        """The step size eta for ``radius_rule="eta"``; for "tr" the scale of the radius cap."""
        return self._resolve().lr

    @guarded_step
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """One first-order TR iteration on the closure's batch; returns the loss at ``w``."""
        loss_t, prep = self._begin_step(closure, create_graph=False)
        if prep is None:
            return loss_t
        loss, g, _, grad_norm, updated, m = prep
        forced = self._options.radius_rule == "eta"
        if forced:
            radius = self._options.lr * float(m_inv_norm(g, m))
            if not (math.isfinite(radius) and radius > 0.0):  # ||g||_{M^-1} overflowed or underflowed
                fault = None if radius == 0.0 else "nonfinite_radius"
                exit_ = "zero_gradient" if radius == 0.0 else "nonfinite"
                self._finish(self._no_move(loss, grad_norm, exit_, fault, updated))
                return loss_t
            self.radius = radius
            cap_radius(self, g.dtype)
        result = first_order_tr_step(g, m, self.radius)
        pred = float(result.pred_reduction)
        outcome = self._judge(closure, loss, result.step, pred, forced=forced)
        self._finish(
            self._settle(
                loss=loss, grad_norm=grad_norm, updated=updated, result=result, pred=pred,
                step_l2=float(torch.linalg.vector_norm(result.step)), outcome=outcome,
                adapt_radius=not forced, stacklevel=2,
            )
        )
        return loss_t
