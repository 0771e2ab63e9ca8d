"""Data-parallel trust-region training over ``torch.distributed`` collectives.

Why not ``DistributedDataParallel``: DDP averages gradients with hooks on the first backward and
does not support double backward or ``autograd.grad(..., create_graph=True)`` (pytorch/pytorch
#63812, #63929, #47562: wrong or zero gradients, or errors). Every Hessian-vector product of
Algorithm 1 is such a double backward, so the TR optimiser cannot sit behind DDP.

Instead every rank holds a full replica (parameters broadcast from rank 0 once), evaluates its own
equal shard of the batch, and :class:`etr_core.optim.EllipsoidalTR` with ``distributed=True``
all-reduce-averages the flat gradient, every Hessian-vector product and both loss values (at w and
at the trial point). All ranks then hold identical inputs to the subproblem and compute the
identical step, so the replicas stay equal without any parameter traffic. Launch with ``torchrun``;
gloo on CPU, NCCL on GPUs. First-order baselines may use DDP as usual.

These are thin wrappers over ``torch.distributed``; there is no communication layer of our own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from etr_core._validation import check_choice, check_int

__all__ = [
    "all_reduce_mean",
    "broadcast_parameters",
    "choose_backend",
    "cleanup",
    "is_distributed",
    "rank",
    "setup",
    "shard",
    "world_size",
]


def choose_backend(device: str | torch.device | None, cuda_available: bool) -> str:
    """The process-group backend for tensors on ``device``: NCCL for CUDA, gloo for the CPU.

    ``device=None`` (not known yet) gives ``"cpu:gloo,cuda:nccl"`` when CUDA is available, so that
    CPU and CUDA tensors can both be reduced, and ``"gloo"`` otherwise. Training on the CPU uses gloo
    even on a machine with GPUs (NCCL has no CPU tensors).
    """
    if device is None:
        return "cpu:gloo,cuda:nccl" if cuda_available else "gloo"
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


_BACKENDS = ("gloo", "nccl", "mpi", "cpu:gloo,cuda:nccl")


def setup(backend: str | None = None, device: str | torch.device | None = None) -> None:
    """Initialise the default process group from the ``torchrun`` environment variables.

    ``backend=None`` picks it from the ``device`` the tensors live on (:func:`choose_backend`):
    NCCL for CUDA, gloo for the CPU (also on a machine with GPUs). ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` must be set (torchrun sets them); with NCCL the process
    binds to ``cuda:LOCAL_RANK``. Calling it when a group already exists does nothing.
    """
    if dist.is_initialized():
        return
    if backend is None:
        backend = choose_backend(device, torch.cuda.is_available())
    check_choice("backend", backend, _BACKENDS)
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"setup() needs the environment variables {', '.join(missing)} (launch with torchrun)"
        )
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_parameters(module_or_params: nn.Module | Iterable[Tensor], src: int = 0) -> None:
    """Overwrite every parameter (and module buffer) with rank ``src``'s values, in place."""
    if isinstance(module_or_params, nn.Module):
        tensors = list(module_or_params.parameters()) + list(module_or_params.buffers())
    else:
        tensors = list(module_or_params)
    if not is_distributed():
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def shard(tensor_or_indices: Tensor | int, rank: int, world_size: int) -> Tensor:
    """This rank's equal, contiguous shard along dimension 0.

    ``tensor_or_indices`` is a tensor (e.g. a batch or an index vector) or an int ``n`` standing for
    ``arange(n)``. Its length must be divisible by ``world_size``: equal shards make the average of
    the per-rank mean losses equal the mean loss of the union batch.
    """
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1)
    if isinstance(tensor_or_indices, int) and not isinstance(tensor_or_indices, bool):
        tensor = torch.arange(tensor_or_indices)
    elif isinstance(tensor_or_indices, Tensor):
        tensor = tensor_or_indices
    else:
        raise TypeError(
            f"tensor_or_indices must be a Tensor or an int, got {type(tensor_or_indices).__name__}"
        )
    n = tensor.shape[0]
    if n % world_size != 0:
        raise ValueError(f"length {n} must be divisible by world_size = {world_size} for equal shards")
    size = n // world_size
    return tensor[rank * size : (rank + 1) * size]


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over all ranks in place and return it (identity on a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
