"""The diagonal-dominance experiment of Fig. 2 / Fig. 6 (paper section 3.2, appendix D).

For each small architecture and each seed: build a tanh MLP, compute the exact Hessian of the loss
on a fixed batch of training data at initialisation, after half of the RMSProp steps and at the end
of training, and compare its diagonal mass ``delta_H`` with two Wigner baselines (the equal-scale
``1/d`` and the RMS-matched corrected Proposition 1). The summary reports the mean and a 95%
t-interval over seeds for every (architecture, phase), the quantity the paper plots.

RMSProp here is ``torch.optim.RMSprop``, the paper's first-order baseline, run on mini-batches of
``train_batch`` examples. Everything is seeded: the same configuration gives the same numbers (CPU).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from etr_core._validation import check_choice, check_closed_interval, check_int, check_positive
from etr_core.curvature import (
    DEFAULT_MAX_PARAMS,
    BlockMass,
    WignerComparison,
    block_masses,
    check_hessian_size,
    compare_with_wigner,
    exact_hessian,
    lanczos_extreme_eigenvalues,
)

__all__ = [
    "DATASET_DEFAULT_ARCHS",
    "PHASES",
    "HessianExperimentConfig",
    "HessianExperimentResult",
    "NetworkAnalysis",
    "PhaseSnapshot",
    "analyse_network",
    "mlp_sizes",
    "parameter_count",
    "parse_arch",
    "pooled_abs",
    "run_hessian_experiment",
    "summarize",
    "write_results",
]

PHASES: tuple[tuple[str, float], ...] = (("init", 0.0), ("middle", 0.5), ("end", 1.0))
SUMMARY_METRICS: tuple[str, ...] = (
    "delta_h", "delta_w_equal", "delta_w_rms", "ratio_equal", "ratio_rms",
    "tensor_block_mass", "layer_block_mass", "lambda_min", "lambda_max", "train_loss",
)
DATASETS: tuple[str, ...] = ("digits", "blobs", "moons", "spirals", "fashion_mnist", "mnist", "cifar10")
# Hidden widths per dataset that keep d in the exact-Hessian range (input and output sizes come
# from the data: 64-8-10 = 610 parameters on digits, 784-4-10 = 3,190 on Fashion-MNIST).
DATASET_DEFAULT_ARCHS: dict[str, tuple[str, ...]] = {
    "digits": ("8", "16-16", "32"),
    "blobs": ("16", "32-32", "64"),
    "moons": ("16", "32-32", "64"),
    "spirals": ("16", "32-32", "64"),
    "mnist": ("4", "8"),
    "fashion_mnist": ("4", "8"),
    "cifar10": ("2", "3"),
}
ProgressFn = Callable[[int, int, str], None]


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


def _phase_steps(steps: int, phases: Sequence[tuple[str, float]]) -> list[tuple[str, int]]:
    return [(name, round(frac * steps)) for name, frac in phases]


def _make_mlp(sizes: Sequence[int], activation: str, seed: int, device: torch.device, dtype: torch.dtype):
    from etr_core.models import MLP

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = MLP(sizes, activation)
    return model.to(device=device, dtype=dtype)


def _layer_label(name: str, index: int) -> str:
    return f"layer {index + 1} ({name})"


def analyse_network(
    sizes: Sequence[int],
    train_x: Tensor,
    train_y: Tensor,
    *,
    activation: str = "tanh",
    seed: int = 0,
    steps: int = 300,
    batch: int = 256,
    train_batch: int = 64,
    lr: float = 0.01,
    phases: Sequence[tuple[str, float]] = PHASES,
    max_params: int = DEFAULT_MAX_PARAMS,
    lanczos_iter: int = 30,
    heatmap_cells: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> NetworkAnalysis:
    """Train an MLP with RMSProp for ``steps`` steps and analyse its exact Hessian at ``phases``.

    The Hessian is that of the mean cross entropy on one fixed batch of ``batch`` training examples
    (``batch=0``: the full training set), drawn from ``seed``; it is taken at each phase's step
    (fraction of ``steps``). Raises ``ValueError`` before any work when ``d`` exceeds
    ``max_params``. ``progress(message)`` is called after each Hessian.
    """
    sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    d = parameter_count(sizes)
    check_hessian_size(d, max_params)
    steps = check_int("steps", steps, minimum=0)
    batch = check_int("batch", batch, minimum=0)
    train_batch = check_int("train_batch", train_batch, minimum=1)
    lr = check_positive("lr", lr)
    seed = check_int("seed", seed, minimum=0)
    if not phases:
        raise ValueError("phases must name at least one (name, fraction of steps) pair")
    for name, fraction in phases:
        check_closed_interval(f"phase {name!r} fraction of steps", fraction, 0.0, 1.0)
    n = int(train_x.shape[0])
    if n == 0:
        raise ValueError("train_x holds no examples")
    device = torch.device(device)
    x_all = train_x.to(device=device, dtype=dtype)
    y_all = train_y.to(device=device)
    gen = torch.Generator().manual_seed(seed)
    if batch == 0 or batch >= n:
        hx, hy = x_all, y_all
    else:
        idx = torch.randperm(n, generator=gen)[:batch].to(device)
        hx, hy = x_all[idx], y_all[idx]
    model = _make_mlp(sizes, activation, seed, device, dtype)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr)

    linear_names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    analysis = NetworkAnalysis(
        sizes=tuple(sizes), activation=activation, d=d, seed=seed,
        layer_names=[], layer_bounds=[], tensor_names=[], tensor_bounds=[],
    )
    targets: dict[int, list[str]] = {}
    for name, at in _phase_steps(steps, phases):
        targets.setdefault(at, []).append(name)  # steps=0 puts every phase at step 0
    step = 0
    while True:
        if step in targets:
            H = exact_hessian(model, hx, hy, max_params=max_params)
            if not analysis.layer_names:
                analysis.layer_names.extend(
                    _layer_label(b.name, linear_names.index(b.name) if b.name in linear_names else i)
                    for i, b in enumerate(H.layer_blocks)
                )
                analysis.layer_bounds.extend((b.start, b.stop) for b in H.layer_blocks)
                analysis.tensor_names.extend(b.name for b in H.tensor_blocks)
                analysis.tensor_bounds.extend((b.start, b.stop) for b in H.tensor_blocks)
            first = _snapshot(targets[step][0], step, H, lanczos_iter, heatmap_cells, seed)
            for name in targets[step]:
                analysis.snapshots.append(dataclasses.replace(first, phase=name))
                if progress is not None:
                    progress(f"{name} (step {step})")
            if not math.isfinite(H.loss):
                break
        if step >= max(targets):
            break
        idx = torch.randint(0, n, (min(train_batch, n),), generator=gen).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        loss.backward()
        optimizer.step()
        step += 1
    return analysis


def _nan_comparison(d: int) -> WignerComparison:
    nan = math.nan
    return WignerComparison(d, nan, 1.0 / d, nan, nan, nan, nan, nan)


def _snapshot(
    phase: str, step: int, H, lanczos_iter: int, heatmap_cells: int | None, seed: int
) -> PhaseSnapshot:
    matrix = H.matrix
    if not math.isfinite(H.loss) or not math.isfinite(float(matrix.sum(dtype=torch.float64))):
        # a diverged run is recorded as NaN and left out of the summary, never averaged in
        return PhaseSnapshot(phase, step, H.loss, _nan_comparison(H.d), [], [], math.nan, math.nan, None)
    comparison = compare_with_wigner(matrix, H.tensor_blocks, H.layer_blocks)
    lanczos = lanczos_extreme_eigenvalues(
        lambda v: matrix @ v, H.d, min(lanczos_iter, H.d), seed=seed, dtype=matrix.dtype, device=matrix.device
    )
    return PhaseSnapshot(
        phase=phase,
        step=step,
        train_loss=H.loss,
        comparison=comparison,
        layer_table=block_masses(matrix, H.layer_blocks),
        tensor_table=block_masses(matrix, H.tensor_blocks),
        lambda_min=lanczos.smallest,
        lambda_max=lanczos.largest,
        heatmap=pooled_abs(matrix, heatmap_cells) if heatmap_cells else None,
    )


@dataclass(frozen=True)
class HessianExperimentConfig:
    """Settings of ``etr hessian`` (Fig. 2 / Fig. 6). ``batch=0`` takes the full-data Hessian."""

    dataset: str = "digits"
    archs: tuple[str, ...] | None = None  # None: DATASET_DEFAULT_ARCHS[dataset]
    activation: str = "tanh"
    seeds: int = 10
    steps: int = 300
    batch: int = 256
    train_batch: int = 64
    lr: float = 0.01
    max_train: int | None = 10_000
    max_params: int = DEFAULT_MAX_PARAMS
    lanczos_iter: int = 30
    dtype: str = "float64"
    device: str = "cpu"
    data_root: str | None = None

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        from etr_core.models import ACTIVATIONS

        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_int("seeds", self.seeds, minimum=1, maximum=1000)
        check_int("steps", self.steps, minimum=0)
        check_int("batch", self.batch, minimum=0)
        check_int("train_batch", self.train_batch, minimum=1)
        check_positive("lr", self.lr)
        if self.max_train is not None:
            check_int("max_train", self.max_train, minimum=1)
        check_int("max_params", self.max_params, minimum=1)
        check_int("lanczos_iter", self.lanczos_iter, minimum=1)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        if self.archs is not None:
            if isinstance(self.archs, str) or len(self.archs) == 0:
                raise ValueError(
                    f"archs must be a non-empty sequence such as ('16', '16-16'), got {self.archs!r}"
                )
            for arch in self.archs:
                parse_arch(arch)
            object.__setattr__(self, "archs", tuple(str(a) for a in self.archs))

    @property
    def resolved_archs(self) -> tuple[str, ...]:
        return self.archs if self.archs is not None else DATASET_DEFAULT_ARCHS[self.dataset]


@dataclass
class HessianExperimentResult:
    """Tidy per-run rows and the per-(architecture, phase) summary with 95% intervals."""

    config: HessianExperimentConfig
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    environment: dict[str, Any]

    def frame(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def _t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95% t-interval over seeds per (dataset, arch, phase) for every metric.

    Rows whose ``delta_h`` is NaN (diverged runs) are counted in ``n_diverged`` and left out.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["arch"], row["d"], row["phase"]), []).append(row)
    order = {name: i for i, (name, _) in enumerate(PHASES)}
    out = []
    for (dataset, arch, d, phase), group in groups.items():
        ok = [r for r in group if math.isfinite(r["delta_h"])]
        entry: dict[str, Any] = {
            "dataset": dataset, "arch": arch, "d": d, "phase": phase,
            "step": group[0]["step"], "n": len(ok), "n_diverged": len(group) - len(ok),
        }
        for metric in SUMMARY_METRICS:
            mean, low, high = _t_interval([r[metric] for r in ok])
            entry[f"{metric}_mean"] = mean
            entry[f"{metric}_ci_low"] = low
            entry[f"{metric}_ci_high"] = high
        out.append(entry)
    out.sort(key=lambda e: (e["dataset"], e["d"], e["arch"], order.get(e["phase"], 99)))
    return out


def _environment(dev: torch.device) -> dict[str, Any]:
    from etr_core import __version__
    from etr_core.devices import describe_device

    return {
        "etr": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": describe_device(dev),
    }


def run_hessian_experiment(
    config: HessianExperimentConfig, progress: ProgressFn | None = None
) -> HessianExperimentResult:
    """Run Fig. 2 / Fig. 6 for every architecture and seed of ``config`` (section 3.2).

    Every architecture's size is checked against ``max_params`` before anything runs.
    ``progress(done, total, message)`` is called after every Hessian (``total`` = archs x seeds x 3).
    """
    from etr_core.data import load_dataset
    from etr_core.devices import device as pick_device

    dev = pick_device(config.device)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    ds = load_dataset(config.dataset, config.data_root, seed=0, max_train=config.max_train)
    in_features = int(np.prod(ds.input_shape))
    plans = []
    for arch in config.resolved_archs:
        sizes = mlp_sizes(arch, in_features, ds.num_classes)
        d = parameter_count(sizes)
        try:
            check_hessian_size(d, config.max_params)
        except ValueError as err:
            layout = "-".join(map(str, sizes))
            raise ValueError(f"arch {arch!r} on {config.dataset} ({layout}): {err}") from None
        plans.append((arch, sizes, d))
    total = len(plans) * config.seeds * len(PHASES)
    done = 0
    rows: list[dict[str, Any]] = []
    for arch, sizes, d in plans:
        for seed in range(config.seeds):
            def tick(message: str, arch=arch, seed=seed) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total, f"{arch} seed {seed}: {message}")

            analysis = analyse_network(
                sizes, ds.train_x, ds.train_y, activation=config.activation, seed=seed,
                steps=config.steps, batch=config.batch, train_batch=config.train_batch, lr=config.lr,
                max_params=config.max_params, lanczos_iter=config.lanczos_iter, dtype=dtype, device=dev,
                progress=tick,
            )
            for snap in analysis.snapshots:
                rows.append({"dataset": config.dataset, "arch": arch, "sizes": "-".join(map(str, sizes)),
                             "d": d, "seed": seed, **snap.row()})
            # a diverged run stops early: count its missing phases as done
            missing = len(PHASES) - len(analysis.snapshots)
            for _ in range(missing):
                tick("diverged")
    return HessianExperimentResult(config, rows, summarize(rows), _environment(dev))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(result: HessianExperimentResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``rows.csv``, ``summary.csv``, ``results.json`` and ``figure.html`` into ``out_dir``.

    Non-finite numbers are written as empty CSV cells and JSON ``null`` (never as a number).
    """
    import pandas as pd

    from etr_core.viz.hessian_plots import phase_bars

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows": out / "rows.csv", "summary": out / "summary.csv",
        "json": out / "results.json", "figure": out / "figure.html",
    }
    pd.DataFrame(result.rows).to_csv(paths["rows"], index=False)
    pd.DataFrame(result.summary).to_csv(paths["summary"], index=False)
    payload = {
        "config": dataclasses.asdict(result.config),
        "environment": result.environment,
        "baselines": {
            "delta_w_equal": "corrected Proposition 1 with sigma_off = sigma_diag, i.e. 1/d",
            "delta_w_rms": "corrected Proposition 1 with sigma_off, sigma_diag = RMS of the Hessian's "
            "off-diagonal / diagonal entries",
        },
        "rows": result.rows,
        "summary": result.summary,
    }
    paths["json"].write_text(json.dumps(_json_safe(payload), indent=1, allow_nan=False))
    fig = phase_bars(result.summary)
    fig.write_html(paths["figure"], include_plotlyjs=True, full_html=True)
    return paths
