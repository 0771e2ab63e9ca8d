"""Measuring curvature without side effects: module buffers and the random state stay untouched.

A curvature tool only *measures* the loss; it must not train the model. Two things in an ordinary
forward pass would change the model or the program's state:

* **Normalisation layers in train mode** (``BatchNorm*``, ``InstanceNorm*`` with
  ``track_running_stats``) update ``running_mean``, ``running_var`` and ``num_batches_tracked`` in
  place. Under ``torch.func.vmap`` that in-place update of an unbatched buffer by a batched value
  is also what raises functorch's "inplace arithmetic ... is not possible" error.
  :func:`batch_statistics_only` keeps the train-mode *meaning* (normalise with the batch's own
  statistics, as a training step does) while the running statistics are neither read nor written.
  A model in ``eval()`` mode is differentiated as the inference function (running statistics
  read, never written).
* **Other buffers** that a custom module may write during ``forward``: the functional paths run on
  :func:`buffer_copies`, so the module's own tensors never see the writes.

Random modules (``Dropout``) draw their masks from torch's global generator; :func:`fixed_rng`
replays one saved generator state for every forward, so all rows of a Hessian belong to the same
mask, and leaves the caller's random state as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["batch_statistics_only", "buffer_copies", "fixed_rng"]


@contextmanager
def batch_statistics_only(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, train-mode normalisation layers use batch statistics without touching buffers.

    Every ``_NormBase`` module (BatchNorm 1d/2d/3d, SyncBatchNorm, InstanceNorm) that is in train
    mode and tracks running statistics gets ``track_running_stats = False`` for the duration: torch
    then normalises with the batch mean and variance exactly as in a training forward, but passes
    no running buffers, so ``running_mean``, ``running_var`` and ``num_batches_tracked`` stay
    bitwise unchanged. The flags are restored on exit, also after an exception. Eval-mode layers
    are left alone (they read their running statistics and write nothing). Not thread-safe against
    a concurrent forward of the same model in another thread.
    """
    switched = [
        m for m in model.modules()
        if isinstance(m, _NormBase) and m.training and m.track_running_stats
    ]
    for m in switched:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in switched:
            m.track_running_stats = True


def buffer_copies(model: nn.Module) -> dict[str, Tensor]:
    """Detached clones of every buffer of ``model``, by name, for ``torch.func.functional_call``.

    A forward run on these copies may write into them; the module's own buffers are not touched.
    """
    return {name: b.detach().clone() for name, b in model.named_buffers()}


@contextmanager
def fixed_rng(device: torch.device | str = "cpu") -> Iterator[Callable[[], None]]:
    """Save torch's CPU (and ``device``'s CUDA) random state; restore it on exit.

    Yields ``replay()``: call it before each forward that must draw the same random numbers (the
    same Dropout mask) as the first. On exit the caller's generators are exactly where they were,
    as if no forward had run.
    """
    dev = torch.device(device)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(dev) if devices else None

        def replay() -> None:
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, dev)

        yield replay
