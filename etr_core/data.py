"""Datasets: bundled, generated and read from local files; a resumable batch sampler.

``digits`` (scikit-learn's bundled 8x8 digits) is the default everywhere: it needs no file and no
network. ``blobs``, ``moons`` and ``spirals`` are generated from the seed. ``mnist``,
``fashion_mnist`` and ``cifar10`` (appendix C, B.1) are read from the standard files in a local
folder: ``root`` argument, else the ``ETR_DATA`` environment variable, else ``./data``.

Expected layout (``.gz`` or uncompressed IDX files both work)::

    <root>/mnist/train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz
                 t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz
    <root>/fashion_mnist/   (the same four file names)
    <root>/cifar10/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch

Pixels are scaled to ``[0, 1]`` for every image dataset (CIFAR-10 included; the authors' code left
CIFAR in 0-255). ``download(name, root)`` fetches the official files with checksums for
users with internet access; nothing here downloads on import or implicitly.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from etr_core._validation import check_choice, check_int, check_open_interval
from etr_core.data_files import (
    CIFAR_DIR,
    CIFAR_TEST,
    CIFAR_TRAIN,
    IDX_FILES,
    read_cifar_split,
    read_idx,  # noqa: F401  (public: etr_core.data.read_idx)
    read_idx_split,
)

DATASET_NAMES: tuple[str, ...] = ("digits", "blobs", "moons", "spirals", "mnist", "fashion_mnist", "cifar10")
FILE_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
# Seeds go to scikit-learn (the digits split, the generated sets), which takes [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
IMAGE_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")

_IDX_FILES = IDX_FILES
_CIFAR_DIR = CIFAR_DIR
_CIFAR_TRAIN = CIFAR_TRAIN
_CIFAR_TEST = CIFAR_TEST

@dataclass
class Dataset:
    """Train/test tensors of one dataset.

    ``train_x``/``test_x`` are float32 with shape ``(N, *input_shape)``. For ``task="classification"``
    the targets are int64 class labels; for ``task="autoencoder"`` they are the flattened inputs
    (pixel intensities in ``[0, 1]``, the BCE targets of appendix C, B.1).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classification"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_x.shape[0])

    def as_autoencoder(self) -> Dataset:
        """The same images with their own flattened pixels as targets (reconstruction task)."""
        if self.task == "autoencoder":
            return self
        if self.name not in IMAGE_DATASETS:
            raise ValueError(
                f"autoencoders need an image dataset with pixels in [0, 1] (one of {IMAGE_DATASETS}); "
                f"got dataset={self.name!r}"
            )
        return replace(
            self,
            train_y=self.train_x.reshape(self.n_train, -1),
            test_y=self.test_x.reshape(self.n_test, -1),
            task="autoencoder",
        )


def default_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$ETR_DATA``, else ``./data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("ETR_DATA") or "data")


def _dataset_files(name: str, root: Path) -> list[list[Path]]:
    """For each file ``name`` needs, the paths that would satisfy it (``.gz`` or raw IDX)."""
    if name == "cifar10":
        folder = root / "cifar10" / _CIFAR_DIR
        return [[folder / f] for f in (*_CIFAR_TRAIN, _CIFAR_TEST)]
    folder = root / name
    return [[folder / f"{stem}.gz", folder / stem] for stem in _IDX_FILES.values()]


def available_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """Names of ``DATASET_NAMES`` that :func:`load_dataset` can load now, in that order.

    The bundled (``digits``) and generated sets are always available; a file dataset is listed when
    every file it needs is present under ``root`` (else ``$ETR_DATA``, else ``./data``). Only the
    presence of the files is checked (cheap, for menus); their content is validated on loading.
    """
    base = default_root(root)
    names = []
    for name in DATASET_NAMES:
        if name in FILE_DATASETS and not all(
            any(p.is_file() for p in options) for options in _dataset_files(name, base)
        ):
            continue
        names.append(name)
    return names


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32), torch.as_tensor(
        y, dtype=torch.int64
    )


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x.setflags(write=False)
    return x, bunch.target


def _digits(seed: int, test_fraction: float) -> Dataset:
    x, y = _digits_arrays()
    x_tr, x_te, y_tr, y_te = _split(x, y, test_fraction, seed)
    train_x, train_y = _as_tensors(x_tr, y_tr)
    test_x, test_y = _as_tensors(x_te, y_te)
    return Dataset(
        "digits", train_x, train_y, test_x, test_y, (1, 8, 8), 10, info={"source": "sklearn load_digits"}
    )


def _spirals(
    n: int, noise: float, rng: np.random.Generator, classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    per = n // classes
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, per)
        t = np.linspace(c * 2 * np.pi / classes, c * 2 * np.pi / classes + 3.5, per) + rng.normal(
            0, noise, per
        )
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(per, c))
    return np.concatenate(xs), np.concatenate(ys)


def _generated(name: str, seed: int, test_fraction: float, n_samples: int, noise: float | None) -> Dataset:
    from sklearn.datasets import make_blobs, make_moons

    rng = np.random.default_rng(seed)
    if name == "blobs":
        x, y = make_blobs(
            n_samples=n_samples, centers=3, n_features=2, cluster_std=noise or 1.0, random_state=seed
        )
        x = (x - x.mean(0)) / x.std(0)
        classes = 3
    elif name == "moons":
        x, y = make_moons(n_samples=n_samples, noise=0.1 if noise is None else noise, random_state=seed)
        classes = 2
    else:
        x, y = _spirals(n_samples, 0.2 if noise is None else noise, rng)
        classes = 3
    x_tr, x_te, y_tr, y_te = _split(x.astype(np.float32), y, test_fraction, seed)
    train_x, train_y = _as_tensors(x_tr, y_tr)
    test_x, test_y = _as_tensors(x_te, y_te)
    return Dataset(
        name, train_x, train_y, test_x, test_y, (2,), classes, info={"source": "generated", "seed": seed}
    )


def _missing_files_error(name: str, folder: Path, files: list[str]) -> FileNotFoundError:
    """One line (the CLI and the app print it whole): the folder, the files to put there, the fix."""
    return FileNotFoundError(
        f"dataset {name!r} is not available locally: put {', '.join(files)} (gzip-compressed '.gz' or raw) "
        f"in {folder}, or point root= / the ETR_DATA environment variable (CLI: --data-root) at the folder "
        f"that contains '{folder.name}/'; with internet access, `etr download {name} --root {folder.parent}` "
        "fetches and verifies them"
    )


def _idx_dataset(name: str, root: Path, max_train: int | None, max_test: int | None) -> Dataset:
    folder = root / name
    missing = [
        f"{stem}.gz"
        for stem in _IDX_FILES.values()
        if not ((folder / f"{stem}.gz").is_file() or (folder / stem).is_file())
    ]
    if missing:
        raise _missing_files_error(name, folder, missing)
    shape = (1, 28, 28)
    train_x, train_y = read_idx_split(folder, "train", shape, 10, max_train)
    test_x, test_y = read_idx_split(folder, "test", shape, 10, max_test)
    return Dataset(
        name,
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        shape,
        10,
        info={"source": str(folder)},
    )


def _cifar10(root: Path, max_train: int | None, max_test: int | None) -> Dataset:
    folder = root / "cifar10" / _CIFAR_DIR
    needed = [*_CIFAR_TRAIN, _CIFAR_TEST]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise _missing_files_error("cifar10", folder, missing)
    train_x, train_y = read_cifar_split(folder, _CIFAR_TRAIN, max_train)
    test_x, test_y = read_cifar_split(folder, (_CIFAR_TEST,), max_test)
    return Dataset(
        "cifar10",
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        (3, 32, 32),
        10,
        info={"source": str(folder)},
    )


def _limit(ds: Dataset, max_train: int | None, max_test: int | None) -> Dataset:
    """The first ``max_train`` / ``max_test`` examples, copied (a view would keep the full arrays alive)."""
    if max_train is not None and max_train < ds.n_train:
        ds = replace(ds, train_x=ds.train_x[:max_train].clone(), train_y=ds.train_y[:max_train].clone())
    if max_test is not None and max_test < ds.n_test:
        ds = replace(ds, test_x=ds.test_x[:max_test].clone(), test_y=ds.test_y[:max_test].clone())
    return ds


def load_dataset(
    name: str = "digits",
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    n_samples: int = 1000,
    noise: float | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASET_NAMES``) as float32 tensors.

    ``seed`` fixes the stratified train/test split of ``digits`` and the generated sets
    (``test_fraction`` of the data is held out); the file datasets keep their official split.
    ``n_samples``/``noise`` shape the generated sets. ``max_train``/``max_test`` keep only the first
    examples (for quick runs; a copy, and for file datasets only those examples are read). Absent
    files raise ``FileNotFoundError`` naming each file and where to put it; malformed files raise
    :class:`etr_core.errors.DataFileError` (a ``ValueError``) naming the file and the problem (see
    :mod:`etr_core.data_files`).
    """
    check_choice("dataset", name, DATASET_NAMES)
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    check_open_interval("test_fraction", test_fraction, 0.0, 1.0)
    check_int("n_samples", n_samples, minimum=20)
    if max_train is not None:
        check_int("max_train", max_train, minimum=1)
    if max_test is not None:
        check_int("max_test", max_test, minimum=1)
    if name == "digits":
        ds = _digits(seed, test_fraction)
    elif name in ("blobs", "moons", "spirals"):
        ds = _generated(name, seed, test_fraction, n_samples, noise)
    elif name == "cifar10":
        ds = _cifar10(default_root(root), max_train, max_test)
    else:
        ds = _idx_dataset(name, default_root(root), max_train, max_test)
    return _limit(ds, max_train, max_test)


def download(name: str, root: str | os.PathLike | None = None) -> Path:
    """Fetch the official files of ``name`` into ``<root>/<name>/`` and verify their MD5 sums.

    Needs internet access; never called implicitly. Files already present with the right checksum
    are kept. Returns the dataset folder (see :mod:`etr_core.data_download`).
    """
    from etr_core.data_download import download_files

    check_choice("dataset", name, FILE_DATASETS)
    return download_files(name, default_root(root) / name)


class BatchSampler:
    """Mini-batch indices without replacement within each epoch, in a seeded, resumable order.

    Epoch ``e`` visits ``torch.randperm(n)`` drawn from a generator seeded with ``(seed, e)``, so the
    order never depends on how many batches were drawn before a restart. Within an epoch the batches
    are consecutive slices of that permutation. The last batch of an epoch holds the remaining
    ``n mod batch_size`` examples (a partial batch) unless ``drop_last=True``, in which case those
    examples are skipped for that epoch. A batch never spans two epochs, so "epochs" counts full
    passes exactly. ``batch_size > n`` is clipped to ``n`` (full-batch steps).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, *, drop_last: bool = False) -> None:
        self.n = check_int("n", n, minimum=1)
        self.batch_size = min(check_int("batch_size", batch_size, minimum=1), self.n)
        self.seed = check_int("seed", seed, minimum=0)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0
        self.samples_seen = 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=gen)
        return self._perm

    def next_batch(self) -> torch.Tensor:
        """Indices (int64, CPU) of the next mini-batch."""
        remaining = self.n - self.position
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch += 1
            self.position = 0
            self._perm = None
        perm = self._permutation()
        batch = perm[self.position : self.position + self.batch_size]
        self.position += int(batch.numel())
        self.samples_seen += int(batch.numel())
        return batch

    @property
    def epochs(self) -> float:
        """Passes over the training set so far: ``samples_seen / n``."""
        return self.samples_seen / self.n

    def state_dict(self) -> dict[str, int | bool]:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "epoch": self.epoch,
            "position": self.position,
            "samples_seen": self.samples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n or int(state["seed"]) != self.seed:
            raise ValueError(
                f"sampler state is for n={state['n']}, seed={state['seed']}; this sampler has n={self.n}, "
                f"seed={self.seed}"
            )
        self.batch_size = int(state["batch_size"])
        self.drop_last = bool(state["drop_last"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.samples_seen = int(state["samples_seen"])
        self._perm = None
