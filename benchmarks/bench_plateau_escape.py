"""Why TR_hess leaves the digits autoencoder's mean-image plateau where TR_rms stays: one change at a time.

The digits autoencoder (``autoencoder_small``, 64-32-16-8 mirrored, sigmoid, BCE; paper Table 1 for
every TR setting) sits, under TR_rms, at the mean-image loss 0.4233; TR_hess (the Hutchinson
Hessian-diagonal ellipsoid, :mod:`etr_core.hessian_diagonal`) leaves it. Each variant below changes one
thing of TR_rms or TR_hess, and every run records, per step, the CG exit, the radius, the CG
iterations and the M-length of the step; every ``--diag-every`` steps the ellipsoid's diagonal
``m`` per layer (min, median, max) and how far each layer moved (l2 norm of its part of the step).

Variants (``--variants``, comma separated; default: all):

* ``TR_rms``, ``TR_hess``: Table 1 (``TR_hess``: one Rademacher probe per step, EMA 0.8, floor 1e-5);
* ``hess_probes4`` / ``hess_probes16``: 4 / 16 probes per step (less noise, and ``m`` closer to
  ``|diag H|``; see below);
* ``hess_layer`` / ``hess_unit``: one value of ``m`` per layer / per output unit (block means);
* ``hess_floor1e-2`` / ``rms_floor1e-2``: ``eps = 1e-4`` (``m >= 1e-2``) instead of 1e-10;
  ``rms_floor1e-8``: ``eps = 1e-16`` (``m >= 1e-8``, below the plateau's gradients);
* ``hess_frozen50`` / ``hess_frozen5``: TR_hess whose ellipsoid stops updating after 50 / 5 steps (no
  more probes: no further curvature information and no further randomness; the rest of the run is
  a trust region in a fixed norm);
* ``hess_fixedprobe``: the same Rademacher vector ``z`` at every step (a deterministic, biased norm
  ``|z * Hz|`` that follows H but carries no step-to-step randomness);
* ``rms_noise``: TR_rms whose ``m`` is multiplied at every step by ``|1 + 2 xi|``, ``xi`` standard
  normal per entry (randomness of the Hutchinson kind in the norm, no curvature).

What a single probe estimates: with Rademacher ``z``, ``E[(z_i (Hz)_i)^2] = H_ii^2 + sum_{j != i} H_ij^2``,
the squared Euclidean norm of row ``i`` of ``H``; the EMA of the squared estimates is what ``m``
follows, so TR_hess with one probe is a row-norm-of-the-Hessian ellipsoid (``k`` probes:
``H_ii^2 + (1/k) sum_{j != i} H_ij^2``). ``--at-plateau`` checks this on the network: at TR_rms's
stalled point it compares the exact Hessian's ``|diag H|`` and row norms with TR_hess's ``m`` there,
and continues from that point with fresh TR_rms, TR_rms with floor 1e-8 and TR_hess optimisers.

    python3 benchmarks/bench_plateau_escape.py --seeds 0,1,2 --budget 6000 --out-json plateau_escape.json

prints one summary row per variant and seed and, for seed 0 of ``TR_rms`` and ``TR_hess``, a table
over windows of steps. One thread per run, evaluation of the full training loss every 25 steps.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import etr_core.optim as etr_optim
from etr_core.hessian_diagonal import HessianDiagonalEllipsoid
from etr_core.optim.options import ellipsoid_options
from etr_core.subproblem.result import BOUNDARY_EXITS
from etr_core.training import TrainConfig, train

PLATEAU = 0.40  # the mean-image loss is 0.4233; below 0.40 the run has left it

VARIANTS: dict[str, dict[str, Any]] = {
    "TR_rms": {"method": "TR_rms"},
    "TR_hess": {"method": "TR_hess"},
    "hess_probes4": {"method": "TR_hess", "tr": {"hessian_probes": 4}},
    "hess_probes16": {"method": "TR_hess", "tr": {"hessian_probes": 16}},
    "hess_layer": {"method": "TR_hess", "tr": {"hessian_block": "layer"}},
    "hess_unit": {"method": "TR_hess", "tr": {"hessian_block": "unit"}},
    "hess_floor1e-2": {"method": "TR_hess", "tr": {"eps": 1e-4}},
    "rms_floor1e-2": {"method": "TR_rms", "tr": {"eps": 1e-4}},
    "rms_floor1e-8": {"method": "TR_rms", "tr": {"eps": 1e-16}},
    "hess_frozen50": {"method": "TR_hess", "freeze_after": 50},
    "hess_frozen5": {"method": "TR_hess", "freeze_after": 5},
    "hess_fixedprobe": {"method": "TR_hess", "fixed_probe": True},
    "rms_noise": {"method": "TR_rms", "m_noise": True},
}


class _FixedProbe(HessianDiagonalEllipsoid):
    """The same probe vector at every step (the stream of step 0)."""

    def update_curvature(self, hvp, shapes, like, step):
        return super().update_curvature(hvp, shapes, like, 0)


def _layers(params: list[torch.Tensor]) -> list[tuple[str, list[int]]]:
    """(label, parameter indices) per Linear layer: a 2-D weight and the 1-D bias after it."""
    out: list[tuple[str, list[int]]] = []
    for i, p in enumerate(params):
        if p.dim() >= 2 or not out:
            out.append((f"{p.shape[1]}->{p.shape[0]}" if p.dim() == 2 else str(tuple(p.shape)), [i]))
        else:
            out[-1][1].append(i)
    return out


def instrumented(log: dict[str, list], *, freeze_after: int | None = None, fixed_probe: bool = False,
                 m_noise: bool = False, diag_every: int = 25, seed: int = 0):
    """An :class:`etr_core.optim.EllipsoidalTR` subclass that records what the benchmark reads, with the
    variant's one change (frozen ellipsoid, fixed probe, noisy norm)."""
    base = etr_optim.EllipsoidalTR
    noise_gen = torch.Generator().manual_seed(10_000 + seed)

    class Instrumented(base):  # type: ignore[misc, valid-type]
        def _bind_ellipsoid(self, config):
            if fixed_probe and config.ellipsoid == "hessian":
                ell = _FixedProbe(**ellipsoid_options(config))
                ell.v = self._flat_v(config)
            else:
                ell = super()._bind_ellipsoid(config)
            if m_noise:
                plain = ell.diag

                def noisy(like=None):
                    m = plain(like=like)
                    xi = torch.randn(m.shape, generator=noise_gen, dtype=torch.float64)
                    return m * (1.0 + 2.0 * xi).abs().clamp_min(1e-3).to(m.dtype)

                ell.diag = noisy
            return ell

        def _update_ellipsoid(self, g, hvp=None):
            if freeze_after is not None and self.counters["steps"] >= freeze_after:
                return False
            return super()._update_ellipsoid(g, hvp)

        def _add_step(self, s):
            super()._add_step(s)
            if self.counters["steps"] % diag_every == 0:
                parts = s.detach().split([p.numel() for p in self._params])
                log["step_norms"].append(
                    [self.counters["steps"]]
                    + [math.sqrt(sum(float(parts[i].double().square().sum()) for i in idx))
                       for _, idx in _layers(self._params)]
                )

        def _finish(self, record):
            super()._finish(record)
            step = record.step
            if step % diag_every == 0 and getattr(self, "_step_grad", None) is not None:
                m = self._ell.diag(like=self._step_grad).detach().double()
                parts = m.split([p.numel() for p in self._params])
                row = [step]
                for _, idx in _layers(self._params):
                    layer = torch.cat([parts[i] for i in idx])
                    row += [float(layer.min()), float(layer.median()), float(layer.max())]
                log["m"].append(row)

    return Instrumented


@contextlib.contextmanager
def _patched(cls):
    saved = etr_optim.EllipsoidalTR
    etr_optim.EllipsoidalTR = cls
    try:
        yield
    finally:
        etr_optim.EllipsoidalTR = saved


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    spec = VARIANTS[name]
    log: dict[str, list] = {"m": [], "step_norms": [], "steps": []}
    cls = instrumented(log, freeze_after=spec.get("freeze_after"), fixed_probe=spec.get("fixed_probe", False),
                       m_noise=spec.get("m_noise", False), diag_every=args.diag_every, seed=seed)
    cfg = TrainConfig(dataset="digits", model="autoencoder_small", method=spec["method"], seed=seed,
                      max_backprops=args.budget, max_steps=args.max_steps, eval_every=args.eval_every,
                      device="cpu", num_threads=1, tr_options=dict(spec.get("tr", {})))

    def on_step(rec: dict[str, Any]) -> None:
        if rec.get("event") == "step" and rec.get("phase", "tr") == "tr":
            log["steps"].append({k: rec.get(k) for k in ("step", "backprops", "radius_before", "exit",
                                                          "cg_iterations", "step_m_norm", "accepted",
                                                          "grad_norm", "loss")})

    start = time.perf_counter()
    with _patched(cls):
        result = train(cfg, callbacks=[on_step])
    evals = [{k: e[k] for k in ("step", "backprops", "train_loss")} for e in result.evals]
    layers = [label for label, _ in _layers(list(result.model.parameters()))]
    return {"variant": name, "seed": seed, "seconds": time.perf_counter() - start, "evals": evals,
            "layers": layers, **log}


def summary_row(run: dict[str, Any]) -> str:
    evals, steps = run["evals"], run["steps"]
    out = next((e for e in evals if e["train_loss"] < PLATEAU), None)
    early = [s for s in steps if s["step"] < 300]
    boundary = sum(s["exit"] in BOUNDARY_EXITS for s in early) / max(1, len(early))
    radius = statistics.median(s["radius_before"] for s in early) if early else math.nan
    cg = statistics.fmean(s["cg_iterations"] for s in early) if early else math.nan
    exits = Counter(s["exit"] for s in steps)
    return (f"| {run['variant']} | {run['seed']} | {'yes' if out else 'no'} | "
            f"{out['step'] if out else '-'} | {out['backprops'] if out else '-'} | "
            f"{evals[-1]['train_loss']:.4f} | {boundary:.2f} | {radius:.3g} | {cg:.1f} | "
            f"{', '.join(f'{k} {v}' for k, v in exits.most_common())} | {run['seconds']:.0f} |")


SUMMARY_HEAD = ("| variant | seed | left plateau | step | backprops | final loss "
                "| boundary share (steps < 300) | median radius (< 300) | mean CG its (< 300) "
                "| exits (all steps) | s |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


def window_table(run: dict[str, Any], windows: list[int]) -> str:
    """Per window of steps: loss, boundary share, radius, CG its; median m and max/min per layer."""
    layers = run["layers"]
    head = ("| steps | full loss at end | boundary share | median radius | mean CG its | "
            + " | ".join(f"m {lab}: median (max/min)" for lab in layers) + " |")
    rows = [head, "|---" * (5 + len(layers)) + "|"]
    for lo, hi in itertools.pairwise(windows):
        st = [s for s in run["steps"] if lo <= s["step"] < hi]
        if not st:
            break
        ev = [e for e in run["evals"] if e["step"] <= hi]
        ms = [r for r in run["m"] if lo <= r[0] < hi]
        cells = []
        for k in range(len(layers)):
            if ms:
                med = statistics.median(r[2 + 3 * k] for r in ms)
                spread = statistics.median(r[3 + 3 * k] / r[1 + 3 * k] for r in ms)
                cells.append(f"{med:.2g} ({spread:.2g})")
            else:
                cells.append("-")
        rows.append(
            f"| {lo}-{hi} | {ev[-1]['train_loss']:.4f} | "
            f"{sum(s['exit'] in BOUNDARY_EXITS for s in st) / len(st):.2f} | "
            f"{statistics.median(s['radius_before'] for s in st):.3g} | "
            f"{statistics.fmean(s['cg_iterations'] for s in st):.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


def at_plateau(args: argparse.Namespace) -> str:
    """At TR_rms's stalled point (seed 0 after ``--plateau-steps`` steps): per layer, the RMS norm's ``m``
    (the run's own state), ``|g|``, the exact Hessian's ``|diag H|`` and row norms (full training set,
    float64), and the one-probe Hessian ellipsoid's ``m`` there (EMA 0.8 over 30 probes of the same
    Hessian); then one Steihaug-Toint PCG solve of the full-data model in each norm (radius 10, Table 1's
    stop rule): exit, iterations, predicted and actual decrease, and how far each layer moves."""
    from etr_core.curvature import exact_hessian
    from etr_core.subproblem import solve_subproblem
    from etr_core.training import dataset_for

    log: dict[str, list] = {"m": [], "step_norms": [], "opt": []}
    cls = instrumented(log, diag_every=10**9)
    keep = cls.__init__

    def init(self, *a, **k):
        keep(self, *a, **k)
        log["opt"].append(self)

    cls.__init__ = init
    cfg = TrainConfig(dataset="digits", model="autoencoder_small", method="TR_rms", seed=0,
                      max_steps=args.plateau_steps, eval_every=args.plateau_steps, device="cpu",
                      num_threads=1)
    with _patched(cls):
        result = train(cfg)
    opt = log["opt"][0]
    stalled = copy.deepcopy(result.model)  # float32, for the continued runs below
    model = result.model.to(torch.float64)
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    groups = _layers(params)
    data = dataset_for(cfg)
    x, y = data.train_x.to(torch.float64), data.train_y.to(torch.float64)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    hess = exact_hessian(model, x, y, loss_fn)
    H = hess.matrix
    loss = loss_fn(model(x), y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]).detach()
    loss = loss.detach()
    v = torch.cat([opt.state[p]["v"].reshape(-1) for p in opt._params]).double()
    m_rms = torch.sqrt(v + 1e-10)
    ell = HessianDiagonalEllipsoid(beta=0.8, eps=1e-10, probes=1)
    for step in range(30):
        ell.update_curvature(lambda z: H @ z, [p.shape for p in params], g, step)
    m_hess = ell.diag()
    eig = torch.linalg.eigvalsh(H)
    columns = {"|g|": g.abs(), "m rms": m_rms, "|diag H|": torch.diagonal(H).abs(),
               "row norm of H": torch.linalg.vector_norm(H, dim=1), "m hess (1 probe)": m_hess}
    lines = [f"TR_rms seed 0 after {args.plateau_steps} steps: full training loss {float(loss):.4f}, "
             f"||g|| {float(g.norm()):.2e}, eigenvalues of H: min {float(eig[0]):.2e}, "
             f"max {float(eig[-1]):.3g}, "
             f"{int((eig < -1e-8).sum())} below -1e-8, {int((eig.abs() <= 1e-8).sum())} within 1e-8 of 0", "",
             "| quantity (median over the layer) | " + " | ".join(lab for lab, _ in groups) + " |",
             "|---" * (len(groups) + 1) + "|"]
    for name, t in columns.items():
        parts = t.split(sizes)
        cells = [f"{float(torch.cat([parts[i] for i in idx]).median()):.2e}" for _, idx in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| norm | radius | exit | CG its | predicted decrease | actual decrease (full data) | "
              "||s||_2 | " + " | ".join(f"||s|| {lab}" for lab, _ in groups) + " |",
              "|---" * (7 + len(groups)) + "|"]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    for name, m in (("rms", m_rms), ("hess", m_hess)):
        for radius in (10.0, 1.0, 0.1):
            res = solve_subproblem("cg", g, lambda z: H @ z, radius, m, kappa=0.1, theta=0.5, max_iter=50)
            s = res.step
            with torch.no_grad():
                for p, chunk in zip(params, (flat + s).split(sizes)):
                    p.copy_(chunk.reshape(p.shape))
                actual = float(loss) - float(loss_fn(model(x), y))
                for p, chunk in zip(params, flat.split(sizes)):
                    p.copy_(chunk.reshape(p.shape))
            parts = s.split(sizes)
            cells = [f"{math.sqrt(sum(float(parts[i].square().sum()) for i in idx)):.2e}"
                     for _, idx in groups]
            lines.append(f"| {name} | {radius:g} | {res.exit} | {res.iterations} | "
                         f"{res.pred_reduction:.2e} | "
                         f"{actual:.2e} | {float(s.norm()):.2e} | " + " | ".join(cells) + " |")
    lines += ["", continued_runs(stalled, x.float(), y.float(), args)]
    return "\n".join(lines)


CONTINUED = {
    "TR_rms (fresh optimiser: radius 1e-4, empty EMA)": {"ellipsoid": "rms"},
    "TR_rms, floor 1e-8": {"ellipsoid": "rms", "eps": 1e-16},
    "TR_hess": {"ellipsoid": "hessian"},
}


def continued_runs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> str:
    """From TR_rms's stalled point, a fresh optimiser of each kind in :data:`CONTINUED` (Table 1
    otherwise, batch 512, batches drawn with seed 0) for ``--continue-steps`` steps: does it leave?"""
    from etr_core.optim import EllipsoidalTR

    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    rows = [f"Continued from TR_rms's stalled point (seed 0, {args.plateau_steps} steps), fresh optimisers:",
            "", "| optimiser | full loss every 50 steps | first step below 0.40 | backprops |",
            "|---|---|---|---|"]
    for label, options in CONTINUED.items():
        net = copy.deepcopy(model)
        opt = EllipsoidalTR(net.parameters(), **options)
        gen = torch.Generator().manual_seed(0)
        trace, left = [], None
        for step in range(args.continue_steps + 1):
            if step % 50 == 0:
                with torch.no_grad():
                    full = float(loss_fn(net(x), y))
                trace.append(f"{full:.4f}")
                if left is None and full < PLATEAU:
                    left = step
            if step == args.continue_steps:
                break
            idx = torch.randint(0, x.shape[0], (512,), generator=gen)
            opt.step(lambda idx=idx, net=net: loss_fn(net(x[idx]), y[idx]))
        c = opt.counters
        rows.append(f"| {label} | {', '.join(trace)} | {left if left is not None else '-'} | "
                    f"{c['backward'] + c['hvp']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=6000, help="backprops per run (probes included)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--diag-every", type=int, default=25)
    p.add_argument("--windows", default="0,25,50,100,200,300,500,800,1200,1600")
    p.add_argument("--out-json", default=None)
    p.add_argument("--at-plateau", action="store_true", help="only the analysis at TR_rms's stalled point")
    p.add_argument("--plateau-steps", type=int, default=400)
    p.add_argument("--continue-steps", type=int, default=400,
                   help="--at-plateau: steps of the continued runs")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.at_plateau:
        print(at_plateau(args), flush=True)
        return 0
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    runs = []
    print(SUMMARY_HEAD, flush=True)
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = run_variant(name, seed, args)
            runs.append(run)
            print(summary_row(run), flush=True)
            if args.out_json:
                Path(args.out_json).write_text(json.dumps(runs), encoding="utf-8")
    windows = [int(w) for w in args.windows.split(",")]
    for run in runs:
        if run["seed"] == runs[0]["seed"] and run["variant"] in ("TR_rms", "TR_hess"):
            print(f"\n{run['variant']}, seed {run['seed']}\n\n{window_table(run, windows)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
