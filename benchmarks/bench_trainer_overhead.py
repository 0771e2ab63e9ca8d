"""Honest clocks: the trainer's training-step time against a bare PyTorch loop doing the same work.

For SGD and Adam (batch 32) and TR_rms (batch 512, Table 1) on the paper's MLP 784-128-10, each
repetition runs ``etr_core.training.train`` for ``--steps`` steps (its ``seconds`` clock covers the
training steps only) and then a bare loop: the same model, the same seeded batches, ``zero_grad``,
forward, ``backward``, ``step`` (for TR: ``EllipsoidalTR.step(closure)``), timed by one
``perf_counter`` pair. Repetitions are interleaved (trainer, bare, trainer, ...) and the script
prints the median ratio trainer / bare with its spread. Data: Fashion-MNIST (reconstructed split)
from ``--data-root`` or ``$ETR_DATA``.

    ETR_DATA=DATA python3 benchmarks/bench_trainer_overhead.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.config import paper_table1
from etr_core.data import BatchSampler, load_dataset
from etr_core.models import build_model
from etr_core.optim import EllipsoidalTR
from etr_core.training import TrainConfig, train


def trainer_seconds(method: str, steps: int, root: str, threads: int) -> float:
    cfg = TrainConfig(
        dataset="fashion_mnist", model="mlp_paper", method=method, max_steps=steps, eval_every=10**9,
        data_root=root, device="cpu", num_threads=threads,
    )
    return train(cfg).summary["seconds"]


def bare_seconds(method: str, steps: int, data) -> float:
    model = build_model("mlp_paper", data.input_shape, data.num_classes, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    tr = method.startswith("TR")
    batch = 512 if tr else 32
    sampler = BatchSampler(data.n_train, batch, seed=0)
    if tr:
        opt = EllipsoidalTR(params, preset=paper_table1("rms"))
    elif method == "Adam":
        opt = torch.optim.Adam(params, lr=1e-3)
    else:
        opt = torch.optim.SGD(params, lr=0.1)
    x_all, y_all = data.train_x, data.train_y
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = sampler.next_batch()
        xb, yb = x_all[idx], y_all[idx]
        if tr:
            opt.step(lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb))
        else:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="first-order steps (TR: a tenth)")
    parser.add_argument("--methods", nargs="+", default=["SGD", "Adam", "TR_rms"])
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    root = args.data_root or os.environ.get("ETR_DATA")
    if root is None:
        parser.error("needs Fashion-MNIST: pass --data-root or set ETR_DATA")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion_mnist", root)
    print(f"torch {torch.__version__}, threads {args.threads}, load {os.getloadavg()[0]:.1f}; "
          "Fashion-MNIST (reconstructed split), MLP 784-128-10")
    print("| method | batch | steps | trainer ms/step (median) | bare ms/step (median) | "
          "trainer / bare (median, min-max) |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        steps = max(1, args.steps // 10) if method.startswith("TR") else args.steps
        trainer_seconds(method, 5, root, args.threads)  # warm-up
        bare_seconds(method, 5, data)
        a_all, b_all, ratios = [], [], []
        for _ in range(args.repeats):
            a = trainer_seconds(method, steps, root, args.threads)
            b = bare_seconds(method, steps, data)
            a_all.append(a / steps * 1e3)
            b_all.append(b / steps * 1e3)
            ratios.append(a / b)
        batch = 512 if method.startswith("TR") else 32
        print(f"| {method} | {batch} | {steps} | {statistics.median(a_all):.3f} | "
              f"{statistics.median(b_all):.3f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
