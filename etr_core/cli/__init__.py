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

The command is split by job: :mod:`~etr_core.cli.options` (argument types, shared run options),
:mod:`~etr_core.cli.progress`, one module per command (``cmd_train``, ``cmd_compare`` with
:mod:`~etr_core.cli.compare_summary`, ``cmd_plot``, ``cmd_reproduce``, ``cmd_download``; ``etr
hessian`` is :mod:`etr_core.hessian_cli`) and :mod:`~etr_core.cli.command` (parser and entry point).
"""

from __future__ import annotations

from etr_core.cli.cmd_compare import DEFAULT_COMPARE_BACKPROPS
from etr_core.cli.command import build_parser, main
from etr_core.cli.compare_summary import write_compare_summary

__all__ = ["DEFAULT_COMPARE_BACKPROPS", "build_parser", "main", "write_compare_summary"]
