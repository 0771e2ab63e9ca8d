"""The torch.optim contract around one trust-region step: ``p.grad``, gradient hooks, fault fallbacks.

:func:`guarded_step` wraps the ``step`` of :class:`etr_core.optim.EllipsoidalTR` and
:class:`etr_core.optim.FirstOrderTR`:

* the whole step runs inside a :class:`etr_core.step_guard.StepGuard` (one random state for every
  closure call of the step; module buffers updated once, by the point the step ends at);
* the step is a transaction (:class:`StepTransaction`): when anything in it raises (``KeyboardInterrupt``
  included), parameters, optimiser state, ``p.grad``, random state and buffers are put back as they
  were and the exception is re-raised unchanged, so retrying the step equals never having failed;
* after the step, ``p.grad`` holds the mini-batch gradient at ``w`` (rank-averaged in distributed
  mode, after the gradient hooks), as after ``loss.backward()`` and any torch optimiser's step, so
  gradient-norm logging and ``clip_grad_norm_`` see it. Parameters with ``requires_grad=False`` are
  skipped as torch optimisers skip them: no gradient, no move. ``opt.keep_grad = False`` leaves every
  ``p.grad`` at ``None`` (saves one gradient of memory between steps).

Gradient hooks (``p.register_hook``) fire once per step, on the gradient at ``w``, in registration
order, before the ellipsoid update and the model: a clipping hook clips the ``g`` of the model
``g^T s + 1/2 s^T H s`` exactly as it clips what Adam sees. They are not applied to Hessian-vector
products (the curvature is the loss's, never a hook's) nor to the trial evaluation. Hooks registered
with ``register_post_accumulate_grad_hook`` fire once per step, when ``p.grad`` is set (as after
``backward()``). Module backward hooks (``register_full_backward_hook``) are part of the graph and
also run during Hessian products: the first step that meets one warns once (counted in
``fault_counts["module_backward_hooks"]``); use tensor hooks for gradient surgery. A step works
under ``torch.no_grad()`` (it enables autograd for itself, like ``torch.optim.LBFGS``).

Faults handled here, counted in ``opt.fault_counts`` (kept in the optimiser's state, so saved by
``state_dict`` and kept by ``copy.deepcopy`` and pickle) and warned once per optimiser and kind:

* ``"hvp_fallback"``: the quadratic model's solve met a non-finite Hessian-vector product while the
  gradient is finite. The step falls back to the first-order trust-region step in the same ellipsoid
  (Theorem 1: ``s = -radius M^-1 g / ||g||_{M^-1}``), judged by rho like any step, so training still
  makes progress where the curvature is undefined (e.g. ``||w||`` at ``w = 0``). The record's exit
  reads ``"hvp_fallback"``.
* ``"radius_capped"``: the radius exceeded :func:`etr_core.subproblem.scaling.safe_radius` of the
  parameters' dtype (2^56 ~ 7.2e16 in float32) and was set to it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from etr_core.hvp import unflatten_like
from etr_core.step_guard import StepGuard
from etr_core.subproblem import first_order_tr_step
from etr_core.subproblem.result import SubproblemResult
from etr_core.subproblem.scaling import safe_radius

__all__ = ["StepTransaction", "cap_radius", "count_fault", "guarded_step", "hvp_fallback", "set_gradients"]

F = TypeVar("F", bound=Callable[..., Any])

FALLBACK_EXIT = "hvp_fallback"


def guarded_step(step: F) -> F:
    """Decorator for an optimiser's ``step(closure, ...)``: runs it inside a :class:`StepGuard` as a
    :class:`StepTransaction` and leaves the step's gradient in ``p.grad`` afterwards (module docstring).
    An exception (``KeyboardInterrupt`` included) is re-raised unchanged after the rollback."""

    @functools.wraps(step)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._step_grad = None
        guard = StepGuard(fork_rng=getattr(self, "fork_rng", True))
        transaction = StepTransaction(self)
        self._guard, self._transaction = guard, transaction
        failed = True
        try:
            # like torch.optim.LBFGS, a step works under torch.no_grad(): it needs autograd itself
            with guard, torch.enable_grad():
                out = step(self, *args, **kwargs)
            failed = False
            return out
        except BaseException:
            transaction.rollback()  # the guard has put the random state and module buffers back
            raise
        finally:
            self._guard = self._transaction = None
            g = self.__dict__.pop("_step_grad", None)
            if not failed and g is not None and getattr(self, "keep_grad", True):
                set_gradients(self._params, g)
            if not failed and guard.backward_hooked:
                count_fault(
                    self,
                    "module_backward_hooks",
                    f"module backward hooks on {', '.join(sorted(set(guard.backward_hooked)))} run on "
                    "every Hessian-vector product too and can change the curvature; use tensor hooks "
                    "(p.register_hook), which apply once to the gradient at w",
                )

    return wrapper  # type: ignore[return-value]


class StepTransaction:
    """What one step of a trust-region optimiser may change, kept so that an exception anywhere in the
    step (the closure at ``w``, the Hessian batch, a Hessian-vector product or probe, the trial call)
    leaves the optimiser as if the step never ran: parameters bitwise, ``self.state`` (radius or sigma,
    counters, fault counts, the automatic start, the last verdict, ellipsoid statistics), ``p.grad``
    and ``last_step``. Random state and module buffers are :class:`StepGuard`'s.

    Cost, per step: a shallow copy of each parameter's state entry (no tensor copied); the parameters
    move only after ``_save_params`` copied ``w`` for the bitwise restore of a rejected step, and that
    copy is reused (:meth:`before_move`); the ellipsoid's accumulator is copied once, just before its
    first in-place update of the step (:meth:`before_update`), into a scratch buffer kept between
    steps."""

    def __init__(self, opt: Any) -> None:
        self._opt = opt
        self._params = list(opt._params)
        self._entries = [(entry, _copy_entry(entry)) for entry in (opt.state[p] for p in self._params)]
        self._grads = [p.grad for p in self._params]
        self._last_step = opt.__dict__.get("last_step")
        self._accumulator: tuple[Tensor, Tensor] | None = None
        self._saved_w: list[Tensor] | None = None

    @torch.no_grad()
    def before_update(self, v: Tensor | None) -> None:
        """Keep a copy of the accumulator ``v`` before the step first changes it in place."""
        if v is None or self._accumulator is not None:
            return
        scratch = self._opt.__dict__.get("_v_backup")
        if scratch is None or (scratch.shape, scratch.dtype, scratch.device) != (v.shape, v.dtype, v.device):
            scratch = self._opt._v_backup = torch.empty_like(v)  # scratch, not state (never saved)
        scratch.copy_(v)
        self._accumulator = (v, scratch)

    def before_move(self, saved_w: list[Tensor]) -> None:
        """The parameters are about to leave ``w``; ``saved_w`` (views of the saved copy) restores them."""
        self._saved_w = saved_w

    @torch.no_grad()
    def rollback(self) -> None:
        """Put back everything the step changed (class docstring)."""
        if self._saved_w is not None:
            torch._foreach_copy_(self._params, self._saved_w)
        if self._accumulator is not None:
            live, copy = self._accumulator
            live.copy_(copy)
        for entry, saved in self._entries:
            for key in [k for k in entry if k not in saved]:
                del entry[key]
            for key, value in saved.items():
                current = entry.get(key)
                if isinstance(value, dict) and isinstance(current, dict):
                    current.clear()  # the same dict object: references such as opt.counters stay live
                    current.update(value)
                else:
                    entry[key] = value
        for p, grad in zip(self._params, self._grads):
            p.grad = grad
        self._opt.last_step = self._last_step
        self._opt.__dict__.pop("_hvp_mark", None)


def _copy_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in entry.items()}


@torch.no_grad()
def set_gradients(params: list[Tensor], flat: Tensor) -> None:
    """``p.grad`` = the slice of the flat gradient for every parameter that requires grad (views of
    ``flat``, cast to the parameter's dtype where they differ); frozen parameters keep ``None``."""
    for p, view in zip(params, unflatten_like(flat, params)):
        if p.requires_grad:
            p.grad = view if view.dtype == p.dtype else view.to(p.dtype)
            # as after loss.backward(): hooks registered with register_post_accumulate_grad_hook
            for hook in list((getattr(p, "_post_accumulate_grad_hooks", None) or {}).values()):
                hook(p)


def _fault_counts(opt: Any) -> dict[str, int]:
    counts = getattr(type(opt), "fault_counts", None)
    if isinstance(counts, property):  # the optimisers keep the counts in their state
        return opt.fault_counts
    counts = opt.__dict__.get("fault_counts")
    if counts is None:
        counts = opt.__dict__["fault_counts"] = {}
    return counts


def count_fault(opt: Any, kind: str, message: str) -> None:
    """Count a handled fault on ``opt.fault_counts[kind]``; warn (RuntimeWarning) the first time."""
    counts = _fault_counts(opt)
    counts[kind] = counts.get(kind, 0) + 1
    if counts[kind] == 1:
        warnings.warn(
            f"{type(opt).__name__}: {message} (warned once; counted in fault_counts[{kind!r}])",
            RuntimeWarning,
            stacklevel=4,
        )


def hvp_fallback(opt: Any, g: Tensor, m: Tensor, result: SubproblemResult) -> SubproblemResult:
    """The first-order step (Theorem 1) in the same ellipsoid when ``result`` met a non-finite
    Hessian-vector product; ``result`` itself otherwise. The Hessian products made are kept in the
    returned result's ``hvp_calls``."""
    if result.exit != "nonfinite":
        return result
    fallback = first_order_tr_step(g, m, opt.radius)
    if fallback.exit != "boundary":  # g itself was the problem: nothing to fall back to
        return result
    count_fault(
        opt, FALLBACK_EXIT,
        "a Hessian-vector product was NaN/Inf with a finite gradient; took the first-order "
        "trust-region step in the same ellipsoid instead (Theorem 1)",
    )
    fallback.exit = FALLBACK_EXIT
    fallback.hvp_calls = result.hvp_calls
    fallback.iterations = result.iterations
    return fallback


def cap_radius(opt: Any, dtype: torch.dtype) -> None:
    """Set ``opt.radius`` to ``safe_radius(dtype)`` when it exceeds it, counted as ``"radius_capped"``."""
    cap = safe_radius(dtype)
    if opt.radius > cap:
        count_fault(
            opt, "radius_capped",
            f"radius {opt.radius:.3g} exceeds what {dtype} steps can hold; capped at {cap:.3g}",
        )
        opt.radius = cap
