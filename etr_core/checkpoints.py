"""Checkpoints that cannot run code and cannot be silently wrong.

A checkpoint is ``torch.save`` of a dict holding tensors and plain Python data, plus ``"sha256"``: a
digest of the whole content (every key and value, every tensor's dtype, shape and bytes). Loading
uses ``torch.load(weights_only=True)`` (no code in the file runs; anything but tensors and plain
containers is refused) and recomputes the digest, so one flipped byte of tensor data is found.

Each save keeps the one before as ``checkpoint.prev.pt``. When ``checkpoint.pt`` is empty,
truncated, damaged or unsafe, :func:`load_checkpoint` warns in one line naming it and falls back to
``checkpoint.prev.pt``; when no good copy exists it raises :class:`etr_core.errors.CheckpointError`
naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from etr_core.errors import CheckpointError, one_line
from etr_core.files import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
DIGEST_KEY = "sha256"

__all__ = [
    "CHECKPOINT_FILE",
    "PREVIOUS_CHECKPOINT_FILE",
    "CheckpointWarning",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "state_digest",
]


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged and an older one is used (the message names both files)."""


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(b"d" + struct.pack("<Q", len(value)))
        for k, v in value.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, (list, tuple)):
        h.update((b"l" if isinstance(value, list) else b"t") + struct.pack("<Q", len(value)))
        for v in value:
            _feed(h, v)
    elif isinstance(value, bool) or value is None:
        h.update(b"c" + repr(value).encode())
    elif isinstance(value, int):
        h.update(b"i" + str(value).encode() + b";")
    elif isinstance(value, float):
        h.update(b"f" + value.hex().encode() + b";")
    elif isinstance(value, str):
        raw = value.encode()
        h.update(b"s" + struct.pack("<Q", len(raw)) + raw)
    elif isinstance(value, bytes):
        h.update(b"b" + struct.pack("<Q", len(value)) + value)
    else:
        h.update(b"r" + repr(value).encode() + b";")


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, ignoring its own ``"sha256"`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with its digest to ``folder/checkpoint.pt`` atomically; the old one becomes
    ``checkpoint.prev.pt``. Returns the path."""
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint state is a dict, got {type(state).__name__}")
    record = {**state, DIGEST_KEY: state_digest(state)}
    path = Path(folder) / CHECKPOINT_FILE
    atomic_write(path, lambda handle: torch.save(record, handle), keep=PREVIOUS_CHECKPOINT_FILE)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load and verify one checkpoint file; :class:`CheckpointError` says why it cannot be used.

    Checkpoints written before digests existed (no ``"sha256"`` entry) load unverified.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        if not path.is_symlink():
            raise
        reason = one_line(exc.strerror or str(exc))
        raise CheckpointError(path, f"a link that leads to no file ({reason})") from None
    if size == 0:
        raise CheckpointError(path, "the file is empty (the process writing it was stopped?)")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise CheckpointError(path, "truncated or damaged: not a torch checkpoint archive")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = one_line(str(exc)).split(";")[0][:200]
        raise CheckpointError(
            path, f"not a safe checkpoint: it holds objects other than tensors ({first})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, struct.error) as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise
        first = one_line(str(exc))[:200]
        raise CheckpointError(path, f"truncated or damaged, torch cannot read it ({first})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(path, "not a checkpoint of an etr run (no 'step' entry)")
    expected = state.pop(DIGEST_KEY, None)
    if expected is not None and expected != state_digest(state):
        raise CheckpointError(path, "damaged: its content does not match its sha256 checksum")
    return state


def load_checkpoint(
    folder: str | os.PathLike, map_location: torch.device | str = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest good checkpoint of a run folder and its path, or ``None`` when it has none.

    Tries ``checkpoint.pt`` then ``checkpoint.prev.pt``. A bad newer file gives a one-line
    :class:`CheckpointWarning`; when every file present is bad, the first problem is raised.
    """
    folder = Path(folder)
    problems: list[CheckpointError] = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = folder / name
        if not os.path.lexists(path):
            continue
        try:
            state = read_checkpoint(path, map_location)
        except CheckpointError as exc:
            problems.append(exc)
            continue
        for bad in problems:
            warnings.warn(
                f"{bad}; using the previous checkpoint {path} (step {state['step']})",
                CheckpointWarning,
                stacklevel=2,
            )
        return state, path
    if problems:
        raise problems[0]
    return None


_RUN_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,),
    "counters": (dict,),
    "model": (dict,),
    "optimizer": (dict,),
    "sampler": (dict,),
    "torch_rng": (torch.Tensor,),
}


def check_run_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless ``state`` has the layout of an etr run's
    checkpoint (``etr_core.training``): a step and counters that are integers >= 0, finite seconds,
    a tensor per model entry, an optimiser state in torch's layout, a uint8 RNG state.

    The checksum proves a file is what was written, not that it belongs here: a checkpoint copied from
    another run, or edited and re-checksummed, must fail with this one line, not deep in torch.
    """
    for key, types in _RUN_STATE_TYPES.items():
        if not isinstance(state.get(key), types):
            raise CheckpointError(path, f"not a checkpoint of an etr run: {key!r} is missing or malformed")
    for name, value in (("step", state.get("step")), *state["counters"].items()):
        if type(value) is not int or not 0 <= value < 2**62:
            raise CheckpointError(path, f"not a checkpoint of an etr run: {name} is {value!r}")
    seconds = state.get("seconds")
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        raise CheckpointError(path, f"not a checkpoint of an etr run: seconds is {seconds!r}")
    if not isinstance(state.get("pivot"), (dict, type(None))):
        raise CheckpointError(path, "not a checkpoint of an etr run: 'pivot' is malformed")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise CheckpointError(path, "not a checkpoint of an etr run: 'model' holds non-tensors")
    if not {"state", "param_groups"} <= set(state["optimizer"]):
        raise CheckpointError(path, "not a checkpoint of an etr run: 'optimizer' is not in torch's layout")
    if state["torch_rng"].dtype != torch.uint8 or state["torch_rng"].dim() != 1:
        raise CheckpointError(path, "not a checkpoint of an etr run: 'torch_rng' is not a byte tensor")
