"""Exact Hessian of a small network's loss, with its per-tensor and per-layer block ranges (section 3.2).

The paper's Fig. 2 / Fig. 6 compare the diagonal mass of the *exact* Hessian of real networks
with that of a random Wigner matrix. The dense Hessian is built row block by row block: each block
of ``chunk_size`` basis vectors ``e_i`` goes through one batched Hessian-vector product (``vmap``
of a ``torch.func`` HVP by default), so memory grows with ``chunk_size`` and not with ``d``. An
unchunked ``torch.func.hessian`` vmaps over all ``d`` basis vectors at once and needs about 5 GB
at ``d = 10,000`` with a batch of 256; the chunked version stays under 1 GB
(``docs/benchmarks/hessian.md``).

``H`` grows as ``d**2`` (381 MB in float32 at ``d = 10,000``), so a hard limit on ``d`` guards the
caller; beyond it the sampled-row estimator of :mod:`etr_core.curvature.estimators` applies.

**Side effects: none.** :func:`exact_hessian`, :func:`loss_of_flat_parameters` and
:func:`network_hvp` (hence the Hutchinson, Bekas, sampled-row and Lanczos estimators built on it)
leave every module buffer and torch's random state bitwise as they found them
(:mod:`etr_core.curvature.buffers`). The model's mode decides what is differentiated: a
train-mode BatchNorm normalises with the batch's own statistics, exactly as in a training step,
without reading or updating its running statistics; call ``model.eval()`` first to differentiate
the inference function (running statistics read, not written). Dropout in train mode uses one
mask for the whole Hessian (the one the first forward would draw).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from etr_core._validation import check_choice, check_int
from etr_core.curvature.buffers import batch_statistics_only, buffer_copies, fixed_rng

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_PARAMS",
    "HESSIAN_METHODS",
    "ExactHessian",
    "NetworkHvp",
    "ParameterBlock",
    "check_hessian_size",
    "exact_hessian",
    "loss_of_flat_parameters",
    "network_hvp",
    "parameter_blocks",
]

DEFAULT_MAX_PARAMS = 12_000
DEFAULT_CHUNK_SIZE = 512
HESSIAN_METHODS = ("reverse", "forward", "double_backward")

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ParameterBlock:
    """A contiguous range ``[start, stop)`` of the flat parameter vector: one tensor or one layer."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def parameter_blocks(model: nn.Module, by: str = "tensor") -> list[ParameterBlock]:
    """Index ranges of the flat parameter vector, in ``model.named_parameters()`` order.

    ``by="tensor"`` gives one block per parameter tensor (``net.1.weight``, ``net.1.bias``, ...);
    ``by="layer"`` merges the tensors of one module (weight and bias of a ``Linear``) into one block
    named after the module. These are the diagonal blocks whose mass :func:`block_masses` reports.
    """
    check_choice("by", by, ("tensor", "layer"))
    blocks: list[ParameterBlock] = []
    offset = 0
    for name, p in _trainable(model):
        label = name if by == "tensor" else (name.rsplit(".", 1)[0] if "." in name else name)
        if by == "layer" and blocks and blocks[-1].name == label and blocks[-1].stop == offset:
            blocks[-1] = ParameterBlock(label, blocks[-1].start, offset + p.numel())
        else:
            blocks.append(ParameterBlock(label, offset, offset + p.numel()))
        offset += p.numel()
    return blocks


def check_hessian_size(d: int, max_params: int = DEFAULT_MAX_PARAMS) -> None:
    """Raise ``ValueError`` naming ``d`` and the limit when a dense ``d x d`` Hessian is too large."""
    max_params = check_int("max_params", max_params, minimum=1)
    if d > max_params:
        raise ValueError(
            f"the network has d = {d:,} parameters, above the exact-Hessian limit max_params = "
            f"{max_params:,} (a dense H would hold {d * d:,} entries). Use a smaller network, raise "
            "max_params, or estimate the diagonal mass from sampled rows "
            "(etr_core.curvature.sampled_row_mass)."
        )


def loss_of_flat_parameters(
    model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: LossFn | None = None
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """Return ``(f, w)``: the loss as a pure function of the flat parameter vector, and ``w`` itself.

    ``f(w) = loss_fn(model_w(inputs), targets)`` via ``torch.func.functional_call``, so
    ``torch.func`` transforms can differentiate it twice. ``f`` runs on copies of the model's
    buffers and under :func:`~etr_core.curvature.buffers.batch_statistics_only`: calling it never
    changes a buffer of ``model`` (train-mode BatchNorm uses batch statistics). The default loss is
    the mean cross entropy of appendix C, B.1.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    named = _trainable(model)
    if not named:
        raise ValueError("model has no trainable parameters")
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    numels = [p.numel() for _, p in named]
    buffers = buffer_copies(model)
    w = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(flat: Tensor) -> Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(numels), shapes)}
        # fresh copies per call: a write by the forward lands on a tensor created inside the
        # transform (allowed), never on a captured one (functorch raises) or the module's own
        fresh = {n: b.clone() for n, b in buffers.items()}
        with batch_statistics_only(model):
            out = functional_call(model, (params, fresh), (inputs,))
        return loss_fn(out, targets)

    return f, w


def _side_effect_free_loss(
    model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: LossFn | None
) -> Tensor:
    """The loss with the model's own parameters (autograd graph intact), buffers left untouched."""
    with torch.enable_grad(), batch_statistics_only(model):
        out = functional_call(model, buffer_copies(model), (inputs,), strict=False)
        return (loss_fn or nn.functional.cross_entropy)(out, targets)


def _row_blocks(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn | None,
    f: Callable[[Tensor], Tensor],
    w: Tensor,
    method: str,
) -> Callable[[Tensor], Tensor]:
    """``V -> V H`` for a block of basis rows ``V``, by the chosen differentiation mode."""
    if method == "double_backward":
        params = [p for _, p in _trainable(model)]
        out = _side_effect_free_loss(model, inputs, targets, loss_fn)
        with torch.enable_grad():
            g = torch.autograd.grad(out, params, create_graph=True, allow_unused=True,
                                    materialize_grads=True)
        flat_g = torch.cat([t.reshape(-1) for t in g])

        def batched(V: Tensor) -> Tensor:
            parts = torch.autograd.grad(
                flat_g, params, grad_outputs=V, is_grads_batched=True, retain_graph=True,
                allow_unused=True, materialize_grads=True,
            )
            return torch.cat([p.reshape(V.shape[0], -1) for p in parts], 1).detach()

        return batched
    grad_f = grad(f)
    # randomness="same": one Dropout mask for every basis vector of a chunk; fixed_rng replays the
    # same generator state for every chunk, so all rows share the mask of the first forward
    if method == "forward":
        return lambda V: vmap(lambda v: jvp(grad_f, (w,), (v,))[1], randomness="same")(V).detach()
    return lambda V: vmap(
        lambda v: grad(lambda u: torch.dot(grad_f(u), v))(w), randomness="same"
    )(V).detach()


@dataclass
class ExactHessian:
    """A dense Hessian with the block structure of the network it came from."""

    matrix: Tensor
    tensor_blocks: list[ParameterBlock]
    layer_blocks: list[ParameterBlock]
    loss: float

    @property
    def d(self) -> int:
        return int(self.matrix.shape[0])


def exact_hessian(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn | None = None,
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    method: str = "reverse",
    progress: Callable[[int, int], None] | None = None,
) -> ExactHessian:
    """The exact Hessian ``nabla^2 L(w)`` of the loss on ``(inputs, targets)`` (paper section 3.2).

    Pass one mini-batch for a mini-batch Hessian or the whole training set for the full-data one.
    Rows are computed ``chunk_size`` at a time as one batched Hessian-vector product with the
    basis vectors of the chunk; ``chunk_size`` trades memory for speed. ``method`` picks how:
    ``"reverse"`` (``vmap`` of reverse-over-reverse ``torch.func`` HVPs, the default),
    ``"forward"`` (``vmap`` of ``jvp(grad)``; PyTorch 2.13 fails on ``mse_loss`` in this mode) or
    ``"double_backward"`` (one retained ``create_graph`` gradient, ``is_grads_batched`` products).
    The result has the device and dtype of the model's parameters (cast the model to float64 for
    oracle-grade precision).
    ``progress(done_rows, d)`` is called after every chunk. Raises ``ValueError`` naming ``d`` and
    ``max_params`` when the network is too large.

    Buffers, BatchNorm and Dropout: see the module docstring. In short, every buffer and torch's
    random state are bitwise unchanged afterwards; a train-mode BatchNorm gives the Hessian of the
    loss normalised with the batch's statistics (a training step's loss), an eval-mode one that of
    the inference function; Dropout uses one mask for the whole matrix.
    """
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    check_choice("method", method, HESSIAN_METHODS)
    f, w = loss_of_flat_parameters(model, inputs, targets, loss_fn)
    d = w.numel()
    check_hessian_size(d, max_params)
    with fixed_rng(w.device) as replay:
        with torch.no_grad():
            loss = float(f(w))
        replay()
        rows = _row_blocks(model, inputs, targets, loss_fn, f, w, method)
        H = torch.empty(d, d, dtype=w.dtype, device=w.device)
        for start in range(0, d, chunk_size):
            stop = min(d, start + chunk_size)
            basis = torch.zeros(stop - start, d, dtype=w.dtype, device=w.device)
            basis[torch.arange(stop - start, device=w.device), torch.arange(start, stop, device=w.device)] = 1
            replay()
            H[start:stop] = rows(basis)
            if progress is not None:
                progress(stop, d)
    return ExactHessian(H, parameter_blocks(model, "tensor"), parameter_blocks(model, "layer"), loss)


class NetworkHvp:
    """``v -> H v`` on flat vectors of one network loss, with the vectors' ``dtype``, ``device``, ``d``.

    The estimators read ``dtype`` and ``device`` to build their probe vectors where the products
    run; ``calls`` counts the products made so far.
    """

    def __init__(self, product: Callable[[Tensor], Tensor], d: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self._product = product
        self.d = d
        self.dtype = dtype
        self.device = device

    @property
    def calls(self) -> int:
        return int(getattr(self._product, "calls", 0))

    def __call__(self, v: Tensor) -> Tensor:
        return self._product(v).detach()


def network_hvp(
    model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: LossFn | None = None
) -> NetworkHvp:
    """``v -> H v`` on flat vectors for the loss on ``(inputs, targets)``, one retained graph (section 4.2).

    One ``create_graph`` backward up front, then one double backward per product (about 1.2-1.4
    gradients each on MLPs): the cost unit of the sampled-row, Hutchinson and Lanczos estimators
    for networks too large for :func:`exact_hessian`. The one forward leaves every buffer and
    torch's random state untouched; a train-mode BatchNorm uses the batch's statistics (see the
    module docstring), so ``H`` is the Hessian of a training step's loss.
    """
    from etr_core.hvp import make_hvp

    loss_fn = loss_fn or nn.functional.cross_entropy
    params = [p for _, p in _trainable(model)]
    if not params:
        raise ValueError("model has no trainable parameters")
    with fixed_rng(params[0].device):
        loss = _side_effect_free_loss(model, inputs, targets, loss_fn)
    with torch.enable_grad():
        grads = torch.autograd.grad(
            loss, params, create_graph=True, allow_unused=True, materialize_grads=True
        )
    d = sum(p.numel() for p in params)
    return NetworkHvp(make_hvp(list(grads), params), d, params[0].dtype, params[0].device)
