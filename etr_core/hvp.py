"""Flat-vector utilities and Hessian-vector products through one retained graph (paper section 4.2).

Every trust-region iteration of Algorithm 1 needs one gradient and k Hessian-vector products on the
same mini-batch. The cheapest way to get them is to build the gradient once with
``create_graph=True`` and then run every product as a double backward through that one retained
graph with ``grad_outputs=v``: on the paper's 784-128-10 MLP one such product costs about 1.16
gradients, against 3.5-4.6 for a ``torch.func`` forward-over-reverse product, which redoes the
forward and backward passes for every vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["HessianVectorProduct", "flat_grad", "flatten", "grad_with_graph", "make_hvp", "unflatten_like"]


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate ``tensors`` into one flat 1-D tensor (the vector ``w`` of the paper, in order)."""
    parts = [t.reshape(-1) for t in tensors]
    if not parts:
        raise ValueError("flatten needs at least one tensor, got an empty sequence")
    return torch.cat(parts)


def unflatten_like(vec: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Split the flat ``vec`` into views shaped like ``tensors`` (no copy).

    The views share storage with ``vec``, so writing into them writes into ``vec``; this is what
    lets the optimiser keep one preallocated flat buffer and still use per-tensor ``foreach`` ops.
    """
    if vec.dim() != 1:
        raise ValueError(f"vec must be a 1-D tensor, got shape {tuple(vec.shape)}")
    numels = [t.numel() for t in tensors]
    total = sum(numels)
    if vec.numel() != total:
        raise ValueError(f"vec has {vec.numel()} entries but the tensors hold {total}")
    return [chunk.view(t.shape) for chunk, t in zip(vec.split(numels), tensors)]


def _check_scalar_loss(loss: Tensor) -> None:
    if loss.dim() != 0 and loss.numel() != 1:
        raise ValueError(f"loss must be a scalar tensor, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError(
            "loss does not require grad: evaluate it with autograd enabled from parameters that require grad"
        )


def flat_grad(loss: Tensor, params: Sequence[Tensor], *, create_graph: bool = False) -> Tensor:
    """The flat gradient of the scalar ``loss`` with respect to ``params`` (Algorithm 1, line 3).

    Parameters the loss does not depend on get zero gradient. With ``create_graph=True`` the
    result carries the graph that :func:`make_hvp` differentiates a second time.
    """
    _check_scalar_loss(loss)
    grads = torch.autograd.grad(
        loss.reshape(()), params, create_graph=create_graph, allow_unused=True, materialize_grads=True
    )
    return torch.cat([g.reshape(-1) for g in grads])


class HessianVectorProduct:
    """``v -> H v`` by double backward through one retained gradient graph, with a call counter.

    ``H`` is the Hessian of the loss whose ``create_graph`` gradient is ``grad``: either the flat
    gradient (``flat_grad(..., create_graph=True)``) or the per-parameter gradients
    (:func:`grad_with_graph`). The per-parameter form is faster: ``v`` enters the double backward as
    views, without the concatenation node of the flat form (about 0.08 gradients per product on the
    784-128-10 MLP). Parameters whose gradient does not depend on them contribute zero rows; a
    gradient that does not depend on the parameters at all gives ``H v = 0``.
    """

    def __init__(self, grad: Tensor | Sequence[Tensor], params: Sequence[Tensor]) -> None:
        self.params = list(params)
        numel = sum(p.numel() for p in self.params)
        if isinstance(grad, Tensor):
            if grad.dim() != 1:
                raise ValueError(f"flat_grad_with_graph must be 1-D, got shape {tuple(grad.shape)}")
            if grad.numel() != numel:
                raise ValueError(f"flat_grad_with_graph has {grad.numel()} entries, params hold {numel}")
            self._outputs: list[Tensor] = [grad] if grad.requires_grad else []
            self._slots: list[int] | None = None
            ref = grad
        else:
            grads = list(grad)
            if len(grads) != len(self.params) or any(g.shape != p.shape for g, p in zip(grads, self.params)):
                raise ValueError("grads must hold one gradient shaped like each parameter, in order")
            # only gradients that carry a graph can be differentiated again; the others add zero
            self._slots = [i for i, g in enumerate(grads) if g.requires_grad]
            self._outputs = [grads[i] for i in self._slots]
            ref = self.params[0]
        self._numel = numel
        self._dtype, self._device = ref.dtype, ref.device
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        if v.shape != (self._numel,):
            raise ValueError(f"v must have shape ({self._numel},), got {tuple(v.shape)}")
        self.calls += 1
        if not self._outputs:
            return torch.zeros(self._numel, dtype=self._dtype, device=self._device)
        if self._slots is None:
            grad_outputs: Tensor | list[Tensor] = v
        else:
            views = unflatten_like(v, self.params)
            grad_outputs = [views[i] for i in self._slots]
        parts = torch.autograd.grad(
            self._outputs,
            self.params,
            grad_outputs=grad_outputs,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return torch.cat([p.reshape(-1) for p in parts])


def grad_with_graph(loss: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, HessianVectorProduct]:
    """The detached flat gradient of ``loss`` and the Hessian-vector product of its graph, from one
    ``create_graph`` backward (Algorithm 1, line 3: ``g_t`` and ``B_t v`` on the same batch)."""
    _check_scalar_loss(loss)
    grads = torch.autograd.grad(
        loss.reshape(()), params, create_graph=True, allow_unused=True, materialize_grads=True
    )
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    return flat, HessianVectorProduct(grads, params)


def make_hvp(
    flat_grad_with_graph: Tensor | Sequence[Tensor], params: Sequence[Tensor]
) -> HessianVectorProduct:
    """Return the Hessian-vector product ``v -> H v`` on flat vectors (paper Eq. 8, ``B_t = H``).

    ``flat_grad_with_graph`` must come from ``flat_grad(loss, params, create_graph=True)`` (or any
    ``torch.cat`` of ``create_graph`` gradients in the order of ``params``). Each call is one
    double backward with ``grad_outputs=v`` and ``retain_graph=True``; the result is detached.
    The returned object counts its calls in ``.calls``.
    """
    return HessianVectorProduct(flat_grad_with_graph, params)
