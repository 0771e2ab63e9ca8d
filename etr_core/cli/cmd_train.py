"""``etr train``: one method, one seed, one run folder; ``--resume`` continues it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etr_core.cli.options import (
    _add_run_options,
    _check_method_settings,
    _common_config,
    _fmt,
    _is_main_process,
    _key_values,
    _positive_float,
    _positive_int,
    _seed,
)
from etr_core.cli.progress import _progress
from etr_core.training import METHODS

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


def add_train_parser(sub) -> None:
    """Add ``etr train`` to the subcommands ``sub``."""
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
        tr_options = _key_values(args.tr_option, "--tr-option", parser)
        _check_method_settings(args.method, args.preset, tr_options, parser)
        try:
            config = TrainConfig(
                method=args.method,
                seed=args.seed,
                batch_size=args.batch_size,
                lr=args.lr,
                preset=args.preset,
                tr_options=tr_options,
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

