"""Cost of one Hessian-vector product relative to one gradient (paper section 4.2, Algorithm 1).

Each product is a double backward through the one retained ``create_graph`` gradient
(``etr_core.hvp.grad_with_graph``, the path ``EllipsoidalTR`` uses).
Models (synthetic data, inline definitions):

* ``mlp``: the paper's 784-128-10 tanh MLP with cross entropy, batch 512 (goal: HVP <= 1.2 gradients);
* ``ae``: the 784-1000-500-250-30-250-500-1000-784 sigmoid autoencoder (linear code layer, logits
  out) with pixelwise BCE, batch 256 (goal: HVP <= 2.0 gradients).

Timing: all quantities of one model are measured round-robin in every repetition (order rotated),
the reported ratio is the median over repetitions of ``t_quantity / t_gradient`` within the same
repetition, so slow drift of a shared machine hits every quantity alike.

    python3 benchmarks/bench_hvp.py --threads 2 --reps 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.hvp import flat_grad, grad_with_graph, make_hvp


def mlp_task(device: torch.device, dtype: torch.dtype = torch.float32, batch: int = 512, seed: int = 0):
    """784-128-10 tanh, cross entropy, teacher-free random labels (cost does not depend on them)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(batch, 784, generator=gen).to(device=device, dtype=dtype)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10)).to(device=device, dtype=dtype)
    return model, lambda: nn.functional.cross_entropy(model(X), y)


def ae_task(device: torch.device, dtype: torch.dtype = torch.float32, batch: int = 256, seed: int = 0):
    """Hinton-Salakhutdinov autoencoder, sigmoid except at the code and output layers, BCE with logits."""
    sizes = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i not in (3, len(sizes) - 2):  # linear code layer (index 3) and logits out
            layers.append(nn.Sigmoid())
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(batch, 784, generator=gen).to(device=device, dtype=dtype)
    return model, lambda: nn.functional.binary_cross_entropy_with_logits(model(X), X)


TASKS = {"mlp": mlp_task, "ae": ae_task}
GOALS = {"mlp": 1.2, "ae": 2.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_ratios(fns: dict[str, Callable[[], object]], reps: int, device: torch.device, base: str) -> dict:
    """Median wall time of each fn and the median of per-repetition ratios to ``fns[base]``."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    sync(device)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    out = {}
    for n in names:
        ratios = [a / b for a, b in zip(times[n], times[base])]
        out[n] = {"ms": 1e3 * statistics.median(times[n]), "ratio": statistics.median(ratios)}
    return out


def measure(task: str, device: torch.device, reps: int) -> dict:
    model, closure = TASKS[task](device)
    params = list(model.parameters())
    d = sum(p.numel() for p in params)

    def gradient():
        return torch.autograd.grad(closure(), params)

    def forward():
        with torch.no_grad():
            return closure()

    graph = {}

    def build_graph():
        graph["g"], graph["hvp"] = grad_with_graph(closure(), params)

    build_graph()
    flat_hvp = make_hvp(flat_grad(closure(), params, create_graph=True), params)
    v = torch.randn(d, device=device, dtype=params[0].dtype)
    grads = torch.autograd.grad(closure(), params, create_graph=True)
    v_parts = [chunk.view(p.shape) for chunk, p in zip(v.split([p.numel() for p in params]), params)]

    def hvp():
        return graph["hvp"](v)

    def hvp_flat():
        return flat_hvp(v)

    def hvp_per_tensor():
        # the same double backward without the flat vector's split and concatenation
        return torch.autograd.grad(grads, params, grad_outputs=v_parts, retain_graph=True)

    res = paired_ratios(
        {
            "gradient": gradient,
            "forward (no_grad)": forward,
            "gradient with create_graph": build_graph,
            "HVP (retained graph)": hvp,
            "HVP through the flat gradient (make_hvp on flat_grad)": hvp_flat,
            "HVP per tensor, no flat vector (reference)": hvp_per_tensor,
        },
        reps,
        device,
        base="gradient",
    )
    return {"d": d, "results": res}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tasks", default="mlp,ae")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, reps {args.reps}")
    failed = False
    for task in args.tasks.split(","):
        out = measure(task, device, args.reps)
        print(f"\n{task} (d = {out['d']:,})")
        print("| quantity | median ms | x gradient |\n|---|---|---|")
        for name, r in out["results"].items():
            print(f"| {name} | {r['ms']:.2f} | {r['ratio']:.2f} |")
        ratio = out["results"]["HVP (retained graph)"]["ratio"]
        ok = ratio <= GOALS[task]
        failed |= not ok
        print(f"HVP / gradient = {ratio:.2f} (goal <= {GOALS[task]}): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
