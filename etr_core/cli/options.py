"""Argument types and the options every run command shares (data, network, budget, logging, TR
options), and their translation into :class:`etr_core.training.TrainConfig` fields.

Every argument is checked while parsing: a bad value is one line naming the flag, its value and the
expected range (:class:`_Parser`), exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

from etr_core.data import DATASET_NAMES, MAX_SEED
from etr_core.errors import one_line
from etr_core.models import MODEL_DESCRIPTIONS, MODEL_NAMES
from etr_core.training import MAX_THREADS


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


# Most seeds one command runs (etr compare, reproduce, hessian; the paper uses 10): a count is checked
# before any range of seeds is built. Equal to etr_core.reproduce.protocol.MAX_SEEDS.
MAX_SEED_COUNT = 1000


def _seed_count(text: str) -> int:
    problem = f"expected a number of seeds from 1 to {MAX_SEED_COUNT}, got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if not 1 <= value <= MAX_SEED_COUNT:
        raise argparse.ArgumentTypeError(problem)
    return value


def _comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated list with at least one item: an empty one (an unset shell variable) is an
    error, never "the default"."""
    items = tuple(item.strip() for item in text.split(","))
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list (one item or more), got {text!r}")
    if not all(items):
        raise argparse.ArgumentTypeError(f"the list {text!r} has an empty item; remove the extra comma")
    return items


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


def _check_method_settings(
    method: str, preset: str, tr_options: dict[str, Any], parser: argparse.ArgumentParser,
    method_flag: str = "--method",
) -> None:
    """Refuse ``--preset`` / ``--tr-option`` values ``method`` would not run (ARC: trust-region values;
    TR_hess: the authors' preset), naming the flags (:mod:`etr_core.training.method_settings`)."""
    from etr_core.training.method_settings import settings_problem

    problem = settings_problem(method, preset, tr_options, flags=True, method_flag=method_flag)
    if problem:
        parser.error(problem)


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

