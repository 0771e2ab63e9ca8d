"""What an exact Hessian of a small MLP will cost, before it is computed (paper section 3.2).

A dense Hessian needs ``d**2`` entries; the chunked ``vmap`` of Hessian-vector products in
:func:`~etr_core.curvature.exact_hessian` also holds, per chunk of ``c`` basis vectors, about
``c * batch * W`` activations (``W`` = sum of the hidden and output widths) in a few live tensors.
The time of one Hessian grows as ``d**2 * batch`` and, once a chunk's activations no longer fit in
the caches, faster: the model below was fitted to one-thread measurements on a loaded 2-core CPU
(``docs/benchmarks/hessian.md``) and errs on the safe side (measured times were 0.3-1x the
estimate). Callers that must never exceed a budget also enforce it while computing (a deadline in
the progress callback); the estimate only decides what to try.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from etr_core._validation import check_int

__all__ = ["HessianCost", "chunk_size_for", "mlp_hessian_cost", "training_seconds"]

CHUNK_BYTES = 32 * 2**20  # one chunk's activation tensor: small enough to stay near the caches
LIVE_TENSORS = 6          # activation-sized tensors alive at once in one chunk (measured 3-5)
BASE_BYTES = 150 * 2**20  # torch.func / vmap workspace independent of the size (measured)
SECONDS_PER_ENTRY = 1.5e-9  # per d**2 * batch at one thread, small activations
CACHE_WIDTH_BATCH = 40_000  # W * batch at which the per-entry cost has doubled
STEP_SECONDS = 2.5e-3     # Python and launch overhead of one RMSProp step (one thread)
STEP_SECONDS_PER_FLOP = 3e-9 / 6  # per multiply-add of forward and backward


def _widths(sizes: Sequence[int]) -> tuple[int, int]:
    sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
    d = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    return d, sum(sizes[1:])


def chunk_size_for(sizes: Sequence[int], batch: int, bytes_per_entry: int = 4) -> int:
    """Basis vectors per chunk so that one chunk's activation tensor holds about 32 MB (16 to 512)."""
    _, width = _widths(sizes)
    batch = check_int("batch", batch, minimum=1)
    per_vector = batch * width * bytes_per_entry
    return int(min(512, max(16, CHUNK_BYTES // per_vector)))


@dataclass(frozen=True)
class HessianCost:
    """Estimated cost of one exact Hessian: ``d``, chunk size, bytes of ``H``, peak bytes, seconds."""

    d: int
    batch: int
    chunk_size: int
    matrix_bytes: int
    peak_bytes: int
    seconds: float


def mlp_hessian_cost(sizes: Sequence[int], batch: int, bytes_per_entry: int = 4,
                     chunk_size: int | None = None) -> HessianCost:
    """Time and memory of ``exact_hessian`` for the MLP ``sizes`` on ``batch`` examples (one thread).

    ``matrix_bytes = d**2 * bytes_per_entry``; ``peak_bytes`` adds the chunk's live activations,
    its basis block and rows, and a fixed workspace. ``chunk_size`` defaults to
    :func:`chunk_size_for`. Raises ``ValueError`` for sizes or a batch below 1.
    """
    d, width = _widths(sizes)
    batch = check_int("batch", batch, minimum=1)
    chunk = chunk_size_for(sizes, batch, bytes_per_entry) if chunk_size is None else check_int(
        "chunk_size", chunk_size, minimum=1)
    matrix = d * d * bytes_per_entry
    peak = (matrix + LIVE_TENSORS * chunk * batch * width * bytes_per_entry
            + 3 * chunk * d * bytes_per_entry + BASE_BYTES)
    seconds = 0.05 + SECONDS_PER_ENTRY * d * d * batch * (1 + width * batch / CACHE_WIDTH_BATCH)
    return HessianCost(d, batch, chunk, matrix, peak, seconds)


def training_seconds(sizes: Sequence[int], steps: int, train_batch: int) -> float:
    """Estimated one-thread time of ``steps`` RMSProp steps on batches of ``train_batch``."""
    d, _ = _widths(sizes)
    steps = check_int("steps", steps, minimum=0)
    return steps * (STEP_SECONDS + STEP_SECONDS_PER_FLOP * 6 * d * train_batch)
