"""Readers of the dataset files (IDX for MNIST / Fashion-MNIST, python batches for CIFAR-10).

Every file is validated before a single example is used: magic number and element type, number of
dimensions, image size against the dataset's declared input shape, image and label counts,
labels in ``[0, num_classes)``. Each problem raises :class:`etr_core.errors.DataFileError` whose
message starts with the file's path and says what is wrong.

Memory is bounded by what is asked for: with ``limit`` (``max_train`` / ``max_test``) only the
header and the first ``limit`` examples are read (a gzip stream is decompressed only that far),
sizes promised by a header are never allocated up front, and the returned arrays own their memory
(no view keeps a larger array alive). CIFAR batches are unpickled with
:class:`etr_core.safe_pickle.NumpyOnlyUnpickler`, which cannot run code or allocate beyond the
file's own bytes.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from etr_core.errors import DataFileError
from etr_core.safe_pickle import load_numpy_pickle

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_SHAPE = (3, 32, 32)

_IDX_TYPES = {
    0x08: "unsigned bytes",
    0x09: "signed bytes",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_CHUNK = 1 << 20
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _read_exact(stream: BinaryIO, nbytes: int, path: str, what: str) -> bytearray:
    """Exactly ``nbytes`` from ``stream``, read in chunks (a lying header allocates nothing extra)."""
    buf = bytearray()
    try:
        while len(buf) < nbytes:
            chunk = stream.read(min(_CHUNK, nbytes - len(buf)))
            if not chunk:
                break
            buf += chunk
    except _READ_ERRORS as exc:
        raise DataFileError(path, f"cannot read {what}: {exc}") from None
    if len(buf) < nbytes:
        raise DataFileError(path, f"file is truncated: {what} needs {nbytes} bytes, found {len(buf)}")
    return buf


def _read_idx_header(stream: BinaryIO, path: str, ndim: int | None) -> list[int]:
    """The sizes declared by an IDX header, after checking its magic, type and dimension count."""
    header = _read_exact(stream, 4, path, "the IDX header")
    if header[0] != 0 or header[1] != 0:
        raise DataFileError(path, f"not an IDX file (magic bytes {bytes(header)!r}, expected 00 00 08 NN)")
    if header[2] != 0x08:
        kind = _IDX_TYPES.get(header[2], f"unknown type 0x{header[2]:02x}")
        raise DataFileError(path, f"IDX data type is {kind}; images and labels are unsigned bytes (0x08)")
    if header[3] == 0 or (ndim is not None and header[3] != ndim):
        want = f"{ndim}" if ndim is not None else ">= 1"
        raise DataFileError(path, f"IDX file has {header[3]} dimensions, expected {want}")
    raw = _read_exact(stream, 4 * header[3], path, "the IDX dimensions")
    dims = [int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(header[3])]
    if any(d == 0 for d in dims):
        raise DataFileError(path, f"IDX header declares an empty dimension: sizes {dims}")
    return dims


def _read_idx_body(stream: BinaryIO, path: str, dims: list[int], limit: int | None) -> np.ndarray:
    n = dims[0] if limit is None else min(dims[0], limit)
    per_example = math.prod(dims[1:])
    data = _read_exact(stream, n * per_example, path, f"{n} examples of {per_example} bytes")
    if n == dims[0]:
        try:
            extra = stream.read(1)
        except _READ_ERRORS as exc:
            raise DataFileError(path, f"cannot read past the data: {exc}") from None
        if extra:
            raise DataFileError(path, f"file holds more data than its header declares (sizes {dims})")
    return np.frombuffer(data, dtype=np.uint8).reshape([n, *dims[1:]])


def read_idx(
    stream: BinaryIO,
    *,
    path: str | os.PathLike = "<stream>",
    limit: int | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """Parse an IDX file (magic ``0x0000 0x08 ndim``, big-endian uint32 sizes, uint8 data).

    Returns a uint8 array of shape ``(n, *dims[1:])`` with ``n = min(dims[0], limit)``; only the
    header and those ``n`` examples are read. Without ``limit`` the file must hold exactly the bytes
    its header declares. ``ndim`` (if given) is the required number of dimensions. Raises
    :class:`DataFileError` naming ``path`` for a wrong magic, element type, dimension count, an
    empty dimension, a truncated file or trailing data.
    """
    dims = _read_idx_header(stream, str(path), ndim)
    return _read_idx_body(stream, str(path), dims, limit)


def _open_idx(folder: Path, stem: str) -> tuple[Path, BinaryIO] | None:
    for path, opener in ((folder / f"{stem}.gz", gzip.open), (folder / stem, open)):
        if path.is_file():
            return path, opener(path, "rb")
    return None


def read_idx_split(
    folder: Path,
    split: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    limit: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, *image_shape)`` float32 in ``[0, 1]`` and int64 labels of one IDX split.

    ``split`` is "train" or "test"; ``image_shape`` is ``(1, H, W)``. Counts, sizes and label
    ranges are checked against the files' headers and ``num_classes``.
    """
    xs, ys = IDX_FILES[f"{split}_x"], IDX_FILES[f"{split}_y"]
    opened = {key: _open_idx(folder, stem) for key, stem in (("x", xs), ("y", ys))}
    x_path, x_handle = opened["x"]
    y_path, y_handle = opened["y"]
    with x_handle, y_handle:
        x_dims = _read_idx_header(x_handle, str(x_path), 3)
        y_dims = _read_idx_header(y_handle, str(y_path), 1)
        if x_dims[0] != y_dims[0]:
            raise DataFileError(
                x_path,
                f"holds {x_dims[0]} images but {y_path.name} holds {y_dims[0]} labels; counts must match",
            )
        if tuple(x_dims[1:]) != tuple(image_shape[1:]):
            raise DataFileError(
                x_path,
                f"images are {x_dims[1]}x{x_dims[2]}, this dataset's are {image_shape[1]}x{image_shape[2]}",
            )
        images = _read_idx_body(x_handle, str(x_path), x_dims, limit)
        labels = _read_idx_body(y_handle, str(y_path), y_dims, limit)
    check_labels(labels, num_classes, y_path)
    x = images.astype(np.float32)
    x /= 255.0
    return x.reshape(len(x), *image_shape), labels.astype(np.int64)


def check_labels(labels: np.ndarray, num_classes: int, path: str | os.PathLike) -> None:
    """Raise :class:`DataFileError` unless every label is an integer in ``[0, num_classes)``."""
    if labels.dtype.kind not in "iu":
        raise DataFileError(path, f"labels must be integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path,
            f"label {int(labels[i])} at position {i} is outside [0, {num_classes}) "
            f"({bad.size} such labels; the dataset declares {num_classes} classes)",
        )


def _batch_field(batch: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def read_cifar_batch(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and int64 labels of one CIFAR-10 python batch, validated."""
    try:
        with open(path, "rb") as handle:
            batch = load_numpy_pickle(handle)
    except pickle.UnpicklingError as exc:
        raise DataFileError(path, f"not a safe CIFAR-10 batch: {exc}") from None
    except (
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        UnicodeDecodeError,
        MemoryError,
    ) as exc:
        raise DataFileError(path, f"not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataFileError(path, f"a CIFAR-10 batch is a dict, this file holds a {type(batch).__name__}")
    data, labels = _batch_field(batch, "data"), _batch_field(batch, "labels")
    if data is None or labels is None:
        raise DataFileError(path, "not a CIFAR-10 python batch (no 'data'/'labels' keys)")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFileError(path, f"'data' must be a uint8 array, got {kind}")
    per_image = math.prod(CIFAR_SHAPE)
    if data.ndim == 2 and data.shape[1] == per_image:
        data = data.reshape(-1, *CIFAR_SHAPE)
    if data.ndim != 4 or tuple(data.shape[1:]) != CIFAR_SHAPE:
        raise DataFileError(
            path, f"'data' has shape {data.shape}, expected (N, {per_image}) or (N, 3, 32, 32)"
        )
    try:
        label_array = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataFileError(path, f"'labels' is not a list of integers: {exc}") from None
    if label_array.ndim != 1:
        raise DataFileError(path, f"'labels' must be a flat list, got shape {label_array.shape}")
    if len(label_array) != len(data):
        raise DataFileError(
            path, f"holds {len(data)} images but {len(label_array)} labels; the counts must match"
        )
    if label_array.size and label_array.dtype.kind not in "iu":
        raise DataFileError(path, f"'labels' must be integers, got {label_array.dtype}")
    label_array = label_array.astype(np.int64) if label_array.size else np.zeros(0, np.int64)
    check_labels(label_array, num_classes, path)
    return data, label_array


def read_cifar_split(
    folder: Path, names: tuple[str, ...], limit: int | None, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CIFAR batches ``names`` (float32 images in ``[0, 1]``), reading only up to ``limit``."""
    xs, ys, have = [], [], 0
    for name in names:
        if limit is not None and have >= limit:
            break
        data, labels = read_cifar_batch(folder / name, num_classes)
        take = len(data) if limit is None else min(len(data), limit - have)
        xs.append(data[:take].astype(np.float32))
        ys.append(labels[:take].copy())
        have += take
        del data, labels
    if have == 0:
        raise DataFileError(folder / names[0], "holds no images")
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    x /= 255.0
    return x, np.concatenate(ys)
