"""A generated stand-in for CIFAR-10 where the real files are absent (clearly labelled, never mistaken).

The paper's CIFAR-10 figures (Figs. 2, 3, 4, 9, 10) need the CIFAR-10 files, which some machines
cannot download. :func:`write_cifar10_standin` writes a *generated* data set in the CIFAR-10 python
layout (``cifar10/cifar-10-batches-py/data_batch_1..5, test_batch``, uint8 pixels, 10 classes), so
the unchanged loader, networks and protocol run end to end. Each class is a smooth random colour
prototype plus per-image shifts and noise: learnable, with structure for the autoencoder, and
nothing like natural images. Every table and figure made from it says "generated CIFAR-10
stand-in"; its numbers say nothing about CIFAR-10.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from etr_core._validation import check_int

__all__ = ["STANDIN_LABEL", "STANDIN_MARKER", "is_standin", "write_cifar10_standin"]

STANDIN_LABEL = "generated CIFAR-10 stand-in (not CIFAR-10)"
STANDIN_MARKER = "STANDIN.json"


def _prototypes(rng: np.random.Generator, classes: int) -> np.ndarray:
    """Smooth colour images (classes, 3, 32, 32) in [0, 255]: a few random 2-D cosines per channel."""
    yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    out = np.empty((classes, 3, 32, 32))
    for c in range(classes):
        for ch in range(3):
            img = np.zeros((32, 32))
            for _ in range(3):
                fx, fy = rng.uniform(0.5, 3.0, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                img += rng.uniform(0.3, 1.0) * np.cos(2 * np.pi * (fx * xx + fy * yy) + phase)
            out[c, ch] = img
    out -= out.min(axis=(1, 2, 3), keepdims=True)
    out /= out.max(axis=(1, 2, 3), keepdims=True)
    return 40 + 175 * out


def _images(rng: np.random.Generator, protos: np.ndarray, n: int) -> tuple[np.ndarray, list[int]]:
    labels = rng.integers(0, protos.shape[0], size=n)
    brightness = rng.uniform(0.7, 1.15, size=(n, 1, 1, 1))
    shift = rng.integers(-3, 4, size=(n, 2))
    x = protos[labels] * brightness
    for i in range(n):  # small translations so that classes are not single points
        x[i] = np.roll(x[i], tuple(shift[i]), axis=(1, 2))
    x += rng.normal(0, 18, size=x.shape)
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()


def write_cifar10_standin(
    root: str | Path, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0
) -> Path:
    """Write a generated CIFAR-10 stand-in under ``root/cifar10`` (split over five training batches).

    Returns the ``cifar-10-batches-py`` folder. An existing stand-in with the same sizes and seed is
    kept; ``root`` must not already hold real CIFAR-10 files (``ValueError``: they would be shadowed).
    """
    n_train = check_int("n_train", n_train, minimum=5)
    n_test = check_int("n_test", n_test, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    folder = Path(root) / "cifar10" / "cifar-10-batches-py"
    marker = Path(root) / "cifar10" / STANDIN_MARKER
    meta = {"what": STANDIN_LABEL, "n_train": n_train, "n_test": n_test, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == meta:
        return folder
    if (folder / "test_batch").exists() and not marker.exists():
        raise ValueError(f"{folder} holds real CIFAR-10 files; choose another root for the stand-in")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, 10)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for i, size in enumerate(sizes, start=1):
        data, labels = _images(rng, protos, size)
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle)
    data, labels = _images(rng, protos, n_test)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": data, b"labels": labels}, handle)
    marker.write_text(json.dumps(meta))
    return folder


def is_standin(root: str | Path | None) -> bool:
    """True when ``root/cifar10`` holds a stand-in written by :func:`write_cifar10_standin`."""
    return root is not None and (Path(root) / "cifar10" / STANDIN_MARKER).exists()
