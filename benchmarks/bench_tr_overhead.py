"""Overhead of one EllipsoidalTR iteration over the autodiff work it cannot avoid (Algorithm 1).

One TR iteration with k Hessian-vector products needs at least: one gradient with
``create_graph``, k double-backward products through that graph, and one ``no_grad`` trial forward.
This script times a full ``EllipsoidalTR.step`` with k forced to 10 (``krylov_tol=1e-12``,
``max_krylov=10``, a radius large enough that the boundary is not reached) and, on the same batch,
that autodiff work alone; the ratio is the optimiser's overhead (vector work of the solver, the
ellipsoid, the parameter copy and update, host reads, Python). Goal: <= 1.10.

Every repetition restores the parameters and the optimiser state first (untimed), so all TR
iterations are identical and use the same k; timing is round-robin with paired ratios.

    python3 benchmarks/bench_tr_overhead.py --threads 2 --reps 15
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hvp import TASKS, sync

from etr_core.hvp import flat_grad, grad_with_graph
from etr_core.optim import EllipsoidalTR


def damped_task(task: str, device: torch.device, l2: float):
    """The task's loss plus ``l2/2 ||w||^2``: enough damping makes the Hessian positive definite, so
    Steihaug CG runs all k iterations instead of stopping at negative curvature."""
    model, base = TASKS[task](device)
    params = list(model.parameters())
    if l2 == 0.0:
        return model, base

    def closure():
        return base() + 0.5 * l2 * sum((p * p).sum() for p in params)

    return model, closure


def measure(
    task: str, device: torch.device, reps: int, k: int = 10, solver: str = "cg", l2: float = 1.0
) -> dict:
    model, closure = damped_task(task, device, l2)
    params = list(model.parameters())
    opt = EllipsoidalTR(
        params, ellipsoid="rms", radius=1e3, max_radius=1e4, krylov_tol=1e-12, max_krylov=k, solver=solver
    )
    # fold a few gradients into the ellipsoid so it is not the first-step special case
    for _ in range(3):
        opt.ellipsoid.update(flat_grad(closure(), params).detach())
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(opt.state_dict())

    def reset():
        with torch.no_grad():
            for p, s in zip(params, saved_params):
                p.copy_(s)
        opt.load_state_dict(copy.deepcopy(saved_state))

    d = sum(p.numel() for p in params)
    vs = [torch.randn(d, device=device, dtype=params[0].dtype) for _ in range(k)]
    reset()
    opt.step(closure)
    k_used = opt.last_step.hvp_calls
    exit_reason = opt.last_step.exit

    def tr_step():
        opt.step(closure)

    def floor():
        _, hvp = grad_with_graph(closure(), params)
        for i in range(k_used):  # distinct vectors, as CG uses
            hvp(vs[i])
        with torch.no_grad():
            closure()

    def gradient():
        torch.autograd.grad(closure(), params)

    fns = {"TR iteration": tr_step, "autodiff floor": floor, "gradient": gradient}
    for name in fns:  # warm-up
        reset()
        fns[name]()
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(reps):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            reset()
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    ratio = statistics.median(a / b for a, b in zip(times["TR iteration"], times["autodiff floor"]))
    grads = statistics.median(a / b for a, b in zip(times["TR iteration"], times["gradient"]))
    return {
        "d": d,
        "k": k_used,
        "exit": exit_reason,
        "ratio": ratio,
        "tr_in_gradients": grads,
        "ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
    }


def breakdown(task: str, device: torch.device, reps: int, k: int = 10) -> dict[str, float]:
    """Median milliseconds of the non-autodiff pieces of one TR iteration, each timed alone on the
    task's d: what the ratio above is made of."""
    from etr_core.ellipsoids import make_ellipsoid
    from etr_core.hvp import unflatten_like
    from etr_core.subproblem import steihaug_toint_pcg

    model, closure = TASKS[task](device)
    params = list(model.parameters())
    g = flat_grad(closure(), params).detach()
    ell = make_ellipsoid("rms")
    ell.update(g)
    m = ell.diag(like=g)
    curvature = m * 10.0  # a cheap positive-definite "Hessian": k full CG iterations, no autodiff
    saved = torch.empty_like(g)
    saved_views = unflatten_like(saved, params)
    step = g * 1e-3

    def solver_vector_work():
        steihaug_toint_pcg(g, lambda p: p * curvature, 1e6, m, kappa=1e-12, max_iter=k)

    def params_save_add_restore():
        with torch.no_grad():
            torch._foreach_copy_(saved_views, params)
            torch._foreach_add_(params, unflatten_like(step, params))
            torch._foreach_copy_(params, saved_views)

    pieces = {
        "ellipsoid.update(g) (with its isfinite check)": lambda: ell.update(g),
        "ellipsoid.diag()": lambda: ell.diag(like=g),
        "torch.isfinite(g).all() alone": lambda: bool(torch.isfinite(g).all()),
        f"Steihaug PCG vector work, {k} iterations (+{k} cheap products)": solver_vector_work,
        "parameter save + add + restore (foreach)": params_save_add_restore,
        "gradient norm + loss read": lambda: (float(torch.linalg.vector_norm(g)), float(g[0])),
    }
    out = {}
    for name, fn in pieces.items():
        fn()
        ts = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(ts)
    return out


def detail(task: str, device: torch.device, reps: int, k: int = 10, l2: float = 1.0) -> None:
    """Section times (with a device sync around each section) inside the TR iteration and inside
    the floor: where the difference between them sits."""
    model, closure = damped_task(task, device, l2)
    params = list(model.parameters())
    opt = EllipsoidalTR(params, ellipsoid="rms", radius=1e3, max_radius=1e4, krylov_tol=1e-12, max_krylov=k)
    opt.step(closure)
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(opt.state_dict())
    sections: dict[str, list[float]] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            sections.setdefault(name, []).append(time.perf_counter() - t0)
            return out

        return wrapper

    opt._loss_and_grad = timed("TR: loss + gradient with graph", opt._loss_and_grad)
    opt._solve = timed("TR: subproblem solve (HVPs + vector work)", opt._solve)
    opt._judge = timed("TR: save, add step, trial forward, accept/restore", opt._judge)
    reduced = opt._reduced

    def timed_reduced(base):
        inner = reduced(base)
        return timed("TR: one HVP inside the solver", inner)

    opt._reduced = timed_reduced
    vs = [torch.randn(sum(p.numel() for p in params), device=device, dtype=params[0].dtype) for _ in range(k)]
    grad_t = timed("floor: loss + gradient with graph", lambda: grad_with_graph(closure(), params))
    fwd_t = timed("floor: trial forward", lambda: closure().detach())
    steps = []
    for _ in range(reps):
        with torch.no_grad():
            for p, s in zip(params, saved_params):
                p.copy_(s)
        opt.load_state_dict(copy.deepcopy(saved_state))
        sync(device)
        t0 = time.perf_counter()
        opt.step(closure)
        sync(device)
        steps.append(time.perf_counter() - t0)
        _, hvp = grad_t()
        hvp_t = timed("floor: one HVP", hvp)
        for v in vs:
            hvp_t(v)
        del hvp, hvp_t
        with torch.no_grad():
            fwd_t()
    print("| section (synchronised) | median ms | calls per iteration |\n|---|---|---|")
    print(f"| TR: whole step | {1e3 * statistics.median(steps):.3f} | 1 |")
    for name, ts in sections.items():
        print(f"| {name} | {1e3 * statistics.median(ts):.3f} | {len(ts) // reps} |")


def profile(task: str, device: torch.device, k: int = 10, l2: float = 1.0) -> None:
    """Print the top operators of a few TR iterations (torch.profiler)."""
    model, closure = damped_task(task, device, l2)
    opt = EllipsoidalTR(
        model.parameters(), ellipsoid="rms", radius=1e3, max_radius=1e4, krylov_tol=1e-12, max_krylov=k
    )
    opt.step(closure)
    with torch.profiler.profile() as prof:
        for _ in range(3):
            opt.step(closure)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tasks", default="mlp")
    parser.add_argument("--solver", default="cg", choices=["cg", "lanczos"])
    parser.add_argument("--l2", type=float, default=1.0, help="damping that keeps the Hessian PD (0 = none)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--detail", action="store_true", help="synchronised section times instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, reps {args.reps}")
    for task in args.tasks.split(","):
        if args.profile:
            profile(task, device, l2=args.l2)
            continue
        if args.detail:
            print(f"\n{task}: section times")
            detail(task, device, args.reps, l2=args.l2)
            continue
        out = measure(task, device, args.reps, solver=args.solver, l2=args.l2)
        print(
            f"\n{task} (d = {out['d']:,}), l2 = {args.l2}, solver {args.solver}, "
            f"k = {out['k']} HVPs (exit {out['exit']})"
        )
        print("| quantity | median ms |\n|---|---|")
        for name, ms in out["ms"].items():
            print(f"| {name} | {ms:.2f} |")
        print("| piece timed alone | median ms |\n|---|---|")
        for name, ms in breakdown(task, device, args.reps).items():
            print(f"| {name} | {ms:.3f} |")
        print(
            f"TR iteration / autodiff floor = {out['ratio']:.3f} (goal <= 1.10); "
            f"TR iteration = {out['tr_in_gradients']:.1f} gradients"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
