"""``etr reproduce``: regenerate one of the paper's figures from scratch (:mod:`etr_core.reproduce`)."""

from __future__ import annotations

import argparse
import sys

from etr_core.cli.options import MAX_SEED_COUNT, _comma_list, _positive_int, _seed_count, _thread_count


def _job_count(text: str) -> int:
    from etr_core.reproduce.pool import MAX_JOBS

    value = _positive_int(text)
    if value > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"at most {MAX_JOBS} parallel runs, got {value}")
    return value


_REPRODUCE_EPILOG = """
examples:
  etr reproduce fig3 --quick --data-root ~/data --out repro     # minutes on a laptop CPU
  etr reproduce fig4 --dataset fashion_mnist --networks mlp --quick --out repro
  etr reproduce fig4 --dataset cifar10 --device cuda --out repro        # paper protocol: 10 seeds
  etr reproduce fig4 --device cuda --jobs 8 --out repro     # 8 runs at once share one GPU
  etr reproduce fig6 --dataset mnist --quick --out repro
  etr reproduce fig11 --quick --seeds 1 --out repro

Each figure writes <out>/<figure>/ (figure as HTML and PNG, table.md with mean and 95% interval over
seeds) and the run folders under <out>/runs/ (shared by figs. 3, 4, 9, 10 and 11). Rerun the same
command after an interruption: finished runs are skipped, partial ones resume from their checkpoints.
Without CIFAR-10 files a generated stand-in is used and labelled as such.
"""


def add_reproduce_parser(sub) -> None:
    """Add ``etr reproduce`` to the subcommands ``sub``."""
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
        type=_comma_list,
        default=None,
        help=f"comma-separated subset of {', '.join(NETWORKS)} (default: all the figure has; "
        "--quick leaves out resnet18)",
    )
    r.add_argument(
        "--methods", type=_comma_list, default=None,
        help="comma-separated subset of the figure's methods (default: all)",
    )
    r.add_argument("--data-root", default=None, help="folder holding mnist/, fashion_mnist/, cifar10/")
    r.add_argument(
        "--seeds", type=_seed_count, default=None,
        help=f"seeds 0..N-1 (paper: 10, quick: 3; at most {MAX_SEED_COUNT})",
    )
    r.add_argument(
        "--budget", type=_positive_int, default=None, help="backprops per run (default: the protocol's)"
    )
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument(
        "--threads", type=_thread_count, default=None,
        help="torch CPU threads (default: auto, torch's count capped by the cores the load leaves free)",
    )
    r.add_argument(
        "--jobs", type=_job_count, default=1,
        help="runs trained at once, each in its own process (default 1; on a GPU e.g. 8: one small "
        "run leaves it mostly idle); with --threads unset each gets cores/jobs threads",
    )
    r.add_argument("--out", default="reproduce", help="results folder (default ./reproduce)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(handler=_cmd_reproduce, command_parser=r)


def _cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.reproduce import FIGURES, ReproduceRequest, reproduce
    from etr_core.reproduce.protocol import problems_for

    networks = args.networks
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
        methods=args.methods,
        jobs=args.jobs,
    )
    try:  # other user errors (missing data, an unwritable --out) print whole, as one line, from main()
        result = reproduce(request)
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to continue (out: {args.out})", file=sys.stderr)
        return 130
    print(result.markdown)
    for path in result.files:
        print(path)
    return 0
