"""The torch.optim contract around one trust-region step: ``p.grad``, gradient hooks, fault fallbacks.

:func:`guarded_step` wraps the ``step`` of :class:`etr_core.optim.EllipsoidalTR` and
:class:`etr_core.optim.FirstOrderTR`:

* the whole step runs inside a :class:`etr_core.step_guard.StepGuard` (one random state for every
  closure call of the step; module buffers updated once, by the point the step ends at);
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

__all__ = ["cap_radius", "count_fault", "guarded_step", "hvp_fallback", "set_gradients"]

F = TypeVar("F", bound=Callable[..., Any])

FALLBACK_EXIT = "hvp_fallback"


def guarded_step(step: F) -> F:
    """Decorator for an optimiser's ``step(closure, ...)``: runs it inside a :class:`StepGuard` and
    leaves the step's gradient in ``p.grad`` afterwards (module docstring)."""

    @functools.wraps(step)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._step_grad = None
        guard = StepGuard(fork_rng=getattr(self, "fork_rng", True))
        self._guard = guard
        try:
            # like torch.optim.LBFGS, a step works under torch.no_grad(): it needs autograd itself
            with guard, torch.enable_grad():
                return step(self, *args, **kwargs)
        finally:
            self._guard = None
            g = self.__dict__.pop("_step_grad", None)
            if g is not None and getattr(self, "keep_grad", True):
                set_gradients(self._params, g)
            if guard.backward_hooked:
                count_fault(
                    self,
                    "module_backward_hooks",
                    f"module backward hooks on {', '.join(sorted(set(guard.backward_hooked)))} run on "
                    "every Hessian-vector product too and can change the curvature; use tensor hooks "
                    "(p.register_hook), which apply once to the gradient at w",
                )

    return wrapper  # type: ignore[return-value]


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
