"""ARC_rms's initial sigma and sigma-update constants on the digits MLP: backprops to 99% training accuracy.

``etr_core.arc.EllipsoidalARC`` starts at ``sigma = 1`` with Cartis, Gould & Toint's (2011, section 7)
constants ``eta1 = 0.1, eta2 = 0.9, gamma1 = gamma2 = 2``. This script trains ``mlp_small`` on digits
(batch 512, float32, full training set evaluated after every step) with ARC_rms over a grid of initial
sigma (``--sigmas``, and ``auto``: :func:`etr_core.arc.cauchy_sigma` at the first step) and of the
update constants (``--constants``, ``eta2/gamma1/gamma2`` triples at ``--constants-sigma``), and prints,
per setting, the backprops (gradient backprops plus every Hessian-vector product) to 99% training
accuracy over ``--seeds`` (mean, the seeds' values), the share of rejected steps in the first 20 steps
and the sigma at the end (runs stop at the target).

    python3 benchmarks/bench_arc_sigma.py --seeds 0,1,2 --budget 1500

``--dataset fashion_mnist --model mlp_paper --data-root DATA --max-train 10000 --loss-target 0.7`` runs the
same on the Fashion-MNIST MLP (reconstructed split), to a training-loss target.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import etr_core.arc as arc_module
from etr_core.training import TrainConfig, train


@contextlib.contextmanager
def arc_options(**options: Any):
    """Make ``train`` build its EllipsoidalARC with ``options`` added (the trainer passes no sigma)."""
    saved = arc_module.EllipsoidalARC

    class WithOptions(saved):  # type: ignore[misc, valid-type]
        def __init__(self, params, ellipsoid=None, **kwargs):
            super().__init__(params, ellipsoid, **{**kwargs, **options})

    arc_module.EllipsoidalARC = WithOptions
    try:
        yield
    finally:
        arc_module.EllipsoidalARC = saved


def one_run(seed: int, args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    cfg = TrainConfig(dataset=args.dataset, model=args.model, method="ARC_rms", seed=seed,
                      max_backprops=args.budget, max_steps=None, eval_every=args.eval_every, device="cpu",
                      num_threads=1, data_root=args.data_root,
                      data_options={"max_train": args.max_train} if args.max_train else {})

    def hit_target(e: dict[str, Any]) -> bool:
        if args.loss_target is not None:
            return e["train_loss"] <= args.loss_target
        return e["train_acc"] >= 0.99

    steps: list[dict[str, Any]] = []
    reached = threading.Event()  # the run stops at the target: the rest of the budget is not needed

    def on_record(rec: dict[str, Any]) -> None:
        if rec.get("event") == "step":
            steps.append({"accepted": rec.get("accepted"), "radius": rec.get("radius")})
        elif rec.get("event") == "eval" and hit_target(rec):
            reached.set()

    start = time.perf_counter()
    with arc_options(**options):
        result = train(cfg, callbacks=[on_record], stop_event=reached)
    hit = next((e["backprops"] for e in result.evals if hit_target(e)), math.nan)
    first = steps[:20]
    return {"backprops": hit, "rejected20": sum(not s["accepted"] for s in first) / max(1, len(first)),
            "sigma_end": steps[-1]["radius"] if steps else math.nan, "seconds": time.perf_counter() - start,
            "final_loss": result.evals[-1]["train_loss"]}


def row(label: str, runs: list[dict[str, Any]]) -> str:
    hits = [r["backprops"] for r in runs]
    got = [h for h in hits if math.isfinite(h)]
    share = "" if len(got) == len(hits) else f" ({len(got)}/{len(hits)})"
    mean = f"{statistics.fmean(got):.0f}{share}" if got else f"0/{len(hits)}"
    return (f"| {label} | {mean} | "
            f"{', '.join('-' if not math.isfinite(h) else f'{h:.0f}' for h in hits)} | "
            f"{statistics.fmean(r['rejected20'] for r in runs):.2f} | "
            f"{statistics.median(r['sigma_end'] for r in runs):.3g} | "
            f"{statistics.fmean(r['final_loss'] for r in runs):.4f} | "
            f"{statistics.fmean(r['seconds'] for r in runs):.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=1500)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp_small")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--loss-target", type=float, default=None,
                   help="measure backprops to this full training loss instead of 99%% training accuracy")
    p.add_argument("--sigmas", default="0.01,0.1,1,10,100,auto")
    p.add_argument("--constants", default="0.75/2/2,0.9/3/3,0.9/2/4,0.9/4/2",
                   help="eta2/gamma1/gamma2 triples, each run at --constants-sigma (blank: none)")
    p.add_argument("--constants-sigma", default="auto", help="initial sigma of the --constants runs")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| setting | backprops to the target (mean) | per seed | rejected, first 20 steps "
          "| sigma at the end (median) | train loss at the end | s / run |\n" + "|---" * 7 + "|", flush=True)
    for sigma in filter(None, args.sigmas.split(",")):
        options = {"sigma": "auto" if sigma == "auto" else float(sigma)}
        print(row(f"sigma0 {sigma}", [one_run(s, args, options) for s in seeds]), flush=True)
    for triple in filter(None, args.constants.split(",")):
        eta2, gamma1, gamma2 = (float(v) for v in triple.split("/"))
        sigma = args.constants_sigma
        options = {"eta2": eta2, "gamma1": gamma1, "gamma2": gamma2,
                   "sigma": "auto" if sigma == "auto" else float(sigma)}
        print(row(f"sigma0 {sigma}, eta2 {eta2:g}, gamma1 {gamma1:g}, gamma2 {gamma2:g}",
                  [one_run(s, args, options) for s in seeds]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
