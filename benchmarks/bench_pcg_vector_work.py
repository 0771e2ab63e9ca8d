"""Time the Krylov solvers' own vector work per iteration, without the cost of real Hessian products.

The Hessian-vector product is a cheap diagonal ``q = b * p``, so what remains is the solver's
bookkeeping: dot products, axpys, the host read per iteration and Python overhead. It is compared
with a "lower bound": the bare PCG vector operations (2 dots, 3 axpy-like updates, one
preconditioner multiply) in a loop with no host reads and no bookkeeping at all.

Usage:
    PYTHONPATH=. python3 benchmarks/bench_pcg_vector_work.py \\
        [--d 101770] [--iters 50] [--reps 15] [--device auto] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from etr_core.devices import describe_device, device, synchronize
from etr_core.subproblem import gltr, steihaug_toint_pcg


def make_problem(d: int, dev: torch.device, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    b = (10.0 ** (torch.rand(d, generator=gen) * 4 - 2)).to(dev, dtype)  # curvatures in [0.01, 100]
    m = (torch.rand(d, generator=gen) + 0.5).to(dev, dtype)
    g = torch.randn(d, generator=gen).to(dev, dtype)
    return b, m, g


def lower_bound(g: torch.Tensor, b: torch.Tensor, m: torch.Tensor, iters: int) -> None:
    """Bare preconditioned CG vector work: no exits, no host reads, scalars kept on the device."""
    inv_m = torch.reciprocal(m)
    s = torch.zeros_like(g)
    r = g.clone()
    z = r * inv_m
    p = -z
    gamma = torch.dot(r, z)
    for _ in range(iters):
        q = b * p
        alpha = gamma / torch.dot(p, q)
        s.addcmul_(alpha, p)
        r.addcmul_(alpha, q)
        torch.mul(r, inv_m, out=z)
        gamma_next = torch.dot(r, z)
        p.mul_(gamma_next / gamma).sub_(z)
        gamma = gamma_next


def hvp_only(g: torch.Tensor, b: torch.Tensor, iters: int) -> None:
    p = g.clone()
    for _ in range(iters):
        b * p


def timed(fn, dev) -> float:
    """CUDA: wall-clock between synchronisations. CPU: this thread's CPU time (torch runs with one
    intra-op thread here), which a loaded machine inflates far less than wall-clock time."""
    if dev.type == "cuda":
        synchronize(dev)
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        return time.perf_counter() - t0
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=101_770)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()
    dev = device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    b, m, g = make_problem(args.d, dev, dtype)
    iters = args.iters

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return b * v

    runs = {
        "hvp only": lambda: hvp_only(g, b, iters),
        "lower bound (bare PCG ops + hvp)": lambda: lower_bound(g, b, m, iters),
        "steihaug_toint_pcg (l2 residual)": lambda: steihaug_toint_pcg(
            g, hvp, 1e30, m, kappa=0.0, max_iter=iters
        ),
        "steihaug_toint_pcg (m_inv residual)": lambda: steihaug_toint_pcg(
            g, hvp, 1e30, m, kappa=0.0, max_iter=iters, residual_norm="m_inv"
        ),
        "gltr, interior phase": lambda: gltr(g, hvp, 1e30, m, kappa=0.0, max_iter=iters),
        "gltr, Lanczos phase from iteration 1": lambda: gltr(g, hvp, 1e-6, m, kappa=0.0, max_iter=iters),
    }
    # Check every solver really runs `iters` iterations (kappa = 0 never stops early here).
    for name, fn in runs.items():
        if name.startswith(("steihaug", "gltr")):
            res = fn()
            assert res.iterations == iters and res.hvp_calls == iters, (name, res.exit, res.iterations)
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):  # interleaved repetitions
        for name, fn in runs.items():
            samples[name].append(timed(fn, dev) / iters)
    med = {name: statistics.median(v) for name, v in samples.items()}
    base = med["hvp only"]
    bound = med["lower bound (bare PCG ops + hvp)"] - base
    clock = "wall-clock" if dev.type == "cuda" else "thread CPU time"
    print(f"device: {describe_device(dev)}, d = {args.d}, dtype = {args.dtype}, {iters} iterations, "
          f"{args.reps} interleaved repetitions, medians of {clock}")
    print()
    print("| run | per iteration (us) | minus hvp (us) | vs lower bound |")
    print("|---|---|---|---|")
    for name in runs:
        own = med[name] - base
        ratio = "" if name == "hvp only" else f"{own / bound:.2f}x"
        print(f"| {name} | {med[name] * 1e6:.0f} | {own * 1e6:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
