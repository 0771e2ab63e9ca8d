"""The ``etr`` parser and entry point: one subcommand per module beside this one, user errors as one
line with exit status 2, ``--debug`` for the traceback, warnings as one line each."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from etr_core.cli.cmd_compare import add_compare_parser
from etr_core.cli.cmd_download import add_download_parser
from etr_core.cli.cmd_plot import add_plot_parser
from etr_core.cli.cmd_reproduce import add_reproduce_parser
from etr_core.cli.cmd_train import add_train_parser
from etr_core.cli.options import _Parser
from etr_core.cli_resume import given_flags as _given_flags
from etr_core.errors import show_warning_line, user_message


def build_parser() -> argparse.ArgumentParser:
    """The ``etr`` parser: ``--debug`` and the commands train, compare, plot, reproduce, download, hessian."""
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
    add_train_parser(sub)
    add_compare_parser(sub)
    add_plot_parser(sub)
    add_reproduce_parser(sub)
    add_download_parser(sub)

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


def _check_environment() -> None:
    """Refuse a bad ``ETR_*`` setting before any work, whichever command or method reads it later."""
    from etr_core.subproblem.steihaug_device import cg_loop

    cg_loop()  # ValueError naming ETR_CG_LOOP


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
    for flag in ("out", "resume", "data_root", "root"):
        if getattr(args, flag, None) == "":  # an unset shell variable: never the current or default folder
            command_parser.error(f"--{flag.replace('_', '-')} is empty; give a folder path")
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = show_warning_line
        try:
            _check_environment()
            return int(handler(args, command_parser) or 0)
        except Exception as exc:
            message = None if debug else user_message(exc)
            if message is None:
                raise
            command_parser.exit(2, f"{command_parser.prog}: error: {message}\n")
        finally:
            from etr_core import distributed as etr_dist

            etr_dist.cleanup()

