"""``etr download``: fetch a dataset's official files (needs internet access)."""

from __future__ import annotations

import argparse

from etr_core.data import FILE_DATASETS


def add_download_parser(sub) -> None:
    """Add ``etr download`` to the subcommands ``sub``."""
    d = sub.add_parser(
        "download",
        help="download a dataset (needs internet access)",
        description="Download the official files of a dataset into ROOT/DATASET/ and verify "
        "their MD5 sums. Without internet access, copy the files there by hand.",
    )
    d.add_argument("dataset", choices=FILE_DATASETS)
    d.add_argument("--root", default=None, help="data folder (default: $ETR_DATA or ./data)")
    d.set_defaults(handler=_cmd_download, command_parser=d)


def _cmd_download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from etr_core.data import download

    folder = download(args.dataset, args.root)
    print(f"{args.dataset} is ready in {folder}")
    return 0
