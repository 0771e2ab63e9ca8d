"""Wall time of one epoch: TR_rms at batch 512 (paper Table 1) against SGD at batch 32 (section 5).

Model: the paper's 784-128-10 tanh MLP with cross entropy. Data: synthetic MNIST-shaped inputs in
[0, 1] labelled by a fixed random teacher network, so the task is learnable and needs no download.
TR_rms uses ``EllipsoidalTR`` with Table 1 defaults (radius 1e-4, kappa 0.1, K = 50); SGD uses
``torch.optim.SGD(lr=0.05)``. Both see every sample once, in the same seeded order. For each thread
count the script runs ``--repeats`` pairs (one TR epoch, one SGD epoch), interleaved and alternating
which goes first, and reports the median seconds per epoch, the median TR / SGD ratio of the pairs
with its range, the same ratio in process CPU seconds (less sensitive to other load), the
backprop-equivalents each method spent and the full-data training loss after the epoch.

    python3 benchmarks/bench_epoch.py --threads 1 2 --repeats 4 --n 60000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.config import paper_table1
from etr_core.optim import EllipsoidalTR


def synthetic_mnist(n: int, seed: int = 0, device: torch.device | str = "cpu"):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 784, generator=gen)
    teacher = torch.randn(784, 10, generator=gen) / 28.0
    y = (X - 0.5).matmul(teacher).argmax(1)
    return X.to(device), y.to(device)


def make_model(seed: int, device: torch.device | str) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10)).to(device)


def full_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(X), y))


def epoch_tr(X, y, batch: int, seed: int, device) -> dict:
    model = make_model(seed, device)
    opt = EllipsoidalTR(model.parameters(), preset=paper_table1("rms"))
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed + 1)).to(X.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, X.shape[0] - batch + 1, batch):
        idx = order[start : start + batch]
        xb, yb = X[idx], y[idx]
        opt.step(lambda xb=xb, yb=yb: nn.functional.cross_entropy(model(xb), yb))
    if X.is_cuda:
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    c = opt.counters
    return {
        "seconds": seconds,
        "cpu": cpu,
        "steps": c["steps"],
        "backprops": c["backward"] + c["hvp"],
        "forward": c["forward"],
        "hvp": c["hvp"],
        "accepted": c["accepted"],
        "loss": full_loss(model, X, y),
    }


def epoch_sgd(X, y, batch: int, seed: int, device, lr: float) -> dict:
    model = make_model(seed, device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed + 1)).to(X.device)
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, X.shape[0] - batch + 1, batch):
        idx = order[start : start + batch]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        steps += 1
    if X.is_cuda:
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu": cpu,
        "steps": steps,
        "backprops": steps,
        "forward": steps,
        "hvp": 0,
        "accepted": steps,
        "loss": full_loss(model, X, y),
    }


def paired(X, y, args, device, threads: int) -> list[tuple[dict, dict]]:
    """``--repeats`` pairs of one TR epoch and one SGD epoch at ``threads`` threads, interleaved and in
    alternating order (TR first, then SGD first, ...) so that load drift hits both alike."""
    torch.set_num_threads(threads)
    pairs = []
    for rep in range(args.repeats):
        if rep % 2 == 0:
            tr = epoch_tr(X, y, 512, args.seed, device)
            sgd = epoch_sgd(X, y, 32, args.seed, device, args.lr)
        else:
            sgd = epoch_sgd(X, y, 32, args.seed, device, args.lr)
            tr = epoch_tr(X, y, 512, args.seed, device)
        pairs.append((tr, sgd))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=4, help="TR/SGD pairs per thread count")
    parser.add_argument("--n", type=int, default=60000, help="training-set size (MNIST: 60000)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    X, y = synthetic_mnist(args.n, args.seed, device)
    print(
        f"torch {torch.__version__}, device {device}, n = {args.n}, load {os.getloadavg()[0]:.1f}, "
        f"initial loss {full_loss(make_model(args.seed, device), X, y):.4f}"
    )
    print("| threads | pairs | TR_rms s/epoch (median) | SGD s/epoch (median) | "
          "TR / SGD wall (median, min-max) | TR / SGD CPU (median) | TR backprops | SGD backprops | "
          "loss TR / SGD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        pairs = paired(X, y, args, device, threads)
        wall = [tr["seconds"] / sgd["seconds"] for tr, sgd in pairs]
        cpu = [tr["cpu"] / sgd["cpu"] for tr, sgd in pairs]
        tr, sgd = pairs[-1]
        print(
            f"| {threads} | {len(pairs)} | {statistics.median(p[0]['seconds'] for p in pairs):.2f} | "
            f"{statistics.median(p[1]['seconds'] for p in pairs):.2f} | {statistics.median(wall):.2f} "
            f"({min(wall):.2f}-{max(wall):.2f}) | {statistics.median(cpu):.2f} | {tr['backprops']} "
            f"({tr['hvp']} HVP) | {sgd['backprops']} | {tr['loss']:.4f} / {sgd['loss']:.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
