"""Run folders: configuration, environment, metrics, evaluations, summary and checkpoints.

Layout of one run folder::

    config.json        the TrainConfig (plus the resolved TR hyper-parameters)
    environment.json   versions, device, threads, command line, start time
    metrics.jsonl      one JSON object per logged training step (the ``on_step`` record)
    evals.jsonl        one JSON object per evaluation (the ``on_eval`` record)
    summary.json       written when the run ends (stop reason, final numbers, counters)
    checkpoint.pt      model, optimiser, sampler, RNG states, counters and clock (latest only)

Every JSON file is strict JSON: non-finite floats are written as ``null`` so a NaN can never
corrupt a results file for other readers. ``checkpoint.pt`` and the JSON files are written
atomically (temporary file in the same folder, ``fsync``, ``os.replace``), so killing the process
at any moment leaves either the previous or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"


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


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer) -> None:
    """Call ``writer(file_object)`` on a temporary file next to ``path``, then rename it onto ``path``.

    A crash before the rename leaves ``path`` untouched; the rename itself is atomic on POSIX and
    Windows (``os.replace``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


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


class RunWriter:
    """Appends records to one run folder; every file it writes is either complete or absent."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self._evals = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def has_run(self) -> bool:
        """True when the folder already holds a run (its config or checkpoint)."""
        return (self.run_dir / CONFIG_FILE).exists() or self.checkpoint_path.exists()

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / CONFIG_FILE, config)

    def write_environment(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / ENVIRONMENT_FILE, info)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)

    def _open(self, name: str):
        return open(self.run_dir / name, "a", encoding="utf-8")

    def append_metric(self, record: dict[str, Any]) -> None:
        if self._metrics is None:
            self._metrics = self._open(METRICS_FILE)
        self._metrics.write(dumps(record) + "\n")

    def append_eval(self, record: dict[str, Any]) -> None:
        if self._evals is None:
            self._evals = self._open(EVALS_FILE)
        self._evals.write(dumps(record) + "\n")
        self._evals.flush()

    def flush(self) -> None:
        for handle in (self._metrics, self._evals):
            if handle is not None:
                handle.flush()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Flush the logs, then replace ``checkpoint.pt`` atomically with ``state``."""
        self.flush()
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The latest checkpoint, or ``None`` when the folder has none."""
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)

    def truncate_logs(self, last_step: int) -> None:
        """Drop log rows written after ``last_step`` (a killed run logged past its last checkpoint)."""
        self.close()
        for name in (METRICS_FILE, EVALS_FILE):
            path = self.run_dir / name
            if not path.exists():
                continue
            kept = [row for row in read_jsonl(path) if int(row.get("step", 0)) <= last_step]
            text = "".join(dumps(row) + "\n" for row in kept)
            atomic_write(path, lambda handle, text=text: handle.write(text.encode()))

    def clear_logs(self) -> None:
        """Start the logs afresh (a resumed run that had no checkpoint yet)."""
        self.close()
        for name in (METRICS_FILE, EVALS_FILE, SUMMARY_FILE):
            path = self.run_dir / name
            if path.exists():
                path.unlink()

    def close(self) -> None:
        for attr in ("_metrics", "_evals"):
            handle = getattr(self, attr)
            if handle is not None:
                handle.close()
                setattr(self, attr, None)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (a killed writer) is ignored."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
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


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_run(run_dir: str | os.PathLike) -> LoadedRun:
    """Read a run folder written by :func:`etr_core.training.train`."""
    path = Path(run_dir)
    config = _read_json(path / CONFIG_FILE)
    if config is None:
        raise FileNotFoundError(f"{path} is not a run folder: {CONFIG_FILE} is missing")
    metrics = read_jsonl(path / METRICS_FILE) if (path / METRICS_FILE).exists() else []
    evals = read_jsonl(path / EVALS_FILE) if (path / EVALS_FILE).exists() else []
    return LoadedRun(
        path=path,
        config=config,
        environment=_read_json(path / ENVIRONMENT_FILE) or {},
        metrics=pd.DataFrame(metrics),
        evals=pd.DataFrame(evals),
        summary=_read_json(path / SUMMARY_FILE),
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
