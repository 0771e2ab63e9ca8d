"""Does the paper's claim hold here? Ellipsoidal vs spherical TR, and TR vs first-order methods.

Paper, section 5: (1) the ellipsoidal TR methods (TR_ada, TR_rms) reach full training accuracy
substantially faster than the spherical TR_uni and reach lower losses (Fig. 3); (2) against
first-order methods at batch 32 with grid-searched step sizes, ellipsoidal TR "can be slightly
superior in terms of backprops but at best manage to keep pace ... in terms of epochs" (Figs. 4, 9);
(3) first-order methods are cheaper per unit of time (Fig. 10).

Protocol (the paper's, scaled to a CPU): TR_uni / TR_ada / TR_rms with paper Table 1 defaults
(batch 512); SGD / Adagrad / RMSprop / Adam at batch 32 (and 128) whose step size is chosen from a
grid by the mean final training loss over separate tuning seeds; then every configuration runs on
``--seeds`` evaluation seeds (model init, batch order and train/test split all follow the seed).
Reported per configuration: backprops and epochs to reach fixed full-training-loss targets and 99%
training accuracy (mean and 95% t-interval over seeds; "k/N" when only k seeds got there), final
losses, and training seconds per epoch. Writes a markdown table and Plotly HTML figures.

    python3 benchmarks/bench_claim.py --seeds 10 --workers 2 --out-md claim.md --out-html figures/claim

Fashion-MNIST is added when its files are present (``--data-root``; see etr_core.data).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.training import METHODS, TrainConfig, train

TR_METHODS = ("TR_uni", "TR_ada", "TR_rms")
FO_METHODS = ("SGD", "Adagrad", "RMSprop", "Adam")


@dataclass
class RunView:
    """The parts of a run the figure and table builders read (same names as results.LoadedRun)."""

    label: str
    method: str
    config: dict[str, Any]
    evals: pd.DataFrame
    metrics: pd.DataFrame
    summary: dict[str, Any]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration in memory; return its evaluations and summary."""
    cfg = TrainConfig(**job["config"])
    t0 = time.perf_counter()
    result = train(cfg)
    keep = ("step", "backprops", "epoch", "seconds", "train_loss", "train_acc", "test_loss", "test_acc")
    evals = [{k: e[k] for k in keep} for e in result.evals]
    return {
        "label": job["label"],
        "config": job["config"],
        "evals": evals,
        "summary": result.summary,
        "wall": time.perf_counter() - t0,
    }


def _config(
    args: argparse.Namespace, dataset: str, method: str, seed: int, batch: int | None, lr: float | None
) -> dict[str, Any]:
    n_train = {"digits": 1437}.get(dataset, 60000)
    bs = batch if batch is not None else 512
    eval_every = max(1, round(n_train / bs / args.evals_per_epoch))
    return dict(
        dataset=dataset,
        model=args.model if dataset == "digits" else args.model_large,
        method=method,
        seed=seed,
        batch_size=batch,
        lr=lr,
        max_steps=None,
        max_epochs=args.max_epochs,
        eval_every=eval_every,
        device=args.device,
        data_root=args.data_root,
        checkpoint_every=10**9,
    )


def _label(method: str, batch: int | None, lr: float | None) -> str:
    if lr is None:
        return method
    return f"{method} b{batch} (lr={lr:g})"


def _run_all(jobs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.workers <= 1:
        _init_worker(args.threads)
        return [run_job(j) for j in jobs]
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        args.workers, mp_context=ctx, initializer=_init_worker, initargs=(args.threads,)
    ) as pool:
        return list(pool.map(run_job, jobs))


def _views(outputs: list[dict[str, Any]]) -> list[RunView]:
    return [
        RunView(
            o["label"],
            o["config"]["method"],
            o["config"],
            pd.DataFrame(o["evals"]),
            pd.DataFrame(),
            o["summary"],
        )
        for o in outputs
    ]


def _cell(values: pd.Series) -> str:
    vals = values.astype(float).to_numpy()
    reached = int((~pd.isna(vals)).sum())
    if reached < len(vals):
        if reached == 0:
            return f"never (0/{len(vals)})"
        sub = vals[~pd.isna(vals)]
        return f"{sub.mean():.4g} ({reached}/{len(vals)} reached)"
    from etr_core.viz.training_plots import mean_and_ci

    mean, low, _ = mean_and_ci(vals[:, None])
    return f"{mean[0]:.4g} ± {mean[0] - low[0]:.2g}"


def collect(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """Grid search on tuning seeds, then every configuration on the evaluation seeds (raw results)."""
    tune_seeds = list(range(1000, 1000 + args.tune_seeds))
    seeds = list(range(args.seeds))
    fo_batches = [int(b) for b in args.fo_batch_sizes.split(",")]
    tune_jobs = [
        {"label": _label(m, b, lr), "config": _config(args, dataset, m, s, b, lr)}
        for m in FO_METHODS
        for b in fo_batches
        for lr in METHODS[m].lr_grid
        for s in tune_seeds
    ]
    t0 = time.perf_counter()
    tuned = _run_all(tune_jobs, args)
    grid: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    for m in FO_METHODS:
        for b in fo_batches:
            scores = {}
            for lr in METHODS[m].lr_grid:
                losses = [o["summary"]["train_loss"] for o in tuned if o["label"] == _label(m, b, lr)]
                finite = [v for v in losses if v is not None and math.isfinite(v)]
                scores[lr] = sum(finite) / len(finite) if len(finite) == len(losses) else math.inf
            chosen = min(scores, key=scores.get)
            best[f"{m}/{b}"] = chosen
            grid.append({"method": m, "batch": b, "scores": scores, "chosen": chosen})
    tune_seconds = time.perf_counter() - t0
    jobs = [
        {"label": _label(m, None, None), "config": _config(args, dataset, m, s, None, None)}
        for m in TR_METHODS
        for s in seeds
    ]
    jobs += [
        {"label": _label(m, b, best[f"{m}/{b}"]), "config": _config(args, dataset, m, s, b, best[f"{m}/{b}"])}
        for m in FO_METHODS
        for b in fo_batches
        for s in seeds
    ]
    t0 = time.perf_counter()
    outputs = _run_all(jobs, args)
    order = [_label(m, None, None) for m in TR_METHODS] + [
        _label(m, b, best[f"{m}/{b}"]) for m in FO_METHODS for b in fo_batches
    ]
    return {
        "dataset": dataset,
        "model": jobs[0]["config"]["model"],
        "max_epochs": args.max_epochs,
        "seeds": seeds,
        "tune_seeds": tune_seeds,
        "grid": grid,
        "order": order,
        "runs": outputs,
        "tune_seconds": tune_seconds,
        "eval_seconds": time.perf_counter() - t0,
        "workers": args.workers,
        "threads": args.threads,
        "device": args.device,
        "host_cpus": os.cpu_count(),
    }


def report(raw: dict[str, Any], targets: list[float], html_stem: str) -> str:
    """Markdown table and Plotly figures from the raw results of :func:`collect`."""
    import numpy as np

    from etr_core.viz.training_plots import first_reach, loss_curves, runs_frame

    views = _views(raw["runs"])
    frame = runs_frame(views, targets=targets)
    # a budget every run reached: the loss there compares methods at equal cost (paper Fig. 4)
    budget = min(float(v.evals["backprops"].max()) for v in views)
    frame["loss_at_budget"] = [
        float(np.interp(budget, v.evals["backprops"].to_numpy(float), v.evals["train_loss"].to_numpy(float)))
        for v in views
    ]
    frame["seconds_to_acc0.99"] = [first_reach(v, "seconds") for v in views]
    cols = [
        "backprops_to_acc0.99",
        "epoch_to_acc0.99",
        "seconds_to_acc0.99",
        *(f"{x}_to_loss{t:g}" for t in targets for x in ("backprops", "epoch")),
        "loss_at_budget",
    ]
    header = [
        "configuration",
        "runs",
        "final train loss",
        "final test acc",
        "backprops to 99% train acc",
        "epochs to 99% train acc",
        "train seconds to 99% train acc",
        *(f"{x} to loss {t:g}" for t in targets for x in ("backprops", "epochs")),
        f"train loss at {budget:.0f} backprops",
        "train s / epoch",
    ]
    lines = [
        f"### {raw['dataset']} ({raw['model']}, {raw['max_epochs']:g} epochs per run, "
        f"{len(raw['seeds'])} seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label in raw["order"]:
        g = frame[frame["label"] == label]
        row = [
            label,
            str(len(g)),
            _cell(g["train_loss"]),
            _cell(g["test_acc"]),
            *(_cell(g[c]) for c in cols),
            _cell(g["seconds_per_epoch"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Step-size grid (mean final training loss over {len(raw['tune_seeds'])} tuning seeds "
        f"{raw['tune_seeds']}; chosen in bold):",
        "",
        "| method | batch | step size: loss | chosen |",
        "|---|---|---|---|",
    ]
    for g in raw["grid"]:
        scores = ", ".join(f"{float(lr):g}: {v:.3g}" for lr, v in g["scores"].items())
        lines.append(f"| {g['method']} | {g['batch']} | {scores} | **{g['chosen']:g}** |")
    lines += [
        "",
        f"Wall time: grid search {raw['tune_seconds']:.0f} s, evaluation runs {raw['eval_seconds']:.0f} s "
        f"({raw['workers']} worker process(es) x {raw['threads']} thread(s) on a "
        f"{raw['host_cpus']}-CPU host, "
        f"device {raw['device']}).",
        "",
    ]
    for x in ("backprops", "epoch", "seconds"):
        fig = loss_curves(views, x=x, title=f"{raw['dataset']}: training loss vs {x} (mean, 95% CI)")
        path = Path(f"{html_stem}_{raw['dataset']}_{x}.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(path, include_plotlyjs="cdn")
        lines.append(f"Figure: `{path}`")
    return "\n".join(lines)


def write_synthetic_fashion_mnist(root: Path, seed: int = 0) -> None:
    """60,000 + 10,000 synthetic 28x28 images (10 noisy class prototypes) in the IDX format, for
    measuring cost at the paper's scale where the real files are absent. Losses on it mean nothing."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "fashion_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    protos = rng.integers(0, 256, size=(10, 28, 28))

    def write(path: Path, arr: np.ndarray) -> None:
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
        with gzip.open(path, "wb", compresslevel=1) as handle:
            handle.write(header + arr.astype(np.uint8).tobytes())

    for split, n in (("train", 60000), ("t10k", 10000)):
        y = rng.integers(0, 10, size=n)
        x = np.clip(protos[y] * 0.6 + rng.integers(0, 100, size=(n, 28, 28)), 0, 255)
        write(folder / f"{split}-images-idx3-ubyte.gz", x)
        write(folder / f"{split}-labels-idx1-ubyte.gz", y)


def epoch_cost(args: argparse.Namespace) -> str:
    """One epoch of the paper's Fashion-MNIST MLP per method: steps, exact counters, training seconds."""
    import tempfile

    root = args.data_root
    if args.synthetic:
        root = tempfile.mkdtemp(prefix="etr-synthetic-")
        write_synthetic_fashion_mnist(Path(root))
    lines = [
        "| method | steps | gradient backprops | HVPs | backprops | training seconds for the epoch |",
        "|---|---|---|---|---|---|",
    ]
    for method, batch in (("TR_rms", None), ("TR_uni", None), ("Adam", 32), ("SGD", 32)):
        cfg = TrainConfig(
            dataset="fashion_mnist",
            model=args.model_large,
            method=method,
            batch_size=batch,
            max_steps=None,
            max_epochs=1.0,
            eval_every=10**9,
            checkpoint_every=10**9,
            device=args.device,
            data_root=root,
        )
        s = train(cfg).summary
        name = f"{method} (batch {batch or 512})"
        lines.append(
            f"| {name} | {s['step']} | {s['backward']} | {s['hvp']} | {s['backprops']} | {s['seconds']:.2f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--tune-seeds", type=int, default=2)
    p.add_argument("--max-epochs", type=float, default=30.0)
    p.add_argument("--evals-per-epoch", type=float, default=3.0)
    p.add_argument("--fo-batch-sizes", default="32,128")
    p.add_argument("--loss-targets", default="0.1,0.03")
    p.add_argument("--model", default="mlp_small", help="model on digits")
    p.add_argument("--model-large", default="mlp_paper", help="model on Fashion-MNIST")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--raw-out", default=None, help="also save the raw results as JSON")
    p.add_argument("--from-raw", default=None, help="skip training: report from a saved raw JSON")
    p.add_argument("--out-md", default="claim.md")
    p.add_argument("--out-html", default="claim", help="stem of the HTML figures")
    p.add_argument(
        "--epoch-cost",
        action="store_true",
        help="instead: time one epoch of the Fashion-MNIST MLP per method (paper scale)",
    )
    p.add_argument(
        "--synthetic", action="store_true", help="with --epoch-cost: use synthetic Fashion-MNIST-shaped data"
    )
    args = p.parse_args(argv)
    if args.epoch_cost:
        command = "python3 benchmarks/bench_claim.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = f"Command: `{command}`\n\n" + epoch_cost(args) + "\n"
        Path(args.out_md).write_text(text)
        print(text)
        return 0
    targets = [float(t) for t in args.loss_targets.split(",")]
    command = "python3 benchmarks/bench_claim.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.from_raw:
        raws = json.loads(Path(args.from_raw).read_text())
    else:
        from etr_core.data import load_dataset

        datasets = ["digits"]
        try:
            load_dataset("fashion_mnist", args.data_root, max_train=1)
            datasets.append("fashion_mnist")
        except FileNotFoundError:
            print("fashion_mnist files not found: digits only", file=sys.stderr)
        raws = [collect(args, d) for d in datasets]
        for raw in raws:
            raw["command"] = command
        if args.raw_out:
            Path(args.raw_out).write_text(json.dumps(raws, allow_nan=True))
    sections = [f"Command: `{raws[0].get('command', command)}`", ""]
    if args.from_raw:
        sections.insert(1, f"(table and figures rendered with `{command}`)")
    try:
        for raw in raws:
            sections += [report(raw, targets, args.out_html), ""]
    except ImportError as exc:  # plotly missing on a compute host: the raw JSON is enough
        sections.append(f"report skipped ({exc}); render it with --from-raw")
    Path(args.out_md).write_text("\n".join(sections) + "\n")
    print("\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
