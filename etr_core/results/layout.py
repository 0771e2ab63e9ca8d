"""The files of a run folder (names, states), strict JSON (non-finite floats as ``null``), the atomic
JSON and checkpoint writes, and the environment record of a run."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from etr_core import checkpoints
from etr_core.files import atomic_write

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = checkpoints.CHECKPOINT_FILE
PREVIOUS_CHECKPOINT_FILE = checkpoints.PREVIOUS_CHECKPOINT_FILE
DAMAGED_CHECKPOINT_FILE = "checkpoint.damaged.pt"
_WRITTEN_FILES = (CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, EVALS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)


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

