"""The diagonal-dominance experiment of Fig. 2 / Fig. 6 (paper section 3.2, appendix D).

For each small architecture and each seed: build a tanh MLP, compute the exact Hessian of the loss
on a fixed batch of training data at initialisation, after half of the RMSProp steps and at the end
of training, and compare its diagonal mass ``delta_H`` with two Wigner baselines (the equal-scale
``1/d`` and the RMS-matched corrected Proposition 1). The summary reports the mean and a 95%
t-interval over seeds for every (architecture, phase), the quantity the paper plots.

One network at a time is :mod:`etr_core.hessian_analysis`; this module runs the grid of
architectures and seeds, summarises it and writes the files. RMSProp here is
``torch.optim.RMSprop``, the paper's first-order baseline, run on mini-batches of ``train_batch``
examples. Everything is seeded: the same configuration gives the same numbers (CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from etr_core._validation import check_choice, check_int, check_positive
from etr_core.curvature import DEFAULT_MAX_PARAMS, check_hessian_size
from etr_core.hessian_analysis import (
    PHASES,
    NetworkAnalysis,
    PhaseSnapshot,
    analyse_network,
    mlp_sizes,
    parameter_count,
    parse_arch,
    pooled_abs,
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
