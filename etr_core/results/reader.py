"""Reading run folders back: JSON-lines logs (unreadable lines skipped with a warning), JSON
objects, :class:`LoadedRun` and the search for run folders under a path."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from etr_core.results.layout import (
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    EVALS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    ResultsWarning,
)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON-object rows of a JSON-lines file.

    Unreadable lines (not JSON, not an object) are skipped and reported in one
    :class:`ResultsWarning` naming the file and the line numbers; reading goes on after them. A torn
    last line without its newline (a writer killed mid-line) is skipped silently.
    """
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                row = json.loads(text)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif line.endswith("\n"):
                bad.append(number)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(
            f"{path}: skipped {len(bad)} unreadable line(s) (line {shown}); using the other {len(rows)} rows",
            ResultsWarning,
            stacklevel=2,
        )
    return rows


@dataclass
class LoadedRun:
    """A run folder read back: configuration, environment, logs as DataFrames, summary."""

    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    metrics: pd.DataFrame
    evals: pd.DataFrame
    summary: dict[str, Any] | None

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def label(self) -> str:
        """Method name with its step size (first-order) or preset (TR) for legends and tables."""
        lr = self.config.get("lr_resolved", self.config.get("lr"))
        label = self.method if lr is None else f"{self.method} (lr={lr:g})"
        if self.config.get("preset", "paper") != "paper":
            label += f" [{self.config['preset']} preset]"
        return label


def read_json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, ``None`` if the file is absent; ``ValueError`` naming the file
    when it is not valid JSON or not an object."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a run file (JSON nested too deeply to read)") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _optional_json(path: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(path)
    except ValueError as exc:
        warnings.warn(f"{exc}; ignored", ResultsWarning, stacklevel=3)
        return None


def load_run(run_dir: str | os.PathLike) -> LoadedRun:
    """Read a run folder written by :func:`etr_core.training.train`.

    A missing or unreadable ``config.json`` raises (``FileNotFoundError`` / ``ValueError`` naming
    it); an unreadable ``environment.json`` or ``summary.json`` is reported (:class:`ResultsWarning`)
    and read as absent; unreadable log lines are skipped and reported (:func:`read_jsonl`).
    """
    path = Path(run_dir)
    config = read_json_object(path / CONFIG_FILE)
    if config is None:
        raise FileNotFoundError(f"{path} is not a run folder: {CONFIG_FILE} is missing")

    metrics = read_jsonl(path / METRICS_FILE) if (path / METRICS_FILE).exists() else []
    evals = read_jsonl(path / EVALS_FILE) if (path / EVALS_FILE).exists() else []
    return LoadedRun(
        path=path,
        config=config,
        environment=_optional_json(path / ENVIRONMENT_FILE) or {},
        metrics=pd.DataFrame(metrics),
        evals=pd.DataFrame(evals),
        summary=_optional_json(path / SUMMARY_FILE),
    )


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders among ``paths``: each path is a run folder or a folder searched recursively."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / CONFIG_FILE).exists():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(c.parent for c in p.rglob(CONFIG_FILE)))
        else:
            raise FileNotFoundError(f"{p} is neither a run folder nor a folder containing runs")
    return found
