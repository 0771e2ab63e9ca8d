"""What a trust-region step reads and writes (paper Algorithm 1, lines 2-6): closure calls, the loss and
its gradient, and the parameters (trial move, bitwise restore).

Every closure call runs under the step's :class:`etr_core.step_guard.StepGuard` (one random state,
one buffer update per step) and counts one forward pass; the gradient counts one backward pass. In
distributed mode the loss values and the gradient are averaged over the ranks here, so everything
after this layer sees the same numbers on every rank.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from etr_core import distributed as etr_dist
from etr_core.hvp import HessianVectorProduct, apply_grad_hooks, flat_grad, grad_with_graph, unflatten_like
from etr_core.optim.records import Closure
from etr_core.optim.state import _TRState


class _StepIO(_TRState):
    """Closure evaluation, the flat gradient and the parameter moves of one step."""

    def _evaluate(self, closure: Closure, *, grad_enabled: bool) -> Tensor:
        """Call ``closure`` (autograd on at ``w``, off at a trial point) and count one forward pass.
        ``TypeError`` when it returns no tensor, ``ValueError`` when the loss is not a scalar."""
        guard = self.__dict__.get("_guard")  # one random state, one buffer update per step (step_guard)
        if guard is not None:
            guard.before_call(trial=not grad_enabled)
        with torch.set_grad_enabled(grad_enabled):
            loss = closure()
        if guard is not None:
            guard.after_call(trial=not grad_enabled)
        self.counters["forward"] += 1
        if not isinstance(loss, Tensor):
            raise TypeError(f"closure must return the loss as a tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(f"closure must return a scalar loss, got shape {tuple(loss.shape)}")
        return loss

    def _check_no_backward(self) -> None:
        if any(p.grad is not None for p in self._params):
            raise RuntimeError(
                "the closure called backward(): return the loss without calling backward; "
                f"{type(self).__name__} forms the gradient (and the graph for Hessian products) itself"
            )

    def _mean_float(self, loss: Tensor) -> float:
        """float64 value of the loss, averaged over ranks in distributed mode."""
        value = loss.detach().reshape(1).to(torch.float64)
        if self.distributed:
            value = etr_dist.all_reduce_mean(value.clone())
        return float(value)

    @torch.no_grad()
    def _save_params(self) -> None:
        params = self._params
        saved = self.__dict__.get("_saved")
        if saved is None or saved.numel() != sum(p.numel() for p in params) or saved.dtype != params[0].dtype:
            # scratch space for the bitwise restore, not state: (re)allocated after unpickling or a new group
            self._saved = torch.empty(self.dim, dtype=params[0].dtype, device=params[0].device)
        self._saved_views = unflatten_like(self._saved, params)
        torch._foreach_copy_(self._saved_views, params)
        transaction = self.__dict__.get("_transaction")
        if transaction is not None:  # the one copy of w restores a rejected step and a failed one
            transaction.before_move(self._saved_views)

    @torch.no_grad()
    def _restore_params(self) -> None:
        torch._foreach_copy_(self._params, self._saved_views)
        guard = self.__dict__.get("_guard")
        if guard is not None:
            guard.rejected()  # the rejected trial's buffer updates leave no trace

    @torch.no_grad()
    def _add_step(self, s: Tensor) -> None:
        torch._foreach_add_(self._params, unflatten_like(s, self._params))

    def _loss_and_grad(
        self, closure: Closure, create_graph: bool
    ) -> tuple[Tensor, float, Tensor | None, HessianVectorProduct | None]:
        """Loss (tensor and rank-averaged float64), the rank-averaged flat gradient (``None`` when the
        loss is not finite) and, with ``create_graph``, the Hessian-vector product of the local batch."""
        for p in self._params:
            p.grad = None
        loss = self._evaluate(closure, grad_enabled=True)
        self._check_no_backward()
        f = self._mean_float(loss)
        if not math.isfinite(f):
            return loss, f, None, None
        # frozen parameters (requires_grad=False) count as constants: zero gradient, never moved
        if create_graph:
            g, hvp = grad_with_graph(loss, self._params, allow_frozen=True)
        else:
            g, hvp = flat_grad(loss, self._params, allow_frozen=True), None
        self.counters["backward"] += 1
        apply_grad_hooks(self._params, g)  # p.register_hook hooks: once, on g at w (step_support)
        if self.distributed:
            g = etr_dist.all_reduce_mean(g)  # g is a fresh tensor: reduce in place
        self._step_grad = g  # left in p.grad after the step
        return loss, f, g, hvp

    def _graph_of(self, closure: Closure) -> HessianVectorProduct:
        """The Hessian-vector product of a separate batch's loss (Algorithm 1, line 3: S_B); one
        forward and one counted backward."""
        loss = self._evaluate(closure, grad_enabled=True)
        self._check_no_backward()
        _, hvp = grad_with_graph(loss, self._params, allow_frozen=True)
        self.counters["backward"] += 1
        return hvp
