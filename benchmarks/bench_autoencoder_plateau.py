"""Do the TR methods escape the autoencoder's mean-image plateau under paper Table 1? One change at a time.

Section 4.1 and the autoencoder panels of Figs. 3, 4 and 11 say the ellipsoids help to escape
elongated plateaus. This benchmark trains an autoencoder with TR_uni / TR_ada / TR_rms under
Table 1, then under Table 1 with exactly one change taken from the authors' parameter files
(batch 128, the model-decrease CG stop rule, their radius rules, their first-order warm-up, a
tighter Krylov tolerance), then under the authors' full preset, and Adam / RMSprop at batch 32.
Each run reports the final full-batch training loss, whether it left the plateau, the CG exit
counts, acceptance, the final radius, and at the end point the gradient norm and the extreme
Hessian eigenvalues of the full training loss (Lanczos, 40 products): a clearly negative smallest
eigenvalue with a stalled run means the solver does not follow the negative curvature there.

    python3 benchmarks/bench_autoencoder_plateau.py --out runs/plateau --budget 20000 --seeds 0,1,2

Run folders go under ``--out`` (finished ones are skipped, so a killed run picks up where it
stopped); ``--out-md`` gets the markdown table. ``--dataset fashion_mnist --model autoencoder``
(with ``--data-root``, ``--max-train``) runs the paper's network.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.config import authors, default_gamma2
from etr_core.training import TrainConfig, dataset_for, resolve_tr_config, train

TABLE1_FIELDS = dict(
    radius=1e-4,
    max_radius=10.0,
    eta1=1e-4,
    eta2=0.95,
    gamma1=1.1,
    krylov_tol=0.1,
    stop_rule="residual",
    eps=1e-10,
    eps_mode="paper",
    tiny_pred=0.0,
    pivot=None,
    l2_alpha=0.0,
)


def variants(dataset: str, model: str, kind: str) -> dict[str, dict[str, Any]]:
    """TR variants: Table 1, Table 1 with one change, the authors' full preset (TrainConfig kwargs)."""
    family = "mnist" if dataset in ("digits", "mnist") else dataset
    a = authors(family, "autoencoder", kind)
    radius_rules = dict(
        radius=a.radius, max_radius=a.max_radius, eta1=a.eta1, eta2=a.eta2, gamma1=a.gamma1, gamma2=a.gamma2
    )
    warmup_only = dict(TABLE1_FIELDS, gamma2=default_gamma2(kind), batch_size=512)
    return {
        "Table 1": {},
        "+ batch 128": {"batch_size": 128},
        "+ model-decrease stop": {"tr_options": {"stop_rule": "model_decrease"}},
        "+ authors' radius rules": {"tr_options": radius_rules},
        "+ authors' warm-up": {"preset": "authors", "tr_options": warmup_only},
        "+ Krylov tol 1e-3": {"tr_options": {"krylov_tol": 1e-3}},
        "authors' preset": {"preset": "authors"},
    }


def end_point_curvature(result, config: TrainConfig, n: int = 2048) -> dict[str, float]:
    """Gradient norm and extreme Hessian eigenvalues of the training loss (first ``n`` examples)."""
    from etr_core.curvature.spectrum import lanczos_extreme_eigenvalues
    from etr_core.hvp import flat_grad, make_hvp

    data = dataset_for(config)
    model = result.model.to("cpu", torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    x = data.train_x[:n].to(torch.float64)
    y = data.train_y[:n].to(torch.float64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    g = flat_grad(loss, params, create_graph=True)
    hvp = make_hvp(g, params)
    res = lanczos_extreme_eigenvalues(hvp, g.numel(), 40, dtype=torch.float64)
    return {
        "grad_norm": float(g.detach().norm()),
        "lambda_min": float(res.ritz_values[0]),
        "lambda_max": float(res.ritz_values[-1]),
    }


def run_one(cfg: TrainConfig, folder: Path) -> dict[str, Any]:
    done = (folder / "summary.json").exists()
    result = train(cfg, run_dir=folder, resume=folder.exists())
    if done and not result.steps:
        raise RuntimeError(f"{folder}: finished run without metrics")
    steps = result.steps
    tr = [s for s in steps if s.get("phase") == "tr"]
    exits = Counter(s.get("exit") for s in tr)
    row: dict[str, Any] = {
        "train_loss": result.summary["train_loss"],
        "best_loss": min(e["train_loss"] for e in result.evals),
        "backprops": result.summary["backprops"],
        "steps": result.summary["step"],
        "tr_steps": len(tr),
        "accepted": sum(bool(s.get("accepted")) for s in tr) / max(1, len(tr)),
        "radius_end": tr[-1]["radius"] if tr else math.nan,
        "cg_mean": sum(s.get("cg_iterations") or 0 for s in tr) / max(1, len(tr)),
        "exits": dict(exits),
    }
    row.update(end_point_curvature(result, cfg))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="autoencoder_small")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--budget", type=int, default=20000, help="backprops per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="TR_uni,TR_ada,TR_rms")
    p.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    p.add_argument(
        "--variant-seeds", default=None, help="seeds of the one-change variants (default: --seeds)"
    )
    p.add_argument("--ablate", default="TR_uni,TR_rms", help="methods that run the one-change variants")
    p.add_argument("--first-order", default="Adam=1e-3,RMSprop=1e-3")
    p.add_argument("--plateau", type=float, default=0.40, help="a run escaped when its loss went below this")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/plateau")
    p.add_argument("--out-md", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    variant_seeds = [int(s) for s in args.variant_seeds.split(",")] if args.variant_seeds else seeds
    data_options = {"max_train": args.max_train} if args.max_train else {}
    common = dict(
        dataset=args.dataset,
        model=args.model,
        max_steps=None,
        max_backprops=args.budget,
        eval_every=args.eval_every,
        checkpoint_every=10**6,
        device="cpu",
        data_root=args.data_root,
        data_options=data_options,
    )
    jobs: list[tuple[str, str, TrainConfig]] = []
    methods = args.methods.split(",")
    kinds = {"TR_uni": "uniform", "TR_ada": "adagrad", "TR_rms": "rms"}
    chosen = {m: variants(args.dataset, args.model, kinds[m]) for m in methods}
    names = args.variants.split(",") if args.variants else list(chosen[methods[0]])
    for name in names:  # variant by variant, so a short run still compares the methods
        for method in methods if name == "Table 1" else [m for m in methods if m in args.ablate.split(",")]:
            for seed in seeds if name == "Table 1" else variant_seeds:
                cfg = TrainConfig(method=method, seed=seed, **common, **chosen[method][name])
                jobs.append((method, name, cfg))
    for item in filter(None, args.first_order.split(",")):
        method, lr = item.split("=")
        for seed in seeds:
            jobs.append(
                (method, f"lr {lr}, batch 32", TrainConfig(method=method, seed=seed, lr=float(lr), **common))
            )
    lines = [
        f"Command: `python3 benchmarks/bench_autoencoder_plateau.py {' '.join(argv or sys.argv[1:])}`",
        "",
        "| method | variant | seed | final loss | best loss | left plateau | backprops | accepted | "
        "final radius | mean CG its | CG exits | grad norm | lambda_min | lambda_max |",
        "|" + "---|" * 14,
    ]
    out = Path(args.out)
    for method, name, cfg in jobs:
        slug = name.replace(" ", "_").replace("'", "").replace("+", "plus").replace(",", "")
        folder = out / f"{method}" / slug / f"seed{cfg.seed}"
        t0 = time.perf_counter()
        row = run_one(cfg, folder)
        tr_cfg = resolve_tr_config(cfg) if cfg.is_tr else None
        left = "yes" if row["best_loss"] < args.plateau else "no"
        exits = ", ".join(f"{k}: {v}" for k, v in sorted(row["exits"].items()) if k)
        lines.append(
            f"| {method} | {name} | {cfg.seed} | {row['train_loss']:.4f} | {row['best_loss']:.4f} | {left} | "
            f"{row['backprops']} | {row['accepted']:.2f} | {row['radius_end']:.3g} | {row['cg_mean']:.1f} | "
            f"{exits or '-'} | {row['grad_norm']:.2e} | {row['lambda_min']:.2e} | {row['lambda_max']:.2e} |"
        )
        print(
            lines[-1],
            f"({time.perf_counter() - t0:.0f} s; batch {tr_cfg.batch_size if tr_cfg else 32})",
            flush=True,
        )
        if args.out_md:
            Path(args.out_md).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
