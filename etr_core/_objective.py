"""A small deterministic objective for :func:`etr_core.minimize.minimize`: value, gradient, dense Hessian.

Counting follows ``scipy.optimize.minimize``: ``nfev`` is the number of times the user's function
ran, ``njev`` the number of gradients formed and ``nhev`` the number of dense Hessians built. One
forward pass serves all three at a point: the gradient is taken with ``create_graph=True`` from
that pass's graph and the Hessian is one batched double backward through it (``d`` basis vectors
at once, ``is_grads_batched``), so building ``H`` never calls the function again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Objective", "as_start", "dense_hessian"]


def as_start(x0: Any) -> Tensor:
    """``x0`` as a detached float64 1-D tensor; TypeError/ValueError name ``x0`` otherwise."""
    try:
        x = torch.as_tensor(x0, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"x0 must be a 1-D array of real numbers, got {type(x0).__name__}") from None
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D vector, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x0 must be finite, got NaN or Inf entries")
    return x.detach().clone()


def dense_hessian(g: Tensor, x: Tensor) -> Tensor:
    """The dense Hessian ``H[i, j] = d g_i / d x_j``, shape (d, d), from a gradient ``g`` (shape (d,))
    taken with ``create_graph=True`` with respect to the leaf ``x``.

    One batched double backward over the ``d`` unit vectors (``torch.autograd.grad`` with
    ``is_grads_batched=True``: ``vmap`` over the Hessian-vector products of Eq. 8) instead of ``d``
    separate products. Parts of ``g`` that do not depend on ``x`` (or a ``g`` without a graph, as for
    a linear function) give zero rows. The graph is kept, so the call may be repeated.
    """
    d = x.numel()
    if g.shape != (d,):
        raise ValueError(f"g must have shape ({d},) to match x, got {tuple(g.shape)}")
    if not g.requires_grad:
        return torch.zeros(d, d, dtype=x.dtype, device=x.device)
    eye = torch.eye(d, dtype=g.dtype, device=g.device)
    (H,) = torch.autograd.grad(
        g, x, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True,
        materialize_grads=True,
    )
    return H.detach()


class Objective:
    """f, g and the dense Hessian of a torch callable at one point per evaluation, with SciPy's counters."""

    def __init__(self, fun: Callable[[Tensor], Tensor]) -> None:
        self.fun = fun
        self.nfev = 0
        self.njev = 0
        self.nhev = 0

    def value(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_leaf, f)`` from one call of ``fun``, with the graph kept for the derivatives at ``x``."""
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            f = self.fun(x)
        self.nfev += 1
        if not isinstance(f, Tensor) or f.numel() != 1:
            raise TypeError(f"fun must return a scalar torch tensor, got {f!r}")
        return x, f.reshape(())

    def gradient(self, x: Tensor, f: Tensor, create_graph: bool) -> Tensor:
        """The gradient of ``f`` at the leaf ``x`` (zeros if ``f`` does not depend on ``x``)."""
        self.njev += 1
        if not f.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(f, x, create_graph=create_graph, allow_unused=True, materialize_grads=True)
        return g

    def hessian(self, g: Tensor, x: Tensor) -> Tensor:
        """The dense Hessian through ``g``'s graph (see :func:`dense_hessian`); counts one in ``nhev``."""
        self.nhev += 1
        return dense_hessian(g, x)
