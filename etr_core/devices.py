"""Device selection: CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from etr_core._validation import check_choice


def device(preference: str = "auto") -> torch.device:
    """Return the torch device to use.

    ``preference`` is ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``; asking for
    ``"cuda"`` on a machine without it raises ``ValueError`` instead of failing later.
    """
    check_choice("device", preference, ("auto", "cpu", "cuda"))
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but torch.cuda.is_available() is False; use 'auto' or 'cpu'"
        )
    return torch.device(preference)


def describe_device(dev: torch.device) -> str:
    """A short human-readable description, e.g. ``'cuda:0 (NVIDIA H100)'`` or ``'cpu (2 threads)'``."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(dev: torch.device) -> None:
    """Wait for queued kernels on ``dev`` so wall-clock readings are honest."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
