"""Run folders: configuration, environment, metrics, evaluations, summary and checkpoints.

Layout of one run folder::

    config.json        the TrainConfig (plus the resolved TR hyper-parameters)
    environment.json   versions, device, threads, command line, start time
    metrics.jsonl      one JSON object per logged training step (the ``on_step`` record)
    evals.jsonl        one JSON object per evaluation (the ``on_eval`` record)
    summary.json       written when the run ends (stop reason, final numbers, counters)
    checkpoint.pt      model, optimiser, sampler, RNG states, counters and clock, with a sha256
    checkpoint.prev.pt the checkpoint before it (used when checkpoint.pt is damaged)
    .lock              held (fcntl) by the process writing the folder

Every JSON file is strict JSON: non-finite floats are written as ``null`` so a NaN can never
corrupt a results file for other readers. ``checkpoint.pt`` and the JSON files are written
atomically (temporary file in the same folder, ``fsync``, ``os.replace``), so killing the process
at any moment leaves either the previous or the new complete file, never a torn one; temporary
files left by a killed writer (``.checkpoint.pt.*.tmp``) are removed when the folder is opened
for writing again. Checkpoints load with ``torch.load(weights_only=True)`` and are verified
against their checksum (:mod:`etr_core.checkpoints`). Readers of the JSON-lines logs skip an
unreadable line with a :class:`ResultsWarning` naming the file and line instead of stopping there.
Files get the permissions ``open()`` gives (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from etr_core import checkpoints
from etr_core.files import RunLock, atomic_write, fsync_dir

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = checkpoints.CHECKPOINT_FILE
PREVIOUS_CHECKPOINT_FILE = checkpoints.PREVIOUS_CHECKPOINT_FILE
DAMAGED_CHECKPOINT_FILE = "checkpoint.damaged.pt"
_WRITTEN_FILES = (CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, EVALS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)

__all__ = [
    "LoadedRun",
    "ResultsWarning",
    "RunWriter",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "dumps",
    "find_runs",
    "fsync_dir",
    "json_safe",
    "load_run",
    "read_jsonl",
    "run_state",
]


class ResultsWarning(UserWarning):
    """A run folder file had unreadable parts that were skipped (the message names file and lines)."""


def json_safe(value: Any) -> Any:
    """Convert ``value`` to strict-JSON data: non-finite floats become ``None``, tensors numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def dumps(value: Any) -> str:
    """Strict JSON text of ``value`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(value), allow_nan=False, sort_keys=False)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Write strict, indented JSON atomically."""
    text = json.dumps(json_safe(value), allow_nan=False, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write` (a killed save never corrupts the checkpoint)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, device and thread counts that make a run reproducible and its timings readable."""
    import numpy

    import etr_core

    info: dict[str, Any] = {
        "etr": etr_core.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "argv": list(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            info["cuda_device_name"] = torch.cuda.get_device_name(index)
            info["cuda_version"] = torch.version.cuda
    return info


def run_state(run_dir: str | os.PathLike) -> str:
    """What a folder holds: "empty", "unstarted" (configuration but no checkpoint yet: it can be
    started again), "resumable" (a checkpoint, no summary) or "finished" (a summary)."""
    path = Path(run_dir)
    if (path / SUMMARY_FILE).exists():
        return "finished"
    # lexists: a checkpoint that is a broken link or a link loop is a damaged checkpoint, not none
    if os.path.lexists(path / CHECKPOINT_FILE) or os.path.lexists(path / PREVIOUS_CHECKPOINT_FILE):
        return "resumable"
    if (path / CONFIG_FILE).exists():
        return "unstarted"
    return "empty"


class RunWriter:
    """Appends records to one run folder; every file it writes is either complete or absent.

    :meth:`lock` takes the folder's lock (a second writer gets ``RunFolderBusyError``);
    :meth:`close` releases it.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(
                f"{self.run_dir} is a file, not a folder; choose another run folder (--out)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self._evals = None
        self._lock = RunLock(self.run_dir)
        self.loaded_checkpoint: Path | None = None  # the file load_checkpoint read

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def lock(self) -> None:
        """Hold the folder's lock until :meth:`close` (raises ``RunFolderBusyError`` if taken)."""
        self._lock.acquire()

    def state(self) -> str:
        """:func:`run_state` of the folder."""
        return run_state(self.run_dir)

    def has_run(self) -> bool:
        """True when the folder holds a run a fresh start would overwrite (a checkpoint or a summary)."""
        return self.state() in ("resumable", "finished")

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed writer left (``.checkpoint.pt.*.tmp`` and the like)."""
        removed = []
        for name in _WRITTEN_FILES:
            for tmp in self.run_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / CONFIG_FILE, config)

    def write_environment(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / ENVIRONMENT_FILE, info)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)

    def _open(self, name: str):
        return open(self.run_dir / name, "a", encoding="utf-8")

    def append_metric(self, record: dict[str, Any]) -> None:
        with _naming(self.run_dir / METRICS_FILE):
            if self._metrics is None:
                self._metrics = self._open(METRICS_FILE)
            self._metrics.write(dumps(record) + "\n")

    def append_eval(self, record: dict[str, Any]) -> None:
        with _naming(self.run_dir / EVALS_FILE):
            if self._evals is None:
                self._evals = self._open(EVALS_FILE)
            self._evals.write(dumps(record) + "\n")
            self._evals.flush()

    def flush(self) -> None:
        for name, handle in ((METRICS_FILE, self._metrics), (EVALS_FILE, self._evals)):
            if handle is not None:
                with _naming(self.run_dir / name):
                    handle.flush()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Flush the logs, then replace ``checkpoint.pt`` atomically with ``state`` and its checksum
        (the previous one becomes ``checkpoint.prev.pt``)."""
        self.flush()
        checkpoints.save_checkpoint(self.run_dir, state)

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The newest good checkpoint, or ``None`` when the folder has none.

        Loads with ``weights_only=True`` and verifies the checksum; a damaged ``checkpoint.pt`` gives
        a one-line warning, is renamed ``checkpoint.damaged.pt`` (when this writer holds the lock) and
        ``checkpoint.prev.pt`` is used. Raises :class:`etr_core.errors.CheckpointError` when no good
        checkpoint is left.
        """
        found = checkpoints.load_checkpoint(self.run_dir, map_location)
        if found is None:
            return None
        state, path = found
        self.loaded_checkpoint = path
        newer = self.checkpoint_path
        if path.name == PREVIOUS_CHECKPOINT_FILE and self._lock.held and os.path.lexists(newer):
            os.replace(self.checkpoint_path, self.run_dir / DAMAGED_CHECKPOINT_FILE)
        return state

    def truncate_logs(self, last_step: int) -> None:
        """Keep the readable log rows up to ``last_step`` (a killed run logged past its last
        checkpoint; the resumed run writes those steps again). Unreadable lines are reported, dropped."""
        self.close_logs()
        for name in (METRICS_FILE, EVALS_FILE):
            path = self.run_dir / name
            if not path.exists():
                continue
            kept = [
                row
                for row in read_jsonl(path)
                if (_step_of(row) or 0) <= last_step and _step_of(row) is not None
            ]
            text = "".join(dumps(row) + "\n" for row in kept)
            atomic_write(path, lambda handle, text=text: handle.write(text.encode()))

    def clear_logs(self) -> None:
        """Start the logs afresh (a run started again before its first checkpoint)."""
        self.close_logs()
        for name in (METRICS_FILE, EVALS_FILE, SUMMARY_FILE):
            path = self.run_dir / name
            if path.exists():
                path.unlink()

    def close_logs(self) -> None:
        for attr in ("_metrics", "_evals"):
            handle = getattr(self, attr)
            if handle is not None:
                handle.close()
                setattr(self, attr, None)

    def close(self) -> None:
        """Close the logs and release the folder's lock."""
        try:
            self.close_logs()
        finally:
            self._lock.release()


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` without a file name (``write`` on a full disk) the name of ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _step_of(row: dict[str, Any]) -> int | None:
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


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
