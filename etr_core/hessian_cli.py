"""``etr hessian``: the diagonal-dominance experiment of Fig. 2 / Fig. 6 from the command line.

Registers the sub-command on the ``etr`` parser (``add_parser``); runs
:func:`etr_core.hessian_experiment.run_hessian_experiment` with a tqdm progress bar and writes
``rows.csv``, ``summary.csv``, ``results.json`` and ``figure.html`` into ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from etr_core.curvature.hessian import DEFAULT_MAX_PARAMS

__all__ = ["add_parser", "config_from_args", "main", "run_hessian_command"]

_EPILOG = """\
examples:
  etr hessian --out runs/hessian                          # digits, archs 8, 16-16, 32; 10 seeds
  etr hessian --archs 16,32 --seeds 3 --steps 200 --out runs/h-quick
  etr hessian --dataset fashion_mnist --archs 4 --max-train 5000 --out runs/h-fmnist
The baselines: delta_W(1/d) is Proposition 1 (corrected) with equal Wigner scales; delta_W(RMS) uses
the RMS of the Hessian's off-diagonal and diagonal entries as the two scales.
"""


def _int_at_least(minimum: int, name: str, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be <= {maximum}, got {value}")
        return value

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number > 0, got {text!r}")
        return value

    return parse


def _archs(text: str) -> tuple[str, ...]:
    from etr_core.hessian_experiment import parse_arch

    archs = tuple(a.strip() for a in text.split(",") if a.strip())
    if not archs:
        raise argparse.ArgumentTypeError(f"--archs must list hidden widths such as '16,16-16', got {text!r}")
    for arch in archs:
        try:
            parse_arch(arch)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(f"--archs: {err}") from None
    return archs


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``etr hessian`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from etr_core.hessian_experiment import DATASET_DEFAULT_ARCHS, DATASETS

    p = subparsers.add_parser(
        "hessian",
        help="diagonal mass of exact Hessians vs a Wigner matrix over training (Figs. 2, 6)",
        description="For small tanh MLPs and several seeds: exact Hessian on a fixed batch at "
        "initialisation, mid-training and end of RMSProp training; diagonal mass delta_H against "
        "two Wigner baselines (section 3.2, Proposition 1 corrected); mean and 95% interval over seeds.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = ", ".join(f"{k}: {' '.join(v)}" for k, v in DATASET_DEFAULT_ARCHS.items())
    p.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="dataset (default digits; file datasets are read from --data-root)")
    p.add_argument("--archs", type=_archs, default=None,
                   help=f"comma-separated hidden widths, e.g. '16,16-16' (defaults per dataset: {defaults})")
    p.add_argument("--activation", default="tanh", help="activation between layers (default tanh)")
    p.add_argument("--seeds", type=_int_at_least(1, "--seeds", 1000), default=10,
                   help="number of seeds 0..N-1 (default 10, at most 1000; the 95%% interval needs >= 2)")
    p.add_argument("--steps", type=_int_at_least(0, "--steps"), default=300,
                   help="RMSProp steps; Hessians at 0, steps/2 and steps (default 300)")
    p.add_argument("--batch", type=_int_at_least(0, "--batch"), default=256,
                   help="examples in the Hessian's fixed batch; 0 = the whole training set (default 256)")
    p.add_argument("--train-batch", type=_int_at_least(1, "--train-batch"), default=64,
                   help="RMSProp mini-batch size (default 64)")
    p.add_argument("--lr", type=_positive_float("--lr"), default=0.01,
                   help="RMSProp step size (default 0.01)")
    p.add_argument("--max-train", type=_int_at_least(1, "--max-train"), default=10_000,
                   help="use only the first N training examples (default 10000)")
    p.add_argument("--max-params", type=_int_at_least(1, "--max-params"), default=DEFAULT_MAX_PARAMS,
                   help=f"refuse networks with more parameters (default {DEFAULT_MAX_PARAMS:,})")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="Hessian precision")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device (default cpu)")
    p.add_argument("--data-root", default=None,
                   help="folder of the file datasets (default $ETR_DATA or ./data)")
    p.add_argument("--out", required=True, help="output folder for CSV, JSON and the HTML figure")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_hessian_command, hessian_parser=p, command_parser=p)
    return p


def config_from_args(args: argparse.Namespace):
    """Build (and so validate) the experiment configuration from parsed arguments."""
    from etr_core.hessian_experiment import HessianExperimentConfig

    return HessianExperimentConfig(
        dataset=args.dataset, archs=args.archs, activation=args.activation, seeds=args.seeds,
        steps=args.steps, batch=args.batch, train_batch=args.train_batch, lr=args.lr,
        max_train=args.max_train, max_params=args.max_params, dtype=args.dtype, device=args.device,
        data_root=args.data_root,
    )


def _fail(args: argparse.Namespace, message: str) -> int:
    parser = getattr(args, "hessian_parser", None)
    if parser is not None:
        parser.error(message)
    print(f"etr hessian: error: {message}", file=sys.stderr)
    return 2


def run_hessian_command(args: argparse.Namespace) -> int:
    """Validate, run the experiment with a progress bar, write the results; returns the exit status."""
    from etr_core.hessian_experiment import run_hessian_experiment, write_results

    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as err:
        return _fail(args, str(err))
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=1, unit="hessian", desc="etr hessian")

    def progress(done: int, total: int, message: str) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

    try:
        result = run_hessian_experiment(config, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        return _fail(args, str(err))
    finally:
        if bar is not None:
            bar.close()
    paths = write_results(result, args.out)
    for entry in result.summary:
        print(
            f"{entry['arch']:>8} d={entry['d']:>6,} {entry['phase']:>6}: "
            f"delta_H={entry['delta_h_mean']:.4g}  "
            f"delta_H/delta_W(1/d)={entry['ratio_equal_mean']:.3g}  "
            f"delta_H/delta_W(RMS)={entry['ratio_rms_mean']:.3g}  (n={entry['n']})"
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``etr hessian`` on its own (``python -m etr_core.hessian_cli --out DIR``)."""
    parser = argparse.ArgumentParser(prog="etr")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["hessian", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
