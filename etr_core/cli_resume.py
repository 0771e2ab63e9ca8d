"""``etr train --resume RUN``: which flags typed on the command line may change a resumed run.

Budget flags (``--max-steps``, ``--max-epochs``, ``--max-seconds``) extend or shorten the run; cadence
and placement flags (``--eval-every``, ``--checkpoint-every``, ``--device``, ``--threads``,
``--data-root``) apply; the trainer records each change in config.json ("resumes"). Any other flag
that differs from the saved setting is refused with exit status 2, naming each one; a flag that
repeats the saved value (or the resolved default batch size / step size) is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["given_flags", "resumed_config"]

# Flags of `etr train` and the configuration field each one sets; on --resume the budget flags extend
# the run, the cadence/placement flags apply as recorded changes, and any other flag that differs from
# the saved configuration is refused (never silently ignored).
_BUDGET_FLAGS = {"max_steps": "--max-steps", "max_epochs": "--max-epochs", "max_seconds": "--max-seconds"}
_CHANGEABLE_FLAGS = {
    "eval_every": ("eval_every", "--eval-every"),
    "checkpoint_every": ("checkpoint_every", "--checkpoint-every"),
    "device": ("device", "--device"),
    "threads": ("num_threads", "--threads"),
    "data_root": ("data_root", "--data-root"),
}
_FIXED_FLAGS = {
    "method": ("method", "--method"),
    "seed": ("seed", "--seed"),
    "batch_size": ("batch_size", "--batch-size"),
    "lr": ("lr", "--lr"),
    "preset": ("preset", "--preset"),
    "tr_option": ("tr_options", "--tr-option"),
    "dataset": ("dataset", "--dataset"),
    "model": ("model", "--model"),
    "max_train": ("data_options", "--max-train"),
    "dtype": ("dtype", "--dtype"),
}


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> set[str]:
    """Destinations of the options the user typed after the command (defaults excluded)."""
    command = getattr(args, "command", None)
    if command not in argv:
        return set()
    rest = list(argv[argv.index(command) + 1 :])
    actions = [a for a in parser._actions if a.dest != "help"]
    saved = [(a, a.default, a.required) for a in actions]
    try:
        for a in actions:
            a.default, a.required = argparse.SUPPRESS, False
        given, _ = parser.parse_known_args(rest, argparse.Namespace())
    finally:
        for a, default, required in saved:
            a.default, a.required = default, required
    return {a.dest for a in actions if hasattr(given, a.dest)}


def _flag_value(dest: str, args: argparse.Namespace, saved: dict[str, Any], parse_key_values) -> Any:
    if dest == "tr_option":
        return {**(saved.get("tr_options") or {}), **parse_key_values(args.tr_option)}
    if dest == "max_train":
        return {**(saved.get("data_options") or {}), "max_train": args.max_train}
    return getattr(args, dest)


def resumed_config(
    run_dir: Path,
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    parse_key_values: Callable[[Sequence[str] | None], dict[str, Any]],
) -> Any:
    """The configuration saved in ``run_dir`` with the changes the typed flags ask for.

    Budget flags extend the run and cadence/placement flags apply (both recorded in config.json by
    the trainer); a flag that would change the run itself (method, batch size, step size, data,
    ...) is refused with exit 2, naming each one, unless it repeats the saved value.
    """
    from etr_core.results import load_run
    from etr_core.training import TrainConfig

    try:
        saved = load_run(run_dir).config
    except FileNotFoundError as exc:
        parser.error(f"--resume {run_dir}: {exc}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in fields}
    given = getattr(args, "given_flags", set())
    for dest in given & set(_BUDGET_FLAGS):
        values[dest] = getattr(args, dest)
    for dest in given & set(_CHANGEABLE_FLAGS):
        values[_CHANGEABLE_FLAGS[dest][0]] = getattr(args, dest)
    conflicts = []
    for dest in sorted(given & set(_FIXED_FLAGS)):
        field, flag = _FIXED_FLAGS[dest]
        wanted = _flag_value(dest, args, saved, parse_key_values)
        resolved = saved.get(f"{field}_resolved") if field in ("batch_size", "lr") else None
        if wanted != saved.get(field) and (resolved is None or wanted != resolved):
            have = saved.get(field) if resolved is None else resolved
            conflicts.append(f"{flag} (run has {have!r}, flag asks {wanted!r})")
    if conflicts:
        changeable = [*_BUDGET_FLAGS.values(), *(flag for _, flag in _CHANGEABLE_FLAGS.values())]
        parser.error(
            f"--resume {run_dir}: a resumed run keeps its settings; these flags would change it: "
            f"{', '.join(conflicts)}. Drop them, or start a new run in another folder (--out). Flags that "
            f"may change on resume: {', '.join(changeable)}"
        )
    try:
        return TrainConfig.from_dict(values)
    except (ValueError, TypeError) as exc:
        parser.error(f"--resume {run_dir}: {exc}")
