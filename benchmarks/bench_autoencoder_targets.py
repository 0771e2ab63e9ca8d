"""Backprops to targets below the mean-image plateau on the paper's autoencoder (Figs. 3, 4, 11).

The paper's autoencoder (784-1000-500-250-30 mirrored, sigmoid, BCE; appendix C) trained with
TR_uni, TR_ada, TR_rms under paper Table 1, TR_hess (the Hessian-diagonal ellipsoid, beyond the
paper), TR_rms under Table 1 plus the authors' first-order warm-up (and, optionally, the authors'
full preset), and the first-order baselines at batch 32 with a step size grid-searched on a
separate tuning seed. Runs use the quick protocol of ``etr reproduce`` (first 10,000 training and
2,000 test images) and its run-folder layout, so ``etr reproduce fig3|fig4|fig11 --quick --budget B
--out OUT`` draws the same finished runs.

The plateau is the training loss of predicting the mean training image (pixelwise BCE, computed from
the data); the targets are ``plateau - 0.02``, ``plateau - 0.05`` and the protocol's loss targets. A
run "left the plateau" when its full training loss went below ``plateau - 0.02``. The report gives,
per method: mean and Student-t 95% half-width of the backprops to each target ("k/N" when only k
seeds got there), the final loss, the runs that left, TR exits of the CG solver summed over seeds,
acceptance, and the ratio TR_rms / TR_uni.

    python3 benchmarks/bench_autoencoder_targets.py --dataset fashion_mnist --data-root DATA \\
        --budget 800 --seeds 3 --out runs/ae --out-md ae.md

Runs go seed by seed (every method on seed 0, then seed 1, ...), finished runs are skipped and
partial ones resumed, so a killed command loses at most one checkpoint interval; ``--report-only``
writes the table from the runs that exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.config import default_gamma2
from etr_core.reproduce.protocol import Problem, problems_for
from etr_core.reproduce.runner import RunOptions, choose_step_sizes, config_for, run_folder, run_job
from etr_core.results import load_run
from etr_core.training import METHODS, TrainConfig, dataset_for

TABLE1 = dict(
    radius=1e-4, max_radius=10.0, eta1=1e-4, eta2=0.95, gamma1=1.1, krylov_tol=0.1, stop_rule="residual",
    eps=1e-10, eps_mode="paper", tiny_pred=0.0, pivot=None, l2_alpha=0.0, batch_size=512,
)
# Extra TR settings: name -> (method, TrainConfig changes). Folder name: <method>_<suffix>.
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "TR_rms+warmup": (
        "TR_rms", "warmup", {"preset": "authors", "tr_options": dict(TABLE1, gamma2=default_gamma2("rms"))}
    ),
    "TR_rms+authors": ("TR_rms", "authors", {"preset": "authors"}),
}
LABELS = {
    "TR_rms+warmup": "TR_rms, Table 1 + authors' warm-up",
    "TR_rms+authors": "TR_rms, authors' preset",
}


def plateau_loss(config: TrainConfig) -> float:
    """Pixelwise BCE of predicting the mean training image for every training image (the plateau)."""
    data = dataset_for(config)
    y = data.train_y.to(torch.float64).reshape(data.n_train, -1)
    mean = y.mean(0).clamp(1e-12, 1 - 1e-12).expand_as(y)
    return float(torch.nn.functional.binary_cross_entropy(mean, y))


def _interval(values: list[float]) -> str:
    got = [v for v in values if math.isfinite(v)]
    if not got:
        return f"not reached (0/{len(values)})"
    mean = sum(got) / len(got)
    if len(got) < 2:
        text = f"{mean:.4g}"
    else:
        sd = float(torch.tensor(got, dtype=torch.float64).std())
        text = f"{mean:.4g} ± {stats.t.ppf(0.975, len(got) - 1) * sd / math.sqrt(len(got)):.2g}"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)} reached)"


def _mean(values: list[float]) -> float:
    got = [v for v in values if math.isfinite(v)]
    return sum(got) / len(got) if got and len(got) == len(values) else math.nan


def run_stats(folder: Path, targets: list[float], left_below: float) -> dict[str, Any]:
    """What one run folder says: final/min loss, backprops to each target, TR exits and radius."""
    run = load_run(folder)
    ev, m, s = run.evals, run.metrics, run.summary or {}
    losses = ev["train_loss"].astype(float)
    reach = []
    for t in targets:
        hit = ev[losses <= t]
        reach.append(float(hit["backprops"].iloc[0]) if not hit.empty else math.nan)
    tr = m[m["phase"] == "tr"] if "phase" in m else m.iloc[0:0]
    return {
        "final": float(losses.iloc[-1]),
        "min": float(losses.min()),
        "left": bool(losses.min() < left_below),
        "reach": reach,
        "backprops": int(s.get("backprops") or 0),
        "finished": s.get("stop_reason") in ("max_backprops", "nonfinite_loss"),
        "tr_steps": len(tr),
        "accepted": float(tr["accepted"].astype(bool).mean()) if len(tr) else math.nan,
        "radius": float(tr["radius"].iloc[-1]) if len(tr) else math.nan,
        "exits": Counter(tr["exit"].dropna()) if len(tr) else Counter(),
        "hvp": int(s.get("hvp") or 0),
        "seconds": float(s.get("seconds") or 0.0),
    }


def jobs(problem: Problem, methods: list[str], options: RunOptions, step_sizes: dict[str, float]):
    """(name, seed, config, folder) in seed order, so an unfinished command still covers every method."""
    root = options.out / problem.slug
    out = []
    for seed in problem.seeds:
        for name in methods:
            if name in VARIANTS:
                method, suffix, changes = VARIANTS[name]
                cfg = dataclasses.replace(config_for(problem, method, seed, None, options), **changes)
                folder = root / f"{method}_{suffix}" / f"seed{seed}"
            else:
                lr = step_sizes.get(name)
                cfg = config_for(problem, name, seed, lr, options)
                folder = run_folder(root, name, lr, seed)
            out.append((name, seed, cfg, folder))
    return out


def report(problem: Problem, items, plateau: float, extra_targets: tuple[float, ...], command: str) -> str:
    targets = sorted({round(plateau - 0.02, 4), round(plateau - 0.05, 4), *extra_targets}, reverse=True)
    left_below = plateau - 0.02
    rows: dict[str, list[dict[str, Any]]] = {}
    detail = [
        "| method | seed | final loss | min loss | left plateau | backprops | TR steps | accepted | "
        "final radius | CG exits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seed, cfg, folder in items:
        if not (folder / "evals.jsonl").exists():
            continue
        r = run_stats(folder, targets, left_below)
        label = LABELS.get(name, name if cfg.is_tr else f"{name} (lr {cfg.lr:g}, batch 32)")
        rows.setdefault(label, []).append(r)
        exits = ", ".join(f"{k} {v}" for k, v in sorted(r["exits"].items())) or "-"
        detail.append(
            f"| {label} | {seed} | {r['final']:.4f} | {r['min']:.4f} | {'yes' if r['left'] else 'no'} | "
            f"{r['backprops']}{'' if r['finished'] else ' (unfinished)'} | {r['tr_steps'] or '-'} | "
            f"{r['accepted']:.2f} | {r['radius']:.3g} | {exits} |"
        )
    head = ["method", "seeds", "final train loss", "min train loss", "left plateau"]
    head += [f"backprops to loss {t:g}" for t in targets]
    head += ["HVPs / backprops", "train s / run", "CG exits (all seeds)"]
    lines = [
        f"Command: `{command}`",
        "",
        f"Plateau (mean training image, pixelwise BCE on the {problem.max_train or 'all'} training images): "
        f"**{plateau:.4f}**; left plateau: min training loss < {left_below:.4f}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    means: dict[str, list[float]] = {}
    for label, rs in rows.items():
        exits = sum((r["exits"] for r in rs), Counter())
        cols = [
            label, str(len(rs)), _interval([r["final"] for r in rs]), _interval([r["min"] for r in rs]),
            f"{sum(r['left'] for r in rs)}/{len(rs)}",
        ]
        cols += [_interval([r["reach"][i] for r in rs]) for i in range(len(targets))]
        bp = sum(r["backprops"] for r in rs)
        cols += [
            f"{sum(r['hvp'] for r in rs) / bp:.2f}" if bp else "-",
            f"{sum(r['seconds'] for r in rs) / len(rs):.0f}",
            ", ".join(f"{k} {v}" for k, v in sorted(exits.items())) or "-",
        ]
        lines.append("| " + " | ".join(cols) + " |")
        means[label] = [_mean([r["reach"][i] for r in rs]) for i in range(len(targets))] + [
            _mean([r["final"] for r in rs])
        ]
    if "TR_rms" in means and "TR_uni" in means:
        lines.append("")
        for i, name in enumerate([f"backprops to loss {t:g}" for t in targets] + ["final loss"]):
            a, b = means["TR_rms"][i], means["TR_uni"][i]
            value = f"{a / b:.3f}" if math.isfinite(a) and math.isfinite(b) and b > 0 else "not available"
            lines.append(f"- TR_rms / TR_uni, {name}: {value}")
    return "\n".join([*lines, "", "Per run:", "", *detail]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist", "digits"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--budget", type=int, default=800, help="backprops per run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default="TR_uni,TR_ada,TR_rms,TR_hess,TR_rms+warmup,Adam",
                   help=f"of {', '.join([*METHODS, *VARIANTS])}")
    p.add_argument("--evals", type=int, default=12, help="full evaluations per run (about; TR: 4x)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/ae_targets")
    p.add_argument("--out-md", default=None)
    p.add_argument("--report-only", action="store_true", help="write the table from existing runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS and m not in VARIANTS:
            p.error(f"--methods: unknown method {m!r}; choose from {', '.join([*METHODS, *VARIANTS])}")
    (problem,) = problems_for(
        "fig4", args.dataset, quick=True, seeds=args.seeds, budget=args.budget, networks=("autoencoder",)
    )
    problem = dataclasses.replace(problem, evals=args.evals)
    options = RunOptions(Path(args.out) / "runs", args.data_root, "cpu", args.threads, progress=False)
    plateau = plateau_loss(config_for(problem, "TR_uni", 0, None, options))
    print(f"plateau (mean image) BCE: {plateau:.4f}", flush=True)
    command = "python3 benchmarks/bench_autoencoder_targets.py " + " ".join(argv or sys.argv[1:])
    step_sizes = {} if args.report_only else choose_step_sizes(
        problem, [m for m in methods if m in METHODS], options
    )
    if args.report_only:
        import json

        path = options.out / problem.slug / "step_sizes.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        step_sizes = {k.split("@")[0]: v["chosen"] for k, v in saved.items() if k.endswith(f"@{args.budget}")}
    items = jobs(problem, methods, options, step_sizes)
    for name, seed, cfg, folder in items:
        if args.report_only or (name not in METHODS and name not in VARIANTS):
            continue
        if not cfg.is_tr and name not in step_sizes:
            continue
        t0 = time.perf_counter()
        ran = run_job(cfg, folder)
        took = time.perf_counter() - t0
        print(f"{name} seed {seed}: {'ran' if ran else 'finished earlier'} ({took:.0f} s)", flush=True)
        if args.out_md:
            Path(args.out_md).write_text(report(problem, items, plateau, problem.loss_targets, command))
    text = report(problem, items, plateau, problem.loss_targets, command)
    if args.out_md:
        Path(args.out_md).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
