"""Beyond the paper: the Hessian-diagonal ellipsoid (TR_hess) and ellipsoidal cubic regularisation
(ARC_rms) against the paper's TR_uni / TR_ada / TR_rms, in backprops (the estimator's Hessian-vector
products included: every product is one backprop).

Two questions, each its own mode:

* ``--task targets``: backprops to fixed full-training-loss targets and to 99% training accuracy on
  the digits MLP (``mlp_small``, paper Table 1 defaults for TR; ARC with CGT 2011's constants), mean
  and 95% t-interval over seeds ("k/N" when only k seeds got there);
* ``--task plateau``: the digits autoencoder (``autoencoder_small``), whose Table 1 TR runs sit on the
  mean-image plateau (full training loss ~0.424): the final loss after ``--budget`` backprops and
  whether it went below ``--plateau``.

    python3 benchmarks/bench_beyond_paper.py --task targets --seeds 5 --budget 800
    python3 benchmarks/bench_beyond_paper.py --task plateau --seeds 0,1,2 --budget 20000

Both print a markdown table (and ``--out-md`` writes it). ``--dataset fashion_mnist --model mlp_paper``
with ``ETR_DATA`` or ``--data-root`` runs the same on Fashion-MNIST (reconstructed split).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.training import TrainConfig, train

METHODS = ("TR_uni", "TR_ada", "TR_rms", "TR_hess", "ARC_rms")


def _first(evals: list[dict[str, Any]], ok) -> float:
    for e in evals:
        if ok(e):
            return float(e["backprops"])
    return math.nan


def _interval(values: list[float]) -> str:
    got = [v for v in values if math.isfinite(v)]
    if not got:
        return f"0/{len(values)}"
    mean = sum(got) / len(got)
    if len(got) < 2:
        text = f"{mean:.0f}"
    else:
        sd = float(torch.tensor(got, dtype=torch.float64).std())
        half = stats.t.ppf(0.975, len(got) - 1) * sd / math.sqrt(len(got))
        text = f"{mean:.0f} ± {half:.0f}"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)})"


def _run(method: str, seed: int, args: argparse.Namespace, **limits: Any) -> dict[str, Any]:
    cfg = TrainConfig(
        dataset=args.dataset, model=args.model, method=method, seed=seed, eval_every=args.eval_every,
        device="cpu", num_threads=args.threads, data_root=args.data_root, max_steps=None,
        data_options={"max_train": args.max_train} if args.max_train else {}, **limits,
    )
    start = time.perf_counter()
    result = train(cfg)
    return {"evals": result.evals, "summary": result.summary, "seconds": time.perf_counter() - start}


def targets(args: argparse.Namespace) -> str:
    loss_targets = [float(t) for t in args.loss_targets.split(",")]
    rows = ["| method | " + " | ".join(f"backprops to loss {t:g}" for t in loss_targets)
            + " | backprops to 99% train acc | final train loss | HVPs / backprops | s / run |",
            "|---" * (len(loss_targets) + 5) + "|"]
    for method in args.methods.split(","):
        limit = {"max_backprops": args.budget} if args.budget else {"max_epochs": args.max_epochs}
        runs = [_run(method, s, args, **limit) for s in range(args.seeds)]
        cols = [_interval([_first(r["evals"], lambda e, t=t: e["train_loss"] <= t) for r in runs])
                for t in loss_targets]
        cols.append(_interval([_first(r["evals"], lambda e: e["train_acc"] >= 0.99) for r in runs]))
        final = [r["evals"][-1]["train_loss"] for r in runs]
        share = sum(r["summary"]["hvp"] for r in runs) / sum(r["summary"]["backprops"] for r in runs)
        secs = sum(r["seconds"] for r in runs) / len(runs)
        rows.append(f"| {method} | " + " | ".join(cols)
                    + f" | {sum(final) / len(final):.4f} | {share:.2f} | {secs:.1f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def plateau(args: argparse.Namespace) -> str:
    rows = ["| method | seed | final train loss | min train loss | escaped (< plateau) | steps | accepted "
            "| backprops | s |", "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = _run(method, seed, args, max_backprops=args.budget)
            losses = [e["train_loss"] for e in r["evals"]]
            s = r["summary"]
            rows.append(f"| {method} | {seed} | {losses[-1]:.4f} | {min(losses):.4f} | "
                        f"{'yes' if min(losses) < args.plateau else 'no'} | {s['step']} | {s['accepted']} | "
                        f"{s['backprops']} | {r['seconds']:.0f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("targets", "plateau"), default="targets")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default=None, help="targets: a count (5); plateau: a list (0,1,2)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default=None, help="mlp_small (targets) / autoencoder_small (plateau)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-epochs", type=float, default=30.0)
    p.add_argument("--loss-targets", default="0.1,0.03")
    p.add_argument("--budget", type=int, default=None,
                   help="backprops per run (plateau: default 20000; targets: instead of --max-epochs)")
    p.add_argument("--plateau", type=float, default=0.40)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-md", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.task == "targets":
        args.seeds = int(args.seeds or 5)
        args.model = args.model or "mlp_small"
        table = targets(args)
    else:
        args.seeds = args.seeds or "0,1,2"
        args.model = args.model or "autoencoder_small"
        args.budget = args.budget or 20000
        table = plateau(args)
    if args.out_md:
        Path(args.out_md).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
