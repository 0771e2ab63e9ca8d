"""The Hessian batch of a step: a sub-batch of the gradient batch (``hessian_fraction``).

Algorithm 1 (line 3) samples the Hessian batch S_B on its own; a Hessian-vector product costs about
two backward passes of its batch, so products on a quarter of the gradient batch cut most of a
step's cost while the gradient, the trial loss and rho stay on the whole batch.

How the optimiser gets the sub-batch loss, first match wins:

1. ``step(closure, hessian_closure=h)``: ``h()`` is the Hessian batch's loss (any batch).
2. ``hessian_fraction < 1`` and the closure takes a keyword argument ``batch_fraction``: the
   optimiser calls ``closure()`` for the loss on the whole batch and ``closure(batch_fraction=f)``
   for the loss on its first ``ceil(f * n)`` examples (a plain ``step(closure)``; the closure slices
   its own batch, e.g. ``x[:math.ceil(batch_fraction * len(x))]``).
3. Otherwise the products use the whole batch (``hessian_fraction`` cannot act: a closure without
   ``batch_fraction`` gives no way to evaluate part of its batch); warned once per optimiser.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["subbatch_closure", "takes_batch_fraction"]


def takes_batch_fraction(closure: Callable[..., Any]) -> bool:
    """Whether ``closure`` accepts a keyword argument ``batch_fraction``."""
    try:
        params = inspect.signature(closure).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    entry = params.get("batch_fraction")
    if entry is not None:
        return entry.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def subbatch_closure(
    opt: Any, closure: Callable[..., Tensor], fraction: float
) -> Callable[[], Tensor] | None:
    """The closure of the Hessian sub-batch for ``fraction`` in (0, 1] (module docstring, rule 2), or
    ``None`` when the whole batch is used (``fraction == 1``, or rule 3, warned once per ``opt``)."""
    if fraction >= 1.0:
        return None
    if takes_batch_fraction(closure):
        return functools.partial(closure, batch_fraction=fraction)
    if not opt.__dict__.get("_warned_hessian_fraction"):
        opt._warned_hessian_fraction = True
        warnings.warn(
            f"{type(opt).__name__}: hessian_fraction={fraction} needs a closure that takes a keyword "
            "argument batch_fraction (its loss on the first ceil(batch_fraction * n) examples) or a "
            "hessian_closure; this closure has neither, so the Hessian products use the whole batch",
            UserWarning,
            stacklevel=4,
        )
    return None
