"""The ``etr`` command line: train, compare, plot, download, hessian.

``etr train`` runs one method with one seed into a run folder; ``etr compare`` runs the paper's
protocol (section 5: TR methods with Table 1 defaults, first-order methods at batch 32 with a
grid-searched step size, several seeds) and writes a summary table; ``etr plot`` draws the paper's
figures from run folders; ``etr download`` fetches a dataset for machines with internet access;
``etr hessian`` runs the Hessian-structure experiment (Figs. 2 and 6).

Every argument is checked before any work starts. Every user error (a bad flag, path, permission,
data file or checkpoint, a full disk, a run folder in use) prints one line on stderr and exits with
status 2 (:func:`etr_core.errors.user_message` gives the app the same sentence); ``--debug``
anywhere on the command line shows the traceback instead. Warnings print as one line each.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etr_core.cli_resume import given_flags as _given_flags
from etr_core.data import DATASET_NAMES, FILE_DATASETS, MAX_SEED
from etr_core.errors import one_line, user_message
from etr_core.models import MODEL_DESCRIPTIONS, MODEL_NAMES
from etr_core.training import MAX_THREADS, METHODS

_TRAIN_EPILOG = """
examples:
  etr train                                   # TR_rms, MLP 64-32-10 on the bundled digits, 200 steps
  etr train --method SGD --lr 0.1 --max-epochs 5 --out runs/sgd
  etr train --method TR_uni --tr-option radius=0.01 --tr-option max_krylov=20
  etr train --dataset fashion_mnist --model mlp_paper --data-root ~/data --device cuda --max-epochs 10
  etr train --resume runs/sgd --max-epochs 10         # continue a run from its last checkpoint

Several GPUs or machines (TR all-reduces gradients, Hessian-vector products and losses):
  torchrun --nproc_per_node=4 -m etr_core.cli train --dataset cifar10 --model resnet18 --device cuda
"""

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

_PLOT_EPILOG = """
examples:
  etr plot runs/cmp --out figures          # best step size per method (the paper's picture)
  etr plot runs/cmp --all --out figures    # every configuration of the grid
  etr plot runs/a runs/b --x backprops --out figures
"""

_REPRODUCE_EPILOG = """
examples:
  etr reproduce fig3 --quick --data-root ~/data --out repro     # minutes on a laptop CPU
  etr reproduce fig4 --dataset fashion_mnist --networks mlp --quick --out repro
  etr reproduce fig4 --dataset cifar10 --device cuda --out repro        # paper protocol: 10 seeds
  etr reproduce fig6 --dataset mnist --quick --out repro
  etr reproduce fig11 --quick --seeds 1 --out repro

Each figure writes <out>/<figure>/ (figure as HTML and PNG, table.md with mean and 95% interval over
seeds) and the run folders under <out>/runs/ (shared by figs. 3, 4, 9, 10 and 11). Rerun the same
command after an interruption: finished runs are skipped, partial ones resume from their checkpoints.
Without CIFAR-10 files a generated stand-in is used and labelled as such.
"""

DEFAULT_COMPARE_BACKPROPS = 2000


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``etr train: error: ...`` (usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _thread_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"expected a thread count from 1 to {MAX_THREADS} (this machine has {os.cpu_count()} CPUs), "
            f"got {text!r}"
        )
    return value


def _seed(text: str) -> int:
    value = _nonneg_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 2**32 - 1 = {MAX_SEED}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key_values(items: Sequence[str] | None, flag: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            parser.error(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and network")
    g.add_argument(
        "--dataset",
        default="digits",
        choices=DATASET_NAMES,
        help="dataset (default: digits, bundled with scikit-learn; file datasets need --data-root)",
    )
    g.add_argument(
        "--model",
        default="mlp_small",
        choices=MODEL_NAMES,
        metavar="MODEL",
        help="network: " + "; ".join(f"{k}: {v}" for k, v in MODEL_DESCRIPTIONS.items()),
    )
    g.add_argument(
        "--data-root",
        default=None,
        help="folder holding mnist/, fashion_mnist/, cifar10/ (default: $ETR_DATA or ./data)",
    )
    g.add_argument(
        "--max-train",
        type=_positive_int,
        default=None,
        help="use only the first N training examples (quick runs)",
    )
    b = p.add_argument_group("budget and logging")
    b.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many steps")
    b.add_argument("--max-epochs", type=_positive_float, default=None, help="stop after this many epochs")
    b.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=None,
        help="stop after this much training time (evaluation excluded)",
    )
    b.add_argument(
        "--eval-every",
        type=_positive_int,
        default=10,
        help="full train/test evaluation every N steps (default 10)",
    )
    b.add_argument(
        "--checkpoint-every", type=_positive_int, default=50, help="checkpoint every N steps (default 50)"
    )
    b.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto picks CUDA when available (default auto)",
    )
    b.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    b.add_argument(
        "--threads", type=_thread_count, default=None,
        help="torch CPU threads (default: auto, torch's count capped by the cores the load leaves free)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group("trust-region options")
    t.add_argument(
        "--preset",
        default="paper",
        choices=("paper", "fast", "authors"),
        help="paper: Table 1 defaults (default); fast: Table 1 with the automatic initial radius; "
        "authors: their files incl. warm-up and pivot",
    )
    t.add_argument(
        "--tr-option",
        action="append",
        metavar="KEY=VALUE",
        help="override a TRConfig field, e.g. radius=0.01, max_krylov=20 (repeatable)",
    )


def _common_config(args: argparse.Namespace, parser: argparse.ArgumentParser, default_budget: dict) -> dict:
    budget = {"max_steps": args.max_steps, "max_epochs": args.max_epochs, "max_seconds": args.max_seconds}
    if all(v is None for v in budget.values()):
        budget.update(default_budget)
    data_options = {"max_train": args.max_train} if args.max_train else {}
    return dict(
        dataset=args.dataset,
        model=args.model,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        dtype=args.dtype,
        data_root=args.data_root,
        data_options=data_options,
        num_threads=args.threads,
        **budget,
    )


class _Progress:
    """tqdm bar showing loss, radius (TR) and backprops."""

    def __init__(self, total: float | None, desc: str, by_epoch: bool, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.by_epoch = by_epoch
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="epoch" if by_epoch else "step",
            disable=disable or None,
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
        )

    def on_step(self, record: dict) -> None:
        if self.by_epoch:
            self.bar.n = round(record["epoch"], 3)
            self.bar.refresh()
        else:
            self.bar.update(1)
        post = {"loss": f"{record['loss']:.4g}", "backprops": record["backprops"]}
        if record.get("radius") is not None:
            post["radius"] = f"{record['radius']:.3g}"
        self.bar.set_postfix(post, refresh=False)

    def on_end(self, record: dict) -> None:
        self.bar.close()


def _progress(config, desc: str, disable: bool) -> _Progress:
    by_epoch = config.max_steps is None and config.max_epochs is not None
    total = config.max_steps if config.max_steps is not None else config.max_epochs
    return _Progress(total, desc, by_epoch, disable)


def _check_data(config, parser: argparse.ArgumentParser) -> None:
    from etr_core.data import load_dataset

    try:
        load_dataset(config.dataset, config.data_root, seed=config.seed, **config.data_options)
    except FileNotFoundError as exc:
        parser.error(str(exc))


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# -- etr train ---------------------------------------------------------------------------------------------


def _resumed_config(run_dir: Path, args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The saved configuration of ``run_dir`` with the changes the typed flags may make (see
    :mod:`etr_core.cli_resume`)."""
    from etr_core.cli_resume import resumed_config

    return resumed_config(run_dir, args, parser, lambda items: _key_values(items, "--tr-option", parser))


def _cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.results import run_state
    from etr_core.training import TrainConfig, train

    if isinstance(args.resume, str) and args.out and Path(args.out) != Path(args.resume):
        parser.error(f"--resume {args.resume} and --out {args.out} name different folders; give one")
    if isinstance(args.resume, str) or (args.resume and args.out):
        # etr train --resume RUN_DIR (or --resume --out RUN_DIR): the configuration comes from the folder
        out = Path(args.resume if isinstance(args.resume, str) else args.out)
        if run_state(out) == "empty":
            if isinstance(args.resume, str):
                parser.error(f"--resume {out}: {out} is not a run folder: config.json is missing")
            parser.error(f"--resume: {out} has no checkpoint to continue from (is --out right?)")
        config = _resumed_config(out, args, parser)
    else:
        try:
            config = TrainConfig(
                method=args.method,
                seed=args.seed,
                batch_size=args.batch_size,
                lr=args.lr,
                preset=args.preset,
                tr_options=_key_values(args.tr_option, "--tr-option", parser),
                **_common_config(args, parser, {"max_steps": 200}),
            )
        except (ValueError, TypeError) as exc:
            parser.error(str(exc))
        out = (
            Path(args.out)
            if args.out
            else Path("runs") / f"{config.dataset}-{config.model}-{config.method}-s{config.seed}"
        )
        state = run_state(out)
        if args.resume and state == "empty":
            parser.error(f"--resume: {out} has no checkpoint to continue from (is --out right?)")
        if state in ("resumable", "finished") and not args.resume:
            parser.error(f"{out} already holds a run: add --resume to continue it, or choose another --out")
    main = _is_main_process()
    callbacks = [_progress(config, config.method, args.no_progress or not main)]
    try:
        result = train(config, callbacks=callbacks, run_dir=out, resume=bool(args.resume))
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue from the last checkpoint: etr train --resume {out}", file=sys.stderr)
        return 130
    if main:
        s = result.summary
        print(
            f"{s['label']}: stop={s['stop_reason']} steps={s['step']} backprops={s['backprops']} "
            f"epochs={s['epoch']:.3g} seconds={s['seconds']:.3g} train_loss={_fmt(s['train_loss'])} "
            f"train_acc={_fmt(s['train_acc'])} test_acc={_fmt(s['test_acc'])}"
        )
        print(f"run folder: {out}")
    return 0


# -- etr compare -------------------------------------------------------------------------------------------


def _seed_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[int]:
    if args.seed_list:
        try:
            seeds = [int(s) for s in args.seed_list.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--seed-list expects comma-separated integers, got {args.seed_list!r}")
        if not seeds or min(seeds) < 0 or max(seeds) > MAX_SEED:
            parser.error(f"--seed-list expects integers from 0 to {MAX_SEED}, got {args.seed_list!r}")
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

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        parser.error(f"--methods: unknown {unknown or methods!r}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        parser.error(f"--methods lists a method twice: {args.methods!r}")
    seeds = _seed_list(args, parser)
    grid = _lr_grid(args, methods, parser)
    tr_options = _key_values(args.tr_option, "--tr-option", parser)
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


def write_compare_summary(
    out: Path, targets: Sequence[float] = (0.1, 0.03, 0.01), *, png: bool = True
) -> str:
    """Write ``summary.csv``, ``summary.md`` and the loss curves of the best step size per method
    (HTML, and PNG when ``png`` and kaleido can render)."""
    from etr_core.results import find_runs, load_run
    from etr_core.viz.training_plots import loss_curves, runs_frame, summarize, write_figure

    runs = [load_run(p) for p in find_runs([out])]
    frame = runs_frame(runs, targets=targets)
    columns = [
        "train_loss",
        "train_acc",
        "test_acc",
        "backprops",
        "epochs",
        "seconds_per_epoch",
        "backprops_to_acc0.99",
        "epoch_to_acc0.99",
        *(f"{x}_to_loss{t:g}" for t in targets for x in ("backprops", "epoch")),
    ]
    table = summarize(frame, columns)
    table["method"] = [label.split(" ")[0] for label in table["label"]]
    best = table.loc[table.groupby("method")["train_loss"].idxmin()]
    table["best"] = table["label"].isin(best["label"])
    frame.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    lines = [
        "| method (step size) | runs | final train loss | train acc | test acc | backprops to 99% acc "
        "| epochs to 99% acc | s / epoch | best |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, col: str) -> str:
        v, ci = row[col], row.get(f"{col}_ci")
        if not isinstance(v, float) or not math.isfinite(v):
            return f"not reached ({int(row.get(f'{col}_reached', 0))}/{int(row['runs'])})"
        return f"{v:.4g} ± {ci:.2g}" if isinstance(ci, float) and math.isfinite(ci) else f"{v:.4g}"

    for _, row in table.iterrows():
        lines.append(
            f"| {row['label']} | {int(row['runs'])} | {cell(row, 'train_loss')} | {cell(row, 'train_acc')} | "
            f"{cell(row, 'test_acc')} | {cell(row, 'backprops_to_acc0.99')} | "
            f"{cell(row, 'epoch_to_acc0.99')} | "
            f"{cell(row, 'seconds_per_epoch')} | {'yes' if row['best'] else ''} |"
        )
    text = "\n".join(lines) + "\n\n(mean ± 95% CI half-width over seeds)\n"
    (out / "summary.md").write_text(text)
    best_runs = [r for r in runs if r.label in set(best["label"])]
    for x in ("backprops", "epoch", "seconds"):
        write_figure(loss_curves(best_runs, x=x), out / f"loss_vs_{x}", png=png)
    return text


# -- etr plot ----------------------------------------------------------------------------------------------


def _reconstructions(runs, n_images: int = 8):
    """Originals and per-method reconstructions of autoencoder runs (paper Fig. 11), or None.

    Checkpoints load with ``weights_only=True`` and their checksum verified; a run whose checkpoints
    are all unusable is skipped with a one-line note.
    """
    from etr_core.checkpoints import load_checkpoint
    from etr_core.errors import CheckpointError
    from etr_core.models import build_model
    from etr_core.results import run_state
    from etr_core.training import TrainConfig, dataset_for

    ae = [
        r
        for r in runs
        if r.config.get("task") == "autoencoder" and run_state(r.path) in ("resumable", "finished")
    ]
    if not ae:
        return None
    recon, originals = {}, None
    for run in ae:
        if run.label in recon:
            continue
        try:
            found = load_checkpoint(run.path, "cpu")
        except CheckpointError as exc:
            print(f"reconstructions skipped for {run.path}: {exc}", file=sys.stderr)
            continue
        if found is None:
            continue
        fields = {k: v for k, v in run.config.items() if k in TrainConfig.__dataclass_fields__}
        cfg = TrainConfig(**{**fields, "device": "cpu"})
        data = dataset_for(cfg)
        model = build_model(cfg.model, data.input_shape, data.num_classes, seed=cfg.seed)
        model.load_state_dict(found[0]["model"])
        x = data.test_x[:n_images].to(next(model.parameters()).dtype)
        originals = data.test_x[:n_images]
        recon[run.label] = model.reconstruct(x)
    return (originals, recon) if recon else None


def _cmd_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.results import find_runs, load_run
    from etr_core.viz.training_plots import (
        best_of_grid,
        loss_curves,
        reconstruction_grid,
        static_export_available,
        tr_traces,
        write_figure,
    )

    try:
        paths = find_runs(args.run_dirs)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if not paths:
        parser.error(f"no run folders (with config.json) found under {' '.join(args.run_dirs)}")
    runs = [load_run(p) for p in paths]
    if not args.all:
        runs = best_of_grid(runs)
    png = not args.html_only
    out = Path(args.out)
    written = []
    for x in args.x:
        written += write_figure(loss_curves(runs, x=x, y=args.y), out / f"{args.y}_vs_{x}", png=png)
    tr_runs = [r for r in runs if not r.metrics.empty and "radius" in r.metrics]
    if tr_runs:
        written += write_figure(tr_traces(tr_runs), out / "tr_traces", png=png)
    try:
        rec = _reconstructions(runs)
    except FileNotFoundError as exc:
        rec = None
        print(f"reconstructions skipped: {exc}".splitlines()[0], file=sys.stderr)
    if rec is not None:
        written += write_figure(reconstruction_grid(*rec), out / "reconstructions", png=png)
    for path in written:
        print(path)
    if not static_export_available():
        print("HTML only: PNG export needs the 'kaleido' package.", file=sys.stderr)
    return 0


# -- etr reproduce -----------------------------------------------------------------------------------------


def _add_reproduce_parser(sub) -> None:
    from etr_core.reproduce import FIGURES, NETWORKS

    r = sub.add_parser(
        "reproduce",
        help="regenerate one of the paper's figures (2, 3, 4, 6, 9, 10, 11) from scratch",
        description="Run the paper's protocol for one figure: its networks (appendix C), seeds and a "
        "budget in backprops per run, then write the figure and a table with 95% intervals.\n\n"
        + "\n".join(f"  {k:6s} {v.title}" for k, v in FIGURES.items()),
        epilog=_REPRODUCE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("figure", choices=tuple(FIGURES), metavar="FIGURE", help=", ".join(FIGURES))
    r.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized protocol: 3 seeds, a few thousand backprops, training subsets (labelled)",
    )
    r.add_argument(
        "--dataset",
        default=None,
        help="fashion_mnist (default for figs. 3, 4, 9, 10, 11), cifar10, mnist (fig. 6), digits",
    )
    r.add_argument(
        "--networks",
        default=None,
        help=f"comma-separated subset of {', '.join(NETWORKS)} (default: all the figure has; "
        "--quick leaves out resnet18)",
    )
    r.add_argument(
        "--methods", default=None, help="comma-separated subset of the figure's methods (default: all)"
    )
    r.add_argument("--data-root", default=None, help="folder holding mnist/, fashion_mnist/, cifar10/")
    r.add_argument("--seeds", type=_positive_int, default=None, help="seeds 0..N-1 (paper: 10, quick: 3)")
    r.add_argument(
        "--budget", type=_positive_int, default=None, help="backprops per run (default: the protocol's)"
    )
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument(
        "--threads", type=_thread_count, default=None,
        help="torch CPU threads (default: auto, torch's count capped by the cores the load leaves free)",
    )
    r.add_argument("--out", default="reproduce", help="results folder (default ./reproduce)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(handler=_cmd_reproduce, command_parser=r)


def _cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.reproduce import FIGURES, ReproduceRequest, reproduce
    from etr_core.reproduce.protocol import problems_for

    networks = tuple(n.strip() for n in args.networks.split(",") if n.strip()) if args.networks else None
    dataset = args.dataset or FIGURES[args.figure].datasets[0]
    try:
        problems_for(args.figure, dataset, quick=args.quick, seeds=args.seeds, budget=args.budget,
                     networks=networks)
    except ValueError as exc:
        parser.error(f"{args.figure} --dataset {dataset}: {exc}")
    request = ReproduceRequest(
        figure=args.figure,
        dataset=dataset,
        quick=args.quick,
        seeds=args.seeds,
        budget=args.budget,
        networks=networks,
        data_root=args.data_root,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
        threads=args.threads,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None,
    )
    try:
        result = reproduce(request)
    except FileNotFoundError as exc:
        parser.error(str(exc).splitlines()[0])
    except ValueError as exc:
        parser.error(str(exc).splitlines()[0])
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to continue (out: {args.out})", file=sys.stderr)
        return 130
    print(result.markdown)
    for path in result.files:
        print(path)
    return 0


# -- etr download ------------------------------------------------------------------------------------------


def _cmd_download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.data import download

    folder = download(args.dataset, args.root)
    print(f"{args.dataset} is ready in {folder}")
    return 0


# -- parser ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="etr",
        description="Ellipsoidal trust-region methods for neural network training "
        "(Adolphs, Kohler & Lucchi). "
        "Train networks with TR_uni / TR_ada / TR_rms or first-order baselines, compare them, plot results.",
        epilog="Run 'etr COMMAND --help' for the options and examples of each command. A user error "
        "prints one line and exits with status 2; add --debug anywhere to see its traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    methods_help = "\n".join(f"  {k:8s} {v.description}" for k, v in METHODS.items())

    p = sub.add_parser(
        "train",
        help="train one method with one seed into a run folder",
        description="Train one method with one seed; writes a run folder (config, metrics,\n"
        "evaluations, checkpoints, summary). Stop with Ctrl-C and continue later with --resume.\n\n"
        "methods:\n" + methods_help,
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--method", default="TR_rms", choices=tuple(METHODS), help="training method (default TR_rms)"
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of the data split, init and batches")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="mini-batch size (default: 512 for TR, Table 1; 32 for first-order)",
    )
    p.add_argument("--lr", type=_positive_float, default=None, help="step size of a first-order method")
    p.add_argument("--out", default=None, help="run folder (default runs/DATASET-MODEL-METHOD-sSEED)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint: `--resume RUN_DIR` takes the configuration from the "
        "folder (budget flags such as --max-steps extend it); a bare `--resume` continues --out",
    )
    _add_run_options(p)
    p.set_defaults(handler=_cmd_train, command_parser=p)

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
        default="TR_uni,TR_ada,TR_rms,SGD,Adagrad,RMSprop,Adam",
        help="comma-separated methods (default: all)",
    )
    c.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds 0..N-1 (default 3)")
    c.add_argument("--seed-list", default=None, help="explicit comma-separated seeds (overrides --seeds)")
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

    q = sub.add_parser(
        "plot",
        help="loss curves (Figs. 3, 4, 9, 10), TR traces, reconstructions (Fig. 11)",
        description="Plot run folders: log loss vs backprops / epochs / seconds (mean and 95% "
        "CI over seeds per method, 99% accuracy marker), radius/rho/CG traces of TR runs, "
        "autoencoder reconstructions. Writes HTML (PNG too when kaleido is installed).",
        epilog=_PLOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders containing them")
    q.add_argument("--out", required=True, help="folder for the figures")
    q.add_argument(
        "--x",
        nargs="+",
        default=["backprops", "epoch", "seconds"],
        choices=("backprops", "epoch", "seconds"),
        help="x axes (default: all three)",
    )
    q.add_argument("--y", default="train_loss", choices=("train_loss", "test_loss"), help="loss to plot")
    q.add_argument(
        "--all",
        action="store_true",
        help="draw every step size of a grid (default: the best step size per method, by mean final "
        "training loss)",
    )
    q.add_argument("--html-only", action="store_true", help="write the figures as HTML only (no PNG)")
    q.set_defaults(handler=_cmd_plot, command_parser=q)

    _add_reproduce_parser(sub)

    d = sub.add_parser(
        "download",
        help="download a dataset (needs internet access)",
        description="Download the official files of a dataset into ROOT/DATASET/ and verify "
        "their MD5 sums. Without internet access, copy the files there by hand.",
    )
    d.add_argument("dataset", choices=FILE_DATASETS)
    d.add_argument("--root", default=None, help="data folder (default: $ETR_DATA or ./data)")
    d.set_defaults(handler=_cmd_download, command_parser=d)

    try:
        from etr_core.hessian_cli import add_parser as add_hessian_parser
    except ImportError as exc:
        reason = str(exc)
        h = sub.add_parser("hessian", help="Hessian structure experiment (Figs. 2, 6)", add_help=True)
        h.set_defaults(
            handler=lambda a, p: p.error(f"'etr hessian' is unavailable in this installation: {reason}"),
            command_parser=h,
        )
    else:
        add_hessian_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {one_line(str(message))}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``etr`` command; returns the exit status.

    User errors (see :func:`etr_core.errors.user_message`) print one line and exit with status 2;
    ``--debug`` anywhere in ``argv`` (or ``ETR_DEBUG=1``) shows their traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ETR_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    command_parser = getattr(args, "command_parser", parser)
    if handler is None:
        func = getattr(args, "func", None)
        if func is None:
            parser.error("no command given")

        def handler(a, _p):
            return func(a)

    args.given_flags = _given_flags(command_parser, args, argv) if command_parser is not parser else set()
    for flag in ("out", "resume", "data_root"):
        if getattr(args, flag, None) == "":  # an unset shell variable: never the current or default folder
            command_parser.error(f"--{flag.replace('_', '-')} is empty; give a folder path")
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        try:
            return int(handler(args, command_parser) or 0)
        except Exception as exc:
            message = None if debug else user_message(exc)
            if message is None:
                raise
            command_parser.exit(2, f"{command_parser.prog}: error: {message}\n")
        finally:
            from etr_core import distributed as etr_dist

            etr_dist.cleanup()


if __name__ == "__main__":
    sys.exit(main())
