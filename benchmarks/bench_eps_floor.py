"""The ellipsoid's floor ``m >= sqrt(eps)``: TR_ada / TR_rms with eps = 1e-10 against 1e-16.

With ``eps_mode="paper"`` the diagonal is ``m = sqrt(v + eps)``. Table 1 gives no eps; 1e-10 puts the
floor at 1e-5, 1,000 times torch's RMSprop/Adam floor (``sqrt(v) + 1e-8``). Where gradients are far
below the floor (the autoencoder's inner layers on the mean-image plateau) every entry of ``m`` is
the floor and the region is a sphere there. This script measures, per eps:

* ``--task targets``: backprops to training-loss targets and to 99% training accuracy (mean and
  Student-t 95% interval over seeds), final loss;
* ``--task plateau``: whether each run leaves the autoencoder's mean-image plateau (loss < 0.40 on
  digits) within the budget.

    python3 benchmarks/bench_eps_floor.py --task targets --seeds 5
    python3 benchmarks/bench_eps_floor.py --task plateau --seeds 0,1,2 --budget 6000 \\
        --model autoencoder_small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_beyond_paper import _first, _interval

from etr_core.training import TrainConfig, train


def _run(method: str, eps: float, seed: int, args: argparse.Namespace, **limits):
    cfg = TrainConfig(
        dataset=args.dataset, model=args.model, method=method, seed=seed, eval_every=args.eval_every,
        device="cpu", num_threads=1, data_root=args.data_root, max_steps=None,
        data_options={"max_train": args.max_train} if args.max_train else {},
        tr_options={"eps": eps}, **limits,
    )
    return train(cfg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("targets", "plateau"), default="targets")
    p.add_argument("--methods", default="TR_ada,TR_rms")
    p.add_argument("--eps", default="1e-10,1e-16")
    p.add_argument("--seeds", default="5", help="targets: a count; plateau: a list")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp_small")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-epochs", type=float, default=30.0)
    p.add_argument("--budget", type=int, default=None, help="backprops per run")
    p.add_argument("--loss-targets", default="0.1,0.03")
    p.add_argument("--plateau", type=float, default=0.40)
    p.add_argument("--eval-every", type=int, default=1)
    args = p.parse_args(argv)
    limit = {"max_backprops": args.budget} if args.budget else {"max_epochs": args.max_epochs}
    if args.task == "targets":
        targets = [float(t) for t in args.loss_targets.split(",")]
        print("| method | eps | " + " | ".join(f"backprops to loss {t:g}" for t in targets)
              + " | backprops to 99% train acc | final train loss |")
        print("|---" * (len(targets) + 4) + "|")
        for method in args.methods.split(","):
            for eps in (float(e) for e in args.eps.split(",")):
                runs = [_run(method, eps, s, args, **limit) for s in range(int(args.seeds))]
                cols = [_interval([_first(r.evals, lambda e, t=t: e["train_loss"] <= t) for r in runs])
                        for t in targets]
                cols.append(_interval([_first(r.evals, lambda e: e["train_acc"] >= 0.99) for r in runs]))
                final = sum(r.evals[-1]["train_loss"] for r in runs) / len(runs)
                print(f"| {method} | {eps:g} | " + " | ".join(cols) + f" | {final:.4f} |", flush=True)
    else:
        print("| method | eps | seed | final train loss | min train loss | left the plateau | backprops |")
        print("|---|---|---|---|---|---|---|")
        for method in args.methods.split(","):
            for eps in (float(e) for e in args.eps.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    r = _run(method, eps, seed, args, **limit)
                    losses = [e["train_loss"] for e in r.evals]
                    print(f"| {method} | {eps:g} | {seed} | {losses[-1]:.4f} | {min(losses):.4f} | "
                          f"{'yes' if min(losses) < args.plateau else 'no'} | {r.summary['backprops']} |",
                          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
