"""Malformed, hostile and oversized dataset files: every problem is a DataFileError naming the file.

The expected outcomes come from the file formats themselves (IDX header arithmetic, the CIFAR-10
python batch layout) and from the dataset's declared classes, not from the reader's output.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from etr_core.data import load_dataset
from etr_core.errors import DataFileError, user_message
from etr_core.safe_pickle import load_numpy_pickle

IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08, dims: tuple[int, ...] | None = None) -> bytes:
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + array.tobytes()


def write_mnist(root, *, n_train=12, n_test=5, overrides=None, compress=True):
    """A valid MNIST folder, with ``overrides[key] = raw file bytes`` replacing single files."""
    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    paths = {}
    for key, stem in IDX_STEMS.items():
        payload = (overrides or {}).get(key, idx_bytes(arrays[key]))
        if compress:
            path = folder / f"{stem}.gz"
            with gzip.open(path, "wb") as handle:
                handle.write(payload)
        else:
            path = folder / stem
            path.write_bytes(payload)
        paths[key] = path
    return arrays, paths


def test_valid_files_load_exactly(tmp_path):
    arrays, _ = write_mnist(tmp_path)
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy() * 255.0, arrays["train_x"].astype(np.float32))
    assert ds.train_y.tolist() == arrays["train_y"].tolist()


_GOOD_LABELS = np.zeros(12, np.uint8)
_GOOD_IMAGES = np.zeros((12, 28, 28), np.uint8)


@pytest.mark.parametrize(
    ("key", "payload", "problem"),
    [
        ("train_x", b"", "truncated"),
        ("train_x", b"\x00\x00", "truncated"),
        ("train_x", b"PK\x03\x04" + bytes(20), "not an IDX file"),
        ("train_x", idx_bytes(_GOOD_IMAGES.astype(">f4"), type_code=0x0D), "float32"),
        ("train_x", idx_bytes(_GOOD_IMAGES.reshape(12, 784)), "2 dimensions, expected 3"),
        ("train_y", idx_bytes(_GOOD_LABELS.reshape(12, 1)), "2 dimensions, expected 1"),
        ("train_x", idx_bytes(np.zeros((12, 0, 28), np.uint8)), "empty dimension"),
        ("train_x", idx_bytes(np.zeros((0, 28, 28), np.uint8)), "empty dimension"),
        ("train_x", idx_bytes(np.zeros((12, 27, 27), np.uint8)), "27x27"),
        ("train_x", idx_bytes(_GOOD_IMAGES)[:-100], "truncated"),
        ("train_x", idx_bytes(_GOOD_IMAGES) + b"\x00" * 7, "more data than its header"),
        ("train_x", idx_bytes(np.zeros((11, 28, 28), np.uint8)), "11 images but train-labels"),
        ("train_y", idx_bytes(np.arange(1, 13, dtype=np.uint8) % 11), "label 10 at position 9"),
        ("train_y", idx_bytes(np.full(12, 255, np.uint8)), "label 255 at position 0"),
        ("test_y", idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8)), "outside [0, 10)"),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, key, payload, problem, compress):
    _, paths = write_mnist(tmp_path, overrides={key: payload}, compress=compress)
    with pytest.raises(DataFileError) as info:
        load_dataset("mnist", tmp_path)
    message = user_message(info.value)
    assert problem in message
    named = paths["train_x"] if "images but" in problem else paths[key]
    assert message.startswith(str(named)) and "\n" not in message


@pytest.mark.parametrize(
    "raw",
    [
        b"not gzip at all, just text",  # not a gzip stream
        b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff\xff\xff garbage",  # gzip header, broken deflate data
    ],
)
def test_corrupt_gzip_is_named(tmp_path, raw):
    _, paths = write_mnist(tmp_path)
    paths["train_y"].write_bytes(raw)
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte\.gz: cannot read"):
        load_dataset("mnist", tmp_path)


def test_truncated_gzip_stream_is_named(tmp_path):
    _, paths = write_mnist(tmp_path)
    data = paths["train_x"].read_bytes()
    paths["train_x"].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", tmp_path)


def _peak_bytes(fn, *args, raises: type[BaseException] | None = None) -> int:
    """Peak traced allocation of ``fn(*args)``, which must raise ``raises`` when given."""
    tracemalloc.start()
    try:
        if raises is None:
            fn(*args)
        else:
            with pytest.raises(raises):
                fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_max_train_reads_only_the_needed_part_of_a_large_gzip(tmp_path):
    """A compact gzip whose header (consistently) declares 20,000 images: 15.7 MB decompressed."""
    big = 20_000
    images = np.zeros((big, 28, 28), np.uint8)
    labels = np.zeros(big, np.uint8)
    write_mnist(tmp_path, overrides={"train_x": idx_bytes(images), "train_y": idx_bytes(labels)})
    peak = _peak_bytes(lambda: load_dataset("mnist", tmp_path, max_train=100, max_test=5))
    assert peak < 2_000_000, peak  # the whole file would need > 15.7 MB (63 MB as float32)
    ds = load_dataset("mnist", tmp_path, max_train=100)
    assert ds.n_train == 100
    assert ds.train_x.untyped_storage().nbytes() == 100 * 784 * 4  # owns its memory, no view


def test_a_header_promising_more_than_the_file_holds_allocates_nothing(tmp_path):
    header_only = bytes([0, 0, 8, 3]) + struct.pack(">III", 2_000_000_000, 28, 28) + bytes(784 * 3)
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 2_000_000_000) + bytes(3)
    write_mnist(tmp_path, overrides={"train_x": header_only, "train_y": labels}, compress=False)
    peak = _peak_bytes(load_dataset, "mnist", tmp_path, raises=DataFileError)
    assert peak < 3_000_000, peak  # the header promises 1.5 TB
    with pytest.raises(DataFileError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_max_train_on_bundled_digits_is_a_copy():
    ds = load_dataset("digits", max_train=10, max_test=7)
    assert ds.train_x.untyped_storage().nbytes() == 10 * 64 * 4
    assert ds.test_y.untyped_storage().nbytes() == 7 * 8


# -- CIFAR-10 python batches ------------------------------------------------------------------------------

CIFAR_NAMES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def write_cifar(root, *, protocol=2, n=4, override=None):
    rng = np.random.default_rng(1)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in CIFAR_NAMES:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        batches[name] = batch
        raw = (override or {}).get(name) or pickle.dumps(batch, protocol=protocol)
        (folder / name).write_bytes(raw)
    return folder, batches


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_genuine_numpy_batches_of_every_protocol_load(tmp_path, protocol):
    _, batches = write_cifar(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.n_train == 20 and ds.n_test == 4
    expected = np.concatenate([batches[n][b"data"] for n in CIFAR_NAMES[:5]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.train_x.numpy() * 255.0, expected.astype(np.float32))
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]


class _Payload:
    """Runs ``open(marker, 'w')`` when unpickled by an unrestricted unpickler."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _SystemPayload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload_cls", [_Payload, _SystemPayload])
def test_a_planted_payload_in_a_cifar_batch_runs_nothing(tmp_path, payload_cls):
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": payload_cls(str(marker))}
    write_cifar(tmp_path, override={"data_batch_1": pickle.dumps(evil, protocol=2)})
    with pytest.raises(DataFileError, match="data_batch_1: not a safe CIFAR-10 batch"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


@pytest.mark.parametrize(
    "program",
    [
        # numpy.ndarray((400000000,)): a 400 MB allocation if the class itself were callable
        _global("numpy", "ndarray") + b"(J\x00\x84\xd7\x17\x85tR.",
        # _reconstruct(ndarray, (400000000,), b'b'): the same through the reconstructor
        _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray")
        + b"J\x00\x84\xd7\x17\x85C\x01b\x87R.",
        # numpy.dtype('O'): object arrays would hold arbitrary objects
        _global("numpy", "dtype") + b"X\x01\x00\x00\x00O\x85R.",
        # bytes(400000000)
        _global("__builtin__", "bytes") + b"J\x00\x84\xd7\x17\x85R.",
    ],
)
def test_allow_listed_constructors_cannot_allocate(program):
    peak = _peak_bytes(load_numpy_pickle, b"\x80\x02" + program, raises=pickle.UnpicklingError)
    assert peak < 1_000_000, peak


def test_protocol5_frombuffer_checks_the_length():
    good = pickle.dumps(np.arange(6, dtype=np.int32), protocol=5)
    np.testing.assert_array_equal(load_numpy_pickle(good), np.arange(6))
    lying = good.replace(b"K\x06\x85", b"K\x07\x85")  # shape (7,) over 24 bytes
    assert lying != good
    with pytest.raises(pickle.UnpicklingError, match="needs 28 bytes"):
        load_numpy_pickle(lying)


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}, "10 images but 9 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 at position 1"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}, "label -1 at position 1"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "has shape (2, 3000)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "must be a uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1]]}, "flat list"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"a", b"b"]}, "must be integers"),
        ({b"labels": [0]}, "no 'data'/'labels'"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_bad_cifar_batches_name_the_file_and_the_problem(tmp_path, batch, problem):
    folder, _ = write_cifar(tmp_path, override={"data_batch_2": pickle.dumps(batch, protocol=2)})
    with pytest.raises(DataFileError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(info.value).startswith(str(folder / "data_batch_2")) and problem in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"\x80\x02}q\x00(", b"garbage bytes"])
def test_truncated_or_empty_cifar_batch_is_named(tmp_path, raw):
    folder, _ = write_cifar(tmp_path, override={"test_batch": raw or b" "})
    if not raw:
        (folder / "test_batch").write_bytes(b"")
    with pytest.raises(DataFileError, match="test_batch: not a"):
        load_dataset("cifar10", tmp_path)


def test_cifar_max_train_reads_only_the_batches_it_needs(tmp_path):
    _, batches = write_cifar(tmp_path, override={"data_batch_3": b"never read"})
    ds = load_dataset("cifar10", tmp_path, max_train=6, max_test=2)
    assert ds.n_train == 6 and ds.n_test == 2
    assert ds.train_y.tolist() == batches["data_batch_1"][b"labels"] + batches["data_batch_2"][b"labels"][:2]
    assert ds.train_x.untyped_storage().nbytes() == 6 * 3072 * 4
