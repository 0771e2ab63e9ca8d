"""Wall time of one epoch: TR_rms at batch 512 (paper Table 1) against SGD at batch 32 (section 5).

Model: the paper's 784-128-10 tanh MLP with cross entropy. Data: synthetic MNIST-shaped inputs in
[0, 1] labelled by a fixed random teacher network, so the task is learnable and needs no download.
TR_rms uses ``EllipsoidalTR`` with Table 1 defaults (radius 1e-4, kappa 0.1, K = 50); SGD uses
``torch.optim.SGD(lr=0.05)``. Both see every sample once, in the same seeded order. The script
reports seconds per epoch, their ratio, the backprop-equivalents each method spent and the
full-data training loss after the epoch.

    python3 benchmarks/bench_epoch.py --threads 2 --n 60000
"""

from __future__ import annotations

import argparse
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
    t0 = time.perf_counter()
    for start in range(0, X.shape[0] - batch + 1, batch):
        idx = order[start : start + batch]
        xb, yb = X[idx], y[idx]
        opt.step(lambda xb=xb, yb=yb: nn.functional.cross_entropy(model(xb), yb))
    if X.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    c = opt.counters
    return {
        "seconds": seconds,
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
    t0 = time.perf_counter()
    for start in range(0, X.shape[0] - batch + 1, batch):
        idx = order[start : start + batch]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        steps += 1
    if X.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "steps": steps,
        "backprops": steps,
        "forward": steps,
        "hvp": 0,
        "accepted": steps,
        "loss": full_loss(model, X, y),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=60000, help="training-set size (MNIST: 60000)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    X, y = synthetic_mnist(args.n, args.seed, device)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, n = {args.n}, "
        f"initial loss {full_loss(make_model(args.seed, device), X, y):.4f}"
    )
    tr = epoch_tr(X, y, 512, args.seed, device)
    sgd = epoch_sgd(X, y, 32, args.seed, device, args.lr)
    print("| method | batch | steps | backprops (grad + HVP) | seconds | loss after 1 epoch |")
    print("|---|---|---|---|---|---|")
    print(
        f"| TR_rms | 512 | {tr['steps']} | {tr['backprops']} ({tr['hvp']} HVP) | {tr['seconds']:.2f} | "
        f"{tr['loss']:.4f} |"
    )
    print(
        f"| SGD lr={args.lr} | 32 | {sgd['steps']} | {sgd['backprops']} | {sgd['seconds']:.2f} | "
        f"{sgd['loss']:.4f} |"
    )
    print(
        f"TR_rms epoch / SGD epoch = {tr['seconds'] / sgd['seconds']:.2f}; "
        f"TR accepted {tr['accepted']}/{tr['steps']} steps"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
