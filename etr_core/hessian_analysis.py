"""One network of the diagonal-dominance experiment (paper section 3.2, Fig. 2 / Fig. 6).

Two separable steps, so that callers can cache and reuse each:

* :func:`train_checkpoints` trains a tanh (or other) MLP with RMSProp and returns resumable
  :class:`Checkpoint` s (weights, optimiser state, generator state) at the requested steps. The
  trajectory up to step ``k`` does not depend on how far training goes afterwards, nor on the
  Hessian's batch, so one run serves every phase and every later request can resume from the
  nearest earlier checkpoint and give bitwise the same weights as an uninterrupted run.
* :func:`snapshot_at` takes the exact Hessian of the mean cross entropy on a fixed batch
  (:func:`hessian_batch`) at one checkpoint and reduces it to a :class:`PhaseSnapshot`: diagonal
  mass with its Wigner baselines, per-block masses, Lanczos extremes and a pooled heat map.

:func:`analyse_network` composes the two for ``etr hessian``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from etr_core._validation import check_closed_interval, check_int, check_positive
from etr_core.curvature import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_PARAMS,
    BlockMass,
    WignerComparison,
    block_masses,
    check_hessian_size,
    compare_with_wigner,
    exact_hessian,
    lanczos_extreme_eigenvalues,
    parameter_blocks,
)

__all__ = [
    "PHASES",
    "Checkpoint",
    "NetworkAnalysis",
    "PhaseSnapshot",
    "analyse_network",
    "hessian_batch",
    "mlp_sizes",
    "parameter_count",
    "parse_arch",
    "pooled_abs",
    "snapshot_at",
    "train_checkpoints",
]

PHASES: tuple[tuple[str, float], ...] = (("init", 0.0), ("middle", 0.5), ("end", 1.0))


def parse_arch(arch: str | Sequence[int]) -> tuple[int, ...]:
    """Hidden widths from ``"16"``, ``"16-16"``, ``"16x16"`` or a sequence of ints (1 to 4 layers)."""
    if isinstance(arch, str):
        parts = arch.replace("x", "-").replace(",", "-").split("-")
        try:
            widths = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise ValueError(
                f"arch must list hidden widths such as '16' or '16-16', got {arch!r}"
            ) from None
    else:
        widths = tuple(arch)
    if not 1 <= len(widths) <= 4:
        raise ValueError(f"arch must have 1 to 4 hidden layers, got {arch!r}")
    for i, w in enumerate(widths):
        check_int(f"arch width {i}", w, minimum=1, maximum=4096)
    return widths


def mlp_sizes(arch: str | Sequence[int], in_features: int, num_classes: int) -> list[int]:
    """Layer sizes ``[in, hidden..., classes]`` of the MLP for ``arch`` on a dataset."""
    return [in_features, *parse_arch(arch), num_classes]


def parameter_count(sizes: Sequence[int]) -> int:
    """``d`` of a fully connected network with biases: ``sum (n_in + 1) n_out``."""
    return sum((a + 1) * b for a, b in itertools.pairwise(sizes))


def pooled_abs(H: Tensor, cells: int = 200) -> np.ndarray:
    """``|H|`` averaged over square tiles so that the result has at most ``cells`` rows (float64)."""
    cells = check_int("cells", cells, minimum=1)
    A = H.detach().abs().to(torch.float32)
    if A.shape[0] > cells:
        A = F.adaptive_avg_pool2d(A[None, None], (cells, cells))[0, 0]
    return A.to(torch.float64).cpu().numpy()


@dataclass(frozen=True)
class PhaseSnapshot:
    """Curvature statistics of one network at one training phase."""

    phase: str
    step: int
    train_loss: float
    comparison: WignerComparison
    layer_table: list[BlockMass]
    tensor_table: list[BlockMass]
    lambda_min: float
    lambda_max: float
    heatmap: np.ndarray | None = None  # pooled |H| (see pooled_abs), when requested

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase, "step": self.step, "train_loss": self.train_loss}
        out.update(self.comparison.as_dict())
        out["lambda_min"] = self.lambda_min
        out["lambda_max"] = self.lambda_max
        return out


@dataclass(frozen=True)
class NetworkAnalysis:
    """Snapshots of one network (architecture, seed) over training, with its layer layout."""

    sizes: tuple[int, ...]
    activation: str
    d: int
    seed: int
    layer_names: list[str]
    layer_bounds: list[tuple[int, int]]
    tensor_names: list[str]
    tensor_bounds: list[tuple[int, int]]
    snapshots: list[PhaseSnapshot] = field(default_factory=list)


@dataclass(frozen=True)
class Checkpoint:
    """Resumable training state after ``step`` RMSProp steps: flat weights, optimiser, sampler."""

    step: int
    params: Tensor
    optimizer_state: dict[str, Any]
    generator_state: Tensor

    @property
    def loss_is_finite(self) -> bool:
        return bool(torch.isfinite(self.params).all())


def make_mlp(sizes: Sequence[int], activation: str, seed: int, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float64) -> nn.Module:
    """The MLP of ``sizes`` with initial weights drawn from ``seed`` (global RNG left untouched)."""
    from etr_core.models import MLP

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = MLP(sizes, activation)
    return model.to(device=device, dtype=dtype)


def layout(sizes: Sequence[int], activation: str = "tanh") -> NetworkAnalysis:
    """An empty :class:`NetworkAnalysis` with the layer and tensor blocks of the MLP of ``sizes``."""
    model = make_mlp(sizes, activation, 0)
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    layers = parameter_blocks(model, "layer")
    tensors = parameter_blocks(model, "tensor")
    return NetworkAnalysis(
        sizes=tuple(sizes), activation=activation, d=parameter_count(sizes), seed=0,
        layer_names=[f"layer {linear.index(b.name) + 1 if b.name in linear else i + 1} ({b.name})"
                     for i, b in enumerate(layers)],
        layer_bounds=[(b.start, b.stop) for b in layers],
        tensor_names=[b.name for b in tensors], tensor_bounds=[(b.start, b.stop) for b in tensors],
    )


def _sampler(n: int, seed: int) -> torch.Generator:
    # the training stream starts after one permutation draw (the Hessian batch's), whatever the batch
    gen = torch.Generator().manual_seed(seed)
    torch.randperm(n, generator=gen)
    return gen


def hessian_batch(x: Tensor, y: Tensor, batch: int, seed: int) -> tuple[Tensor, Tensor]:
    """The fixed batch of the Hessian: ``batch`` examples drawn without replacement from ``seed``.

    ``batch=0`` or ``batch >= n`` takes the whole training set (the full-data Hessian).
    """
    n = int(x.shape[0])
    if batch == 0 or batch >= n:
        return x, y
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:batch].to(x.device)
    return x[idx], y[idx]


def train_checkpoints(
    sizes: Sequence[int], train_x: Tensor, train_y: Tensor, steps: Sequence[int], *,
    activation: str = "tanh", seed: int = 0, train_batch: int = 64, lr: float = 0.01,
    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
    start: Checkpoint | None = None, should_stop: Callable[[], bool] | None = None,
) -> list[Checkpoint]:
    """RMSProp (``torch.optim.RMSprop``, lr ``lr``, batches of ``train_batch``) checkpoints at ``steps``.

    Resumes from ``start`` (a checkpoint of the same network and seed, at or before the first
    requested step) when given; the weights equal those of one uninterrupted run. Returns one
    checkpoint per distinct requested step, in increasing order; stops early (returning what it
    has) when ``should_stop()`` turns true, checked every 25 steps.
    """
    wanted = sorted({check_int("step", s, minimum=0) for s in steps})
    n = int(train_x.shape[0])
    if n == 0:
        raise ValueError("train_x holds no examples")
    model = make_mlp(sizes, activation, seed, device, dtype)
    params = list(model.parameters())
    optimizer = torch.optim.RMSprop(params, lr=lr)
    gen = _sampler(n, seed)
    step = 0
    if start is not None:
        if wanted and start.step > wanted[0]:
            raise ValueError(
                f"start checkpoint at step {start.step} is after the first wanted step {wanted[0]}"
            )
        # vector_to_parameters makes the parameters views of the vector: give it a copy
        torch.nn.utils.vector_to_parameters(start.params.to(device=device, dtype=dtype, copy=True), params)
        optimizer.load_state_dict(copy.deepcopy(start.optimizer_state))
        gen.set_state(start.generator_state)
        step = start.step
    x_all = train_x.to(device=device, dtype=dtype)
    y_all = train_y.to(device=device)
    out: list[Checkpoint] = []
    for target in wanted:
        while step < target:
            if should_stop is not None and step % 25 == 0 and should_stop():
                return out
            idx = torch.randint(0, n, (min(train_batch, n),), generator=gen).to(device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            optimizer.step()
            step += 1
        out.append(Checkpoint(step, torch.nn.utils.parameters_to_vector(params).detach().clone(),
                              copy.deepcopy(optimizer.state_dict()), gen.get_state()))
    return out


def _nan_comparison(d: int) -> WignerComparison:
    nan = math.nan
    return WignerComparison(d, nan, 1.0 / d, nan, nan, nan, nan, nan)


def snapshot_at(
    sizes: Sequence[int], params: Tensor, hx: Tensor, hy: Tensor, *, activation: str = "tanh",
    phase: str = "at", step: int = 0, lanczos_iter: int = 30, heatmap_cells: int | None = None,
    seed: int = 0, max_params: int = DEFAULT_MAX_PARAMS, chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> PhaseSnapshot:
    """Exact Hessian of the mean cross entropy on ``(hx, hy)`` at the flat weights ``params``.

    The MLP of ``sizes`` gets ``params`` (dtype and device of ``params``); the result holds
    ``delta_H`` and its two Wigner baselines, the per-layer/per-tensor block masses, ``lambda_min``
    and ``lambda_max`` by ``lanczos_iter`` Lanczos steps on ``H`` (seeded by ``seed``) and, with
    ``heatmap_cells``, the pooled ``|H|``. A non-finite loss or Hessian (diverged training) gives
    NaN statistics, never numbers. ``progress(rows_done, d)`` is passed to ``exact_hessian`` (an
    exception it raises stops the computation).
    """
    check_hessian_size(int(params.numel()), max_params)
    model = make_mlp(sizes, activation, 0, params.device, params.dtype)
    torch.nn.utils.vector_to_parameters(params.clone(), model.parameters())
    H = exact_hessian(model, hx.to(params.dtype), hy, max_params=max_params, chunk_size=chunk_size,
                     progress=progress)
    matrix = H.matrix
    if not math.isfinite(H.loss) or not math.isfinite(float(matrix.sum(dtype=torch.float64))):
        return PhaseSnapshot(phase, step, H.loss, _nan_comparison(H.d), [], [], math.nan, math.nan, None)
    lanczos = lanczos_extreme_eigenvalues(
        lambda v: matrix @ v, H.d, min(lanczos_iter, H.d), seed=seed, dtype=matrix.dtype, device=matrix.device
    )
    return PhaseSnapshot(
        phase=phase, step=step, train_loss=H.loss,
        comparison=compare_with_wigner(matrix, H.tensor_blocks, H.layer_blocks),
        layer_table=block_masses(matrix, H.layer_blocks),
        tensor_table=block_masses(matrix, H.tensor_blocks),
        lambda_min=lanczos.smallest, lambda_max=lanczos.largest,
        heatmap=pooled_abs(matrix, heatmap_cells) if heatmap_cells else None,
    )


def analyse_network(
    sizes: Sequence[int], train_x: Tensor, train_y: Tensor, *, activation: str = "tanh", seed: int = 0,
    steps: int = 300, batch: int = 256, train_batch: int = 64, lr: float = 0.01,
    phases: Sequence[tuple[str, float]] = PHASES, max_params: int = DEFAULT_MAX_PARAMS,
    lanczos_iter: int = 30, heatmap_cells: int | None = None, dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu", progress: Callable[[str], None] | None = None,
) -> NetworkAnalysis:
    """Train an MLP with RMSProp for ``steps`` steps and analyse its exact Hessian at ``phases``.

    The Hessian is that of the mean cross entropy on one fixed batch of ``batch`` training examples
    (``batch=0``: the full training set), drawn from ``seed``; it is taken at each phase's step
    (fraction of ``steps``). Raises ``ValueError`` before any work when ``d`` exceeds
    ``max_params``. ``progress(message)`` is called after each Hessian. A diverged run stops at the
    first non-finite phase.
    """
    sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    check_hessian_size(parameter_count(sizes), max_params)
    steps = check_int("steps", steps, minimum=0)
    batch = check_int("batch", batch, minimum=0)
    train_batch = check_int("train_batch", train_batch, minimum=1)
    lr = check_positive("lr", lr)
    seed = check_int("seed", seed, minimum=0)
    if not phases:
        raise ValueError("phases must name at least one (name, fraction of steps) pair")
    for name, fraction in phases:
        check_closed_interval(f"phase {name!r} fraction of steps", fraction, 0.0, 1.0)
    if int(train_x.shape[0]) == 0:
        raise ValueError("train_x holds no examples")
    device = torch.device(device)
    targets = [(name, round(fraction * steps)) for name, fraction in phases]
    checkpoints = {c.step: c for c in train_checkpoints(
        sizes, train_x, train_y, [s for _, s in targets], activation=activation, seed=seed,
        train_batch=train_batch, lr=lr, dtype=dtype, device=device)}
    hx, hy = hessian_batch(train_x.to(device=device, dtype=dtype), train_y.to(device), batch, seed)
    analysis = dataclasses.replace(layout(sizes, activation), seed=seed, snapshots=[])
    done: dict[int, PhaseSnapshot] = {}
    for name, at in targets:
        if at not in done:
            done[at] = snapshot_at(sizes, checkpoints[at].params, hx, hy, activation=activation,
                                   step=at, lanczos_iter=lanczos_iter, heatmap_cells=heatmap_cells,
                                   seed=seed, max_params=max_params)
        analysis.snapshots.append(dataclasses.replace(done[at], phase=name))
        if progress is not None:
            progress(f"{name} (step {at})")
        if not math.isfinite(done[at].train_loss):
            break
    return analysis
