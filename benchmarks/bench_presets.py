"""Time to target of the optimiser presets: EllipsoidalTR "paper" vs "fast" (and each change alone) vs Adam.

Fashion-MNIST MLP 784-128-10 (``mlp_paper``), real data from ``--data-root`` / ``ETR_DATA``. Every
method starts from the same weights (``build_model(..., seed)``) and reads batches in the same seeded
order. TR methods are ``EllipsoidalTR(params, preset=..., ellipsoid="rms")`` at batch 512 with a
plain ``step(closure)``; the closure takes ``batch_fraction`` so that ``hessian_fraction`` can act.
Adam is a bare ``torch.optim.Adam`` loop (batch 32, lr 1e-3). The clock runs around the training
steps only; training accuracy is measured outside it on a fixed 10,000-example sub-sample of the
training set every ``--eval-every`` training examples, so a time to target is resolved to one
evaluation interval. Backprops = gradient backward passes + Hessian-vector products (each about one
backward; on a sub-batch one of a quarter of the batch counts as one all the same). Methods run one
after another in one process, order rotated per seed, at the default thread count unless
``--threads``. ``--device cuda`` keeps the data and the network on the GPU and synchronises before
every clock read; there one untimed TR step on a throwaway copy of the network runs first, so that
compiling the CG update (``etr_core.subproblem.steihaug_device.update_for``, once per process and
network size) is printed apart instead of being charged to the first timed run.

    ETR_DATA=DATA python3 benchmarks/bench_presets.py --seeds 0 1 --out runs/presets.json
    ETR_DATA=DATA python3 benchmarks/bench_presets.py --device cuda --seeds 0 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from statistics import mean

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.data import load_dataset
from etr_core.models import build_model
from etr_core.optim import EllipsoidalTR

METHODS = {
    "TR_rms paper": {"preset": "paper"},
    "TR_rms fast": {"preset": "fast"},  # Table 1 + radius="auto"
    "TR_rms H 1/4": {"preset": "paper", "hessian_fraction": 0.25},
    "TR_rms fast + H 1/4": {"preset": "fast", "hessian_fraction": 0.25},
    "TR_rms fast, floor 1e-5": {"preset": "fast", "eps": 1e-10},  # the ellipsoid floor before 1e-16
    "Adam": None,
}


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(name: str, data, args, seed: int, ex, ey) -> dict:
    device = torch.device(args.device)
    model = build_model("mlp_paper", data.input_shape, data.num_classes, seed=seed).to(device)
    gen = torch.Generator().manual_seed(1000 + seed)
    n = data.n_train
    tr = METHODS[name] is not None
    batch = 512 if tr else 32
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", **METHODS[name]) if tr else torch.optim.Adam(
        model.parameters(), lr=1e-3
    )
    seconds, backprops, seen, next_eval = 0.0, 0, 0, args.eval_every
    hit: dict[str, float | int | None] = {"seconds": None, "backprops": None, "examples": None}
    perm, pos = torch.randperm(n, generator=gen), 0
    while seen < args.max_epochs * n:
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch]
        pos += batch
        xb, yb = args.train_x[idx.to(args.train_x.device)], args.train_y[idx.to(args.train_x.device)]
        _sync(device)
        t0 = time.perf_counter()
        if tr:

            def closure(batch_fraction: float = 1.0, xb=xb, yb=yb):
                k = xb.shape[0] if batch_fraction >= 1 else max(1, math.ceil(batch_fraction * xb.shape[0]))
                return F.cross_entropy(model(xb[:k]), yb[:k])

            opt.step(closure)
        else:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        _sync(device)
        seconds += time.perf_counter() - t0
        backprops = opt.counters["backward"] + opt.counters["hvp"] if tr else backprops + 1
        seen += batch
        if seen >= next_eval:
            next_eval += args.eval_every
            if accuracy(model, ex, ey) >= args.target:
                hit = {"seconds": seconds, "backprops": backprops, "examples": seen}
                break
    out = {"method": name, "seed": seed, **hit, "final_acc": accuracy(model, ex, ey)}
    if tr:
        out["radius0"] = opt.state[next(iter(model.parameters()))].get("auto_radius")
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--max-epochs", type=float, default=3.0)
    ap.add_argument("--eval-every", type=int, default=2560, help="training examples between evaluations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("fashion_mnist", root=args.data_root)
    gen = torch.Generator().manual_seed(12345)
    sub = torch.randperm(data.n_train, generator=gen)[:10000]
    device = torch.device(args.device)
    args.train_x, args.train_y = data.train_x.to(device), data.train_y.to(device)
    ex, ey = data.train_x[sub].to(device), data.train_y[sub].to(device)
    where = f"threads={torch.get_num_threads()}"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    print(f"{where} target={args.target} dataset={data.info.get('split', '')}")
    if device.type == "cuda":
        t0 = time.perf_counter()
        warm = build_model("mlp_paper", data.input_shape, data.num_classes, seed=999).to(device)
        opt = EllipsoidalTR(warm.parameters(), ellipsoid="rms")
        xb, yb = args.train_x[:512], args.train_y[:512]
        for _ in range(3):
            opt.step(lambda: F.cross_entropy(warm(xb), yb))
        _sync(device)
        print(f"untimed warm-up (3 TR steps, compiles the CG update): {time.perf_counter() - t0:.1f} s")
    runs = []
    for seed in args.seeds:
        order = args.methods[seed % len(args.methods) :] + args.methods[: seed % len(args.methods)]
        runs += [run(m, data, args, seed, ex, ey) for m in order]
    adam = [r for r in runs if r["method"] == "Adam"]
    print("| method | seconds to target | backprops | seconds / Adam |")
    print("|---|---|---|---|")
    for m in args.methods:
        rs = [r for r in runs if r["method"] == m]
        if any(r["seconds"] is None for r in rs):
            missed = sum(r["seconds"] is None for r in rs)
            print(f"| {m} | not reached in {args.max_epochs} epochs ({missed} seeds) | | |")
            continue
        ratio = ""
        if adam and all(a["seconds"] is not None for a in adam):
            ratio = f"{mean(r['seconds'] / a['seconds'] for r, a in zip(rs, adam)):.2f}"
        s = mean(r["seconds"] for r in rs)
        b = mean(r["backprops"] for r in rs)
        print(f"| {m} | {s:.2f} | {b:.0f} | {ratio} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = {"threads": torch.get_num_threads(), "device": where}
        Path(args.out).write_text(json.dumps({**meta, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
