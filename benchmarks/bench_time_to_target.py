"""Time to target: seconds and backprops until a training-accuracy / loss target, TR against Adam and SGD.

Paper section 5 compares methods in backprops; this script adds honest wall-clock time. Every method
trains the same network from the same initial weights (``build_model(..., seed)``) on batches drawn
in the same seeded order; TR_uni / TR_ada / TR_rms use ``EllipsoidalTR`` with paper Table 1 (batch
512 unless ``--tr-batch``), Adam and SGD are bare ``torch.optim`` loops at batch 32 with the step
sizes given by ``--adam-lr`` / ``--sgd-lr`` (tuned beforehand, see ``docs/benchmarks/time_to_target.md``).
The clock runs around the training steps only; training accuracy and loss are measured outside it
on a fixed random sub-sample of the training set (``--eval-n``, default 10,000) every
``--eval-samples`` training examples. Times to target are the first evaluation at or past the
target (so they are resolved to one evaluation interval). Methods run one after another in one
process, in an order rotated per seed, with the thread count printed.

Options for the accuracy-ceiling study (TR only): ``--radius``, ``--max-radius``, ``--auto-radius``
(the first step's M-norm Cauchy length, one extra gradient and one Hessian product, counted),
``--hessian-fraction`` (Hessian products on the first fraction of each batch via
``hessian_closure``), ``--max-krylov``, ``--krylov-tol``, ``--eta2``, ``--gamma1``, and
``--trace FILE`` (one JSON line per TR step with the optimiser's ``last_step`` record).

    ETR_DATA=DATA python3 benchmarks/bench_time_to_target.py --dataset fashion_mnist \
        --seeds 0 1 --max-epochs 3 --threads 1 --out runs/ttt.json
    python3 benchmarks/bench_time_to_target.py --dataset digits --seeds 0 1 2   # CI-sized
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from statistics import mean

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.config import paper_table1
from etr_core.data import load_dataset
from etr_core.hvp import grad_with_graph
from etr_core.models import build_model
from etr_core.optim import EllipsoidalTR

TR_KINDS = {"TR_uni": "uniform", "TR_ada": "adagrad", "TR_rms": "rms"}
FIRST_ORDER = ("Adam", "SGD")
MODELS = {"fashion_mnist": "mlp_paper", "mnist": "mlp_paper", "digits": "mlp_small"}


class Evaluator:
    """Training loss and accuracy on a fixed sub-sample, outside the clock."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 12345) -> None:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=gen)[: min(n, x.shape[0])]
        self.x, self.y = x[idx], y[idx]

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> tuple[float, float]:
        out = model(self.x)
        loss = float(F.cross_entropy(out, self.y, reduction="mean").double())
        return loss, float((out.argmax(1) == self.y).double().mean())


class Order:
    """Examples in a seeded order, without replacement within an epoch (as ``BatchSampler``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.gen = n, torch.Generator().manual_seed(seed + 1)
        self.perm, self.pos, self.samples = torch.randperm(n, generator=self.gen), 0, 0

    def take(self, batch: int) -> torch.Tensor:
        if self.pos >= self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + batch]
        self.pos += idx.numel()
        self.samples += idx.numel()
        return idx


def cauchy_radius(opt: EllipsoidalTR, model: torch.nn.Module, xb, yb) -> float:
    """The M-norm length of the Cauchy step ``-t M^-1 g`` at the current point (one gradient, one HVP):
    ``t ||g||_{M^-1}`` with ``t = ||g||^2_{M^-1} / (u^T H u)``, ``u = M^-1 g``; ``max_radius`` if
    ``u^T H u <= 0``."""
    params = [p for p in model.parameters() if p.requires_grad]
    g, hvp = grad_with_graph(F.cross_entropy(model(xb), yb), params)
    m = opt.ellipsoid.diag(like=g)
    u = g / m
    curvature = float(torch.dot(u, hvp(u)))
    gm2 = float(torch.dot(g, u))
    cap = float(opt.config.max_radius)
    if not curvature > 0.0:
        return cap
    return min(cap, gm2 / curvature * math.sqrt(gm2))


def run_method(name: str, data, args, seed: int, evaluator: Evaluator, trace) -> dict:
    model = build_model(MODELS[args.dataset], data.input_shape, data.num_classes, seed=seed)
    params = [p for p in model.parameters() if p.requires_grad]
    x_all, y_all = data.train_x, data.train_y
    order = Order(x_all.shape[0], seed)
    is_tr = name in TR_KINDS
    batch = args.tr_batch if is_tr else 32
    if is_tr:
        overrides = {
            k: v
            for k, v in dict(
                radius=args.radius, max_radius=args.max_radius, max_krylov=args.max_krylov,
                krylov_tol=args.krylov_tol, eta2=args.eta2, gamma1=args.gamma1,
            ).items()
            if v is not None
        }
        opt = EllipsoidalTR(params, preset=paper_table1(TR_KINDS[name]), **overrides)
    elif name == "Adam":
        opt = torch.optim.Adam(params, lr=args.adam_lr)
    else:
        opt = torch.optim.SGD(params, lr=args.sgd_lr)
    seconds, cpu, backprops, steps, extra_bp = 0.0, 0.0, 0, 0, 0
    curve = [(0.0, 0, 0, *evaluator(model), 0.0)]
    next_eval = args.eval_samples
    max_samples = args.max_epochs * x_all.shape[0]
    targets = {f"acc{int(a * 100)}": a for a in args.acc_targets}
    hit: dict[str, tuple[float, int] | None] = {k: None for k in [*targets, "loss"]}
    while order.samples < max_samples and seconds < args.max_seconds:
        idx = order.take(batch)
        xb, yb = x_all[idx], y_all[idx]
        t0, c0 = time.perf_counter(), time.process_time()
        if is_tr:
            if steps == 1 and args.auto_radius:
                opt.radius = cauchy_radius(opt, model, xb, yb)
                extra_bp += 2  # one gradient and one Hessian-vector product
            h = max(1, round(args.hessian_fraction * idx.numel()))
            hclosure = (
                (lambda xb=xb, yb=yb, h=h: F.cross_entropy(model(xb[:h]), yb[:h]))
                if args.hessian_fraction < 1.0
                else None
            )
            opt.step(lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb), hessian_closure=hclosure)
            c = opt.counters
            backprops = c["backward"] + c["hvp"] + extra_bp
        else:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            backprops += 1
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        steps += 1
        if is_tr and trace is not None:
            trace.write(json.dumps({"method": name, "seed": seed, **opt.last_step.to_dict()}) + "\n")
        if order.samples >= next_eval or order.samples >= max_samples:
            next_eval += args.eval_samples
            loss, acc = evaluator(model)
            if not math.isfinite(loss):
                break
            curve.append((seconds, backprops, order.samples, loss, acc, cpu))
            for key, a in targets.items():
                if hit[key] is None and acc >= a:
                    hit[key] = (seconds, backprops, cpu)
            if hit["loss"] is None and loss <= args.loss_target:
                hit["loss"] = (seconds, backprops, cpu)
            if all(v is not None for v in hit.values()):
                break
    return {
        "method": name, "seed": seed, "batch": batch, "steps": steps, "seconds": seconds, "cpu_seconds": cpu,
        "backprops": backprops, "epochs": order.samples / x_all.shape[0],
        "final_loss": curve[-1][3], "final_acc": curve[-1][4], "hit": hit, "curve": curve,
    }


def summarise(runs: list[dict], methods: list[str], keys: list[str]) -> list[str]:
    """A markdown table (mean over seeds of wall seconds, CPU seconds and backprops to each target)
    and the per-seed TR / Adam ratios, averaged."""
    what = (("wall s", 0, "{:.1f}"), ("CPU s", 2, "{:.1f}"), ("backprops", 1, "{:.0f}"))
    head = [f"{label} to {k}" for label, _, _ in what for k in keys]
    lines = ["| method | " + " | ".join(head) + " | best acc | epochs run |", "|---" * (len(head) + 3) + "|"]

    def cell(name: str, key: str, i: int, fmt: str) -> str:
        vals = [r["hit"][key] for r in runs if r["method"] == name]
        got = [v[i] for v in vals if v is not None]
        if len(got) < len(vals):
            return f"{len(vals) - len(got)}/{len(vals)} not reached"
        return fmt.format(mean(got))

    for name in methods:
        mine = [r for r in runs if r["method"] == name]
        best = mean(max(c[4] for c in r["curve"]) for r in mine)
        cells = [cell(name, k, i, fmt) for _, i, fmt in what for k in keys]
        epochs = mean(r["epochs"] for r in mine)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best:.3f} | {epochs:.2f} |")
    for name in methods:
        if name == "Adam" or "Adam" not in methods:
            continue
        parts = []
        for label, i, _ in what:
            for k in keys:
                pairs = [(a["hit"][k], b["hit"][k]) for a in runs for b in runs
                         if a["method"] == name and b["method"] == "Adam" and a["seed"] == b["seed"]]
                ok = [x[i] / y[i] for x, y in pairs if x is not None and y is not None]
                ratio = f"{mean(ok):.2f} ({len(ok)}/{len(pairs)} seeds)" if ok else "n/a"
                parts.append(f"{label} {k} {ratio}")
        lines.append(f"\n{name} / Adam: " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", choices=sorted(MODELS))
    p.add_argument("--data-root", default=None, help="folder with the IDX files (default: $ETR_DATA)")
    p.add_argument("--methods", nargs="+", default=[*TR_KINDS, *FIRST_ORDER])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-epochs", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=math.inf, help="per run, training clock")
    p.add_argument("--acc-targets", nargs="+", type=float, default=None)
    p.add_argument("--loss-target", type=float, default=None)
    p.add_argument("--eval-n", type=int, default=10000)
    p.add_argument("--eval-samples", type=int, default=1024, help="training examples between evaluations")
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--sgd-lr", type=float, default=0.1)
    p.add_argument("--tr-batch", type=int, default=512)
    p.add_argument("--radius", type=float, default=None)
    p.add_argument("--max-radius", type=float, default=None)
    p.add_argument("--max-krylov", type=int, default=None)
    p.add_argument("--krylov-tol", type=float, default=None)
    p.add_argument("--eta2", type=float, default=None, help="very-successful threshold (Table 1: 0.95)")
    p.add_argument("--gamma1", type=float, default=None, help="radius growth factor (Table 1: 1.1)")
    p.add_argument("--auto-radius", action="store_true")
    p.add_argument("--hessian-fraction", type=float, default=1.0)
    p.add_argument("--trace", default=None, help="JSON lines of every TR step record")
    p.add_argument("--out", default=None, help="JSON file for all runs and curves")
    args = p.parse_args(argv)
    unknown = [m for m in args.methods if m not in TR_KINDS and m not in FIRST_ORDER]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {[*TR_KINDS, *FIRST_ORDER]}")
    if not 0.0 < args.hessian_fraction <= 1.0:
        p.error(f"--hessian-fraction must lie in (0, 1], got {args.hessian_fraction}")
    fashion = args.dataset == "fashion_mnist"
    if args.acc_targets is None:
        args.acc_targets = [0.85, 0.88] if args.dataset != "digits" else [0.95, 0.99]
    if args.loss_target is None:
        args.loss_target = 0.40 if fashion else (0.30 if args.dataset == "mnist" else 0.05)
    torch.set_num_threads(args.threads)
    root = args.data_root or os.environ.get("ETR_DATA")
    data = load_dataset(args.dataset, root)
    evaluator = Evaluator(data.train_x, data.train_y, args.eval_n)
    label = "Fashion-MNIST (reconstructed split)" if fashion else args.dataset
    print(f"# {label}, model {MODELS[args.dataset]}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, eval on {evaluator.x.shape[0]} "
          f"training examples every {args.eval_samples}; command: {' '.join(sys.argv)}", flush=True)
    trace = open(args.trace, "w") if args.trace else None
    runs = []
    try:
        for i, seed in enumerate(args.seeds):
            k = i % len(args.methods)
            for name in args.methods[k:] + args.methods[:k]:
                r = run_method(name, data, args, seed, evaluator, trace)
                runs.append(r)
                print(f"{name} seed {seed}: {r['steps']} steps, {r['seconds']:.1f} s "
                      f"({r['cpu_seconds']:.1f} CPU s), {r['backprops']} bp, epochs {r['epochs']:.2f}, "
                      f"final acc {r['final_acc']:.4f}, hits {r['hit']}", flush=True)
    finally:
        if trace is not None:
            trace.close()
    keys = [*(f"acc{int(a * 100)}" for a in args.acc_targets), "loss"]
    print(f"\nloss target: {args.loss_target}")
    print("\n".join(summarise(runs, args.methods, keys)))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
