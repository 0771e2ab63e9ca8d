"""``etr plot``: the paper's figures from run folders: loss curves (Figs. 3, 4, 9, 10), TR traces and
autoencoder reconstructions (Fig. 11)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_PLOT_EPILOG = """
examples:
  etr plot runs/cmp --out figures          # best step size per method (the paper's picture)
  etr plot runs/cmp --all --out figures    # every configuration of the grid
  etr plot runs/a runs/b --x backprops --out figures
"""


def add_plot_parser(sub) -> None:
    """Add ``etr plot`` to the subcommands ``sub``."""
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

    if not all(d.strip() for d in args.run_dirs):  # an unset shell variable: never the current folder
        parser.error(f"RUN_DIR is empty in {args.run_dirs!r}; give run folders or folders containing them")
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
