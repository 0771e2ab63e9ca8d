"""``etr compare``: the paper's comparison protocol (section 5): methods x step sizes x seeds, one
run folder each, then the summary table (:mod:`etr_core.cli.compare_summary`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from etr_core.cli.compare_summary import write_compare_summary
from etr_core.cli.options import (
    MAX_SEED_COUNT,
    _add_run_options,
    _check_data,
    _check_method_settings,
    _comma_list,
    _common_config,
    _is_main_process,
    _key_values,
    _positive_int,
    _seed_count,
)
from etr_core.cli.progress import _progress
from etr_core.data import MAX_SEED
from etr_core.training import METHODS

_COMPARE_EPILOG = """
examples:
  etr compare --out runs/cmp                  # all methods, 3 seeds, 2,000 backprops each
  etr compare --seeds 3 --max-backprops 5000 --out runs/cmp
  etr compare --methods TR_uni,TR_ada,TR_rms,Adam --grid --seeds 10 --out runs/paper-protocol
  etr compare --methods SGD,Adam --lr-grid SGD=0.03,0.1,0.3 --lr-grid Adam=1e-3,3e-3 --out runs/fo

Writes one run folder per (method, step size, seed) under --out, then summary.md / summary.csv
(mean and 95% CI over seeds; best step size per first-order method by mean final training loss)
and loss curves (HTML) of the best configuration per method.

The default budget is in backprops, the unit of the paper's x-axis: Table 1 starts TR at radius 1e-4
and grows it by gamma1 = 1.1 per very successful step, so about 100 steps (some 200 backprops)
pass before TR steps have a useful length; 2,000 backprops leave room to see what follows.
"""

DEFAULT_COMPARE_BACKPROPS = 2000


def add_compare_parser(sub) -> None:
    """Add ``etr compare`` to the subcommands ``sub``."""
    c = sub.add_parser(
        "compare",
        help="methods x step sizes x seeds, with a summary table (section 5)",
        description="The paper's comparison protocol: TR methods with Table 1 defaults, "
        "first-order methods at a fixed batch size with (grid-searched) step sizes, several "
        f"seeds. Default budget: {DEFAULT_COMPARE_BACKPROPS:,} backprops per run (see below).",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--methods",
        type=_comma_list,
        default=("TR_uni", "TR_ada", "TR_rms", "SGD", "Adagrad", "RMSprop", "Adam"),
        help="comma-separated methods (default: TR_uni, TR_ada, TR_rms and the first-order methods)",
    )
    c.add_argument(
        "--seeds", type=_seed_count, default=3,
        help=f"number of seeds 0..N-1 (default 3, at most {MAX_SEED_COUNT})",
    )
    c.add_argument(
        "--seed-list", type=_comma_list, default=None,
        help="explicit comma-separated seeds (overrides --seeds)",
    )
    c.add_argument(
        "--grid",
        action="store_true",
        help="grid-search the step size of first-order methods over their default grids",
    )
    c.add_argument(
        "--lr-grid",
        action="append",
        metavar="METHOD=LR[,LR...]",
        help="step sizes for one first-order method (repeatable)",
    )
    c.add_argument(
        "--fo-batch-size",
        type=_positive_int,
        default=32,
        help="batch size of the first-order methods (default 32, as in the paper)",
    )
    c.add_argument("--tr-batch-size", type=_positive_int, default=None, help="batch size of TR (default 512)")
    c.add_argument(
        "--max-backprops",
        type=_positive_int,
        default=None,
        help=f"budget in backprops (gradients + Hessian-vector products) per run; the default when no "
        f"other budget is given: {DEFAULT_COMPARE_BACKPROPS:,}",
    )
    c.add_argument("--out", required=True, help="folder for the run folders and the summary")
    c.add_argument("--resume", action="store_true", help="skip finished runs and continue interrupted ones")
    c.add_argument("--html-only", action="store_true", help="write the figures as HTML only (no PNG)")
    _add_run_options(c)
    c.set_defaults(handler=_cmd_compare, command_parser=c)


def _seed_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[int]:
    if args.seed_list is not None:
        text = ",".join(args.seed_list)
        try:
            seeds = [int(s) for s in args.seed_list]
        except ValueError:
            parser.error(f"--seed-list expects comma-separated integers, got {text!r}")
        if min(seeds) < 0 or max(seeds) > MAX_SEED:
            parser.error(f"--seed-list expects integers from 0 to {MAX_SEED}, got {text!r}")
        if len(seeds) > MAX_SEED_COUNT:
            parser.error(f"--seed-list names {len(seeds)} seeds; at most {MAX_SEED_COUNT}")
        if len(set(seeds)) != len(seeds):
            parser.error(f"--seed-list names a seed twice: {text!r}")
        return seeds
    return list(range(args.seeds))


def _lr_grid(
    args: argparse.Namespace, methods: list[str], parser: argparse.ArgumentParser
) -> dict[str, list]:
    grid: dict[str, list[float | None]] = {}
    explicit: dict[str, list[float]] = {}
    for item in args.lr_grid or ():
        if "=" not in item:
            parser.error(f"--lr-grid expects METHOD=LR[,LR...], got {item!r}")
        name, values = item.split("=", 1)
        if name not in METHODS or METHODS[name].family != "first_order":
            parser.error(
                f"--lr-grid: {name!r} is not a first-order method "
                f"({', '.join(m for m, s in METHODS.items() if s.family == 'first_order')})"
            )
        try:
            lrs = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            parser.error(f"--lr-grid {name}: step sizes must be numbers, got {values!r}")
        if not lrs or any(not (math.isfinite(v) and v > 0) for v in lrs):
            parser.error(f"--lr-grid {name}: step sizes must be finite and > 0, got {values!r}")
        explicit[name] = lrs
    for m in methods:
        if METHODS[m].family == "tr":
            grid[m] = [None]
        elif m in explicit:
            grid[m] = list(explicit[m])
        elif args.grid:
            grid[m] = list(METHODS[m].lr_grid)
        else:
            grid[m] = [METHODS[m].default_lr]
    for name in explicit:
        if name not in methods:
            parser.error(f"--lr-grid names {name!r}, which is not in --methods")
    return grid


def _cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.training import TrainConfig, train

    methods = list(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown!r}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        parser.error(f"--methods lists a method twice: {','.join(methods)!r}")
    seeds = _seed_list(args, parser)
    grid = _lr_grid(args, methods, parser)
    tr_options = _key_values(args.tr_option, "--tr-option", parser)
    for m in methods:
        _check_method_settings(m, args.preset, tr_options, parser, method_flag="--methods")
    common = _common_config(args, parser, {"max_backprops": DEFAULT_COMPARE_BACKPROPS})
    if args.max_backprops is not None:
        common["max_backprops"] = args.max_backprops
    out = Path(args.out)
    jobs = []
    try:
        for m in methods:
            for lr in grid[m]:
                for seed in seeds:
                    if METHODS[m].family == "tr":
                        cfg = TrainConfig(
                            method=m,
                            seed=seed,
                            batch_size=args.tr_batch_size,
                            preset=args.preset,
                            tr_options=tr_options,
                            **common,
                        )
                        name = m
                    else:
                        cfg = TrainConfig(method=m, seed=seed, batch_size=args.fo_batch_size, lr=lr, **common)
                        name = f"{m}_lr{lr:g}"
                    jobs.append((cfg, out / name / f"seed{seed}"))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    from etr_core.results import run_state

    # a folder stopped before its first checkpoint holds nothing to keep: it starts again
    clashes = [str(d) for _, d in jobs if run_state(d) in ("resumable", "finished")]
    if clashes and not args.resume:
        parser.error(
            f"{clashes[0]} already holds a run ({len(clashes)} in all): add --resume or choose another --out"
        )
    _check_data(jobs[0][0], parser)
    main = _is_main_process()
    for i, (cfg, run_dir) in enumerate(jobs, start=1):
        done = (run_dir / "summary.json").exists()
        if done and args.resume:
            continue
        desc = f"[{i}/{len(jobs)}] {run_dir.relative_to(out)}"
        try:
            train(
                cfg,
                callbacks=[_progress(cfg, desc, args.no_progress or not main)],
                run_dir=run_dir,
                resume=args.resume,
            )
        except KeyboardInterrupt:
            print(f"\ninterrupted; continue with the same command and --resume (out: {out})", file=sys.stderr)
            return 130
    if main:
        table = write_compare_summary(out, png=not args.html_only)
        print(table)
    return 0

