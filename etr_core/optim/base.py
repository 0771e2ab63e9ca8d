"""The step path shared by the trust-region optimisers (paper Algorithm 1).

A step is built from three layers, each a class on top of the last:
:class:`etr_core.optim.step_io._StepIO` (closure calls, loss and gradient, parameter moves),
:class:`etr_core.optim.verdict._Verdict` (trial, rho, acceptance, radius update, the record) and
:class:`_TrustRegionBase` here: the start of every step (options in force, the gradient, the faults
that stop a step before its model, the ellipsoid update of Eq. 2-3) and the Hessian batch.
Subclasses supply the step proposal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from etr_core import distributed as etr_dist
from etr_core.hvp import HessianVectorProduct
from etr_core.optim.records import _NAN, Closure, _Prepared
from etr_core.optim.verdict import _Verdict
from etr_core.step_support import cap_radius
from etr_core.subproblem.scaling import safe_norm


class _TrustRegionBase(_Verdict):
    """Shared loop of Algorithm 1; subclasses supply the step proposal."""

    def _reduced(self, base: HessianVectorProduct) -> Callable[[Tensor], Tensor]:
        """``base`` with its products averaged over the ranks in distributed mode; ``base`` itself
        otherwise."""
        if not self.distributed:
            return base

        def reduced(v: Tensor) -> Tensor:
            return etr_dist.all_reduce_mean(base(v))

        return reduced

    def _begin_step(
        self, closure: Closure, *, create_graph: bool
    ) -> tuple[Tensor, _Prepared | None]:
        """The part of every step before the model: loss and gradient, the no-move outcomes (non-finite
        loss or gradient, zero gradient; each recorded here), the ellipsoid update and its diagonal.
        Returns the detached loss to hand back and, when the step goes on, what it needs."""
        if closure is None or not callable(closure):
            raise TypeError(f"{type(self).__name__}.step needs a closure that returns the batch loss")
        self._options = options = self._resolve()  # param_groups, read at every step
        self._cfg = options.config
        self._sync_state(options)
        self._hvp_mark = self.counters["hvp"]  # the record accounts for every product of the step
        self._ell = self._bind_ellipsoid(options.config)
        loss_t, loss, g, hvp = self._loss_and_grad(closure, create_graph=create_graph)
        loss_t = loss_t.detach()  # the forward graph lives on only inside the Hessian products
        if g is None:
            self._finish(self._no_move(loss, _NAN, "nonfinite", "nonfinite_loss", False))
            return loss_t, None
        grad_norm = safe_norm(g)  # no overflow for finite entries (float32 norms above 1.8e19)
        if not math.isfinite(grad_norm):
            self._finish(self._no_move(loss, grad_norm, "nonfinite", "nonfinite_gradient", False))
            return loss_t, None
        updated = self._update_ellipsoid(g, hvp)
        if grad_norm == 0.0:
            self._finish(self._no_move(loss, 0.0, "zero_gradient", None, updated))
            return loss_t, None
        cap_radius(self, g.dtype)
        return loss_t, _Prepared(loss, g, hvp, grad_norm, updated, self._ell.diag(like=g))

    def _hessian_batch(
        self, hessian_closure: Closure, g: Tensor, updated: bool, m: Tensor
    ) -> tuple[HessianVectorProduct, bool, Tensor]:
        """Algorithm 1's separate Hessian batch: its graph (one counted backward), and for the
        Hessian-diagonal ellipsoid the probes of that batch. Returns (hvp, updated, m)."""
        hvp = self._graph_of(hessian_closure)
        if hasattr(self._ell, "update_curvature"):  # the Hessian ellipsoid probes the Hessian batch
            updated = self._update_ellipsoid(g, hvp)
            m = self._ell.diag(like=g)
        return hvp, updated, m

    def _update_ellipsoid(self, g: Tensor, hvp: HessianVectorProduct | None = None) -> bool:
        """Eq. 2-3 with ``g`` (every iteration, or after an accepted step); the Hessian-diagonal
        ellipsoid probes ``hvp`` instead. Returns whether the ellipsoid changed."""
        if not (self._cfg.ellipsoid_update == "every_iteration" or self._last_accepted):
            return False
        transaction = self.__dict__.get("_transaction")
        if transaction is not None:  # the statistics change in place below: keep them for a rollback
            transaction.before_update(getattr(self._ell, "v", None))
        if not hasattr(self._ell, "update_curvature"):
            self._ell.update(g)
            return True
        # the Hessian-diagonal ellipsoid (beyond the paper): probes of the batch's Hessian, each one
        # counted Hessian-vector product; without a graph yet (hessian_closure) the caller updates later
        if hvp is None:
            return False
        reduced = self._reduced(hvp)
        shapes = [p.shape for p in self._params]
        try:
            self.counters["hvp"] += self._ell.update_curvature(reduced, shapes, g, self.counters["steps"])
        except ValueError:  # a NaN/Inf product: keep the previous diagonal (the fallback handles the step)
            self.counters["hvp"] += self._ell.probes
            return False
        return True
