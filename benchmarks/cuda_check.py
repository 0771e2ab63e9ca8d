"""CUDA check of the optimisers: HVP cost, TR overhead, and CPU/CUDA agreement of one float32 TR step.

On a machine with CUDA it prints

1. HVP / gradient on the 784-128-10 MLP (batch 512) and the deep autoencoder (batch 256);
2. one TR iteration with k = 10 HVPs divided by the same autodiff work (goal <= 1.10);
3. whether one float32 ``EllipsoidalTR`` step (and one ``FirstOrderTR`` step) on CUDA matches the
   CPU result: same exit, HVP count and acceptance, step equal to relative 1e-3, rho to 1e-2.

and exits non-zero if (3) fails. Without CUDA it says so and exits 0.

    python3 benchmarks/cuda_check.py [--reps 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hvp
import bench_tr_overhead

from etr_core.optim import EllipsoidalTR, FirstOrderTR


def one_step(device: torch.device, first_order: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(512, 784, generator=gen)
    teacher = torch.randn(784, 10, generator=gen) / 28.0
    y = (X - 0.5).matmul(teacher).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10))
    model.to(device)
    X, y = X.to(device), y.to(device)
    before = [p.detach().cpu().clone() for p in model.parameters()]
    if first_order:
        opt = FirstOrderTR(model.parameters(), ellipsoid="adagrad", radius=0.05)
    else:
        opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)

    def closure():
        return nn.functional.cross_entropy(model(X), y)

    for _ in range(2):  # the second step starts from a moved point with a two-gradient ellipsoid
        opt.step(closure)
    after = [p.detach().cpu().clone() for p in model.parameters()]
    return before, after, opt.last_step.to_dict()


def compare_step(first_order: bool) -> bool:
    b_cpu, a_cpu, r_cpu = one_step(torch.device("cpu"), first_order)
    b_gpu, a_gpu, r_gpu = one_step(torch.device("cuda"), first_order)
    s_cpu = torch.cat([(a - b).reshape(-1) for a, b in zip(a_cpu, b_cpu)])
    s_gpu = torch.cat([(a - b).reshape(-1) for a, b in zip(a_gpu, b_gpu)])
    rel = float((s_cpu - s_gpu).norm() / s_cpu.norm().clamp_min(1e-30))
    # the CUDA loop reads its exit flag every four iterations: up to 3 products past the exit
    same = (r_cpu["exit"], r_cpu["cg_iterations"], r_cpu["accepted"]) == (
        r_gpu["exit"],
        r_gpu["cg_iterations"],
        r_gpu["accepted"],
    ) and 0 <= r_gpu["hvp_calls"] - r_cpu["hvp_calls"] <= 3
    rho_ok = abs(r_cpu["rho"] - r_gpu["rho"]) <= 1e-2 * max(1.0, abs(r_cpu["rho"]))
    # the proposed step's length agrees whether or not it was kept; a kept step agrees entrywise
    proposed_ok = abs(r_cpu["step_l2_norm"] - r_gpu["step_l2_norm"]) <= 1e-3 * r_cpu["step_l2_norm"]
    kept_ok = rel <= 1e-3 and bool(s_cpu.norm() > 0) == r_cpu["accepted"]
    ok = same and rho_ok and proposed_ok and kept_ok
    name = "FirstOrderTR (adagrad)" if first_order else "EllipsoidalTR (rms)"
    print(
        f"{name}: CPU exit={r_cpu['exit']} cg={r_cpu['cg_iterations']} hvp={r_cpu['hvp_calls']} "
        f"accepted={r_cpu['accepted']} rho={r_cpu['rho']:.6f} | CUDA exit={r_gpu['exit']} "
        f"cg={r_gpu['cg_iterations']} hvp={r_gpu['hvp_calls']} "
        f"accepted={r_gpu['accepted']} rho={r_gpu['rho']:.6f} | relative step difference {rel:.2e} -> "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("CUDA is absent: nothing to check (torch.cuda.is_available() is False).")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}, CPU threads {torch.get_num_threads()}"
    )
    for task in ("mlp", "ae"):
        out = bench_hvp.measure(task, dev, args.reps)
        r = out["results"]
        print(
            f"{task} (d = {out['d']:,}): gradient {r['gradient']['ms']:.3f} ms, "
            f"HVP {r['HVP (retained graph)']['ms']:.3f} ms, HVP / gradient = "
            f"{r['HVP (retained graph)']['ratio']:.2f} (goal <= {bench_hvp.GOALS[task]})"
        )
    for task in ("mlp", "ae"):
        out = bench_tr_overhead.measure(task, dev, args.reps)
        print(
            f"TR overhead {task}: k = {out['k']} (exit {out['exit']}), TR iteration "
            f"{out['ms']['TR iteration']:.2f} ms, autodiff floor {out['ms']['autodiff floor']:.2f} ms, "
            f"ratio {out['ratio']:.3f} (goal <= 1.10)"
        )
    ok = compare_step(first_order=False) & compare_step(first_order=True)
    print("CPU/CUDA agreement:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
