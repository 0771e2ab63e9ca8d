"""Datasets in their real file formats, clear errors for absent files, the batch sampler."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from etr_core.data import BatchSampler, available_datasets, load_dataset
from etr_core.errors import DataFileError


def test_digits_loads_scaled_and_stratified():
    ds = load_dataset("digits", seed=0)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.task == "classification"
    assert ds.n_train + ds.n_test == 1797
    assert (
        ds.train_x.dtype == torch.float32
        and float(ds.train_x.max()) == 1.0
        and float(ds.train_x.min()) == 0.0
    )
    # stratified: every class has the same share (to one example) in train and test
    share_train = torch.bincount(ds.train_y, minlength=10) / ds.n_train
    share_test = torch.bincount(ds.test_y, minlength=10) / ds.n_test
    assert float((share_train - share_test).abs().max()) < 0.01
    again = load_dataset("digits", seed=0)
    assert torch.equal(ds.train_x, again.train_x)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(ds.train_y, other.train_y)


@pytest.mark.parametrize("name", ["blobs", "moons", "spirals"])
def test_generated_sets_are_seeded(name):
    a = load_dataset(name, seed=3, n_samples=300)
    b = load_dataset(name, seed=3, n_samples=300)
    assert a.input_shape == (2,) and torch.equal(a.train_x, b.train_x)
    assert a.num_classes == int(a.train_y.max()) + 1


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_load(tmp_path, compress):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    t_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    t_labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", images, compress)
    write_idx(folder / "train-labels-idx1-ubyte", labels, compress)
    write_idx(folder / "t10k-images-idx3-ubyte", t_images, compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", t_labels, compress)
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.n_train == 12 and ds.n_test == 5
    np.testing.assert_allclose(ds.train_x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    assert ds.train_y.tolist() == labels.tolist() and ds.test_y.tolist() == t_labels.tolist()
    np.testing.assert_allclose(ds.test_x[:, 0].numpy(), t_images / 255.0, rtol=0, atol=1e-7)


def test_cifar_pickles_load(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, handle)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.n_train == 20 and ds.n_test == 4
    # row layout of the python batches: 1024 red, then green, then blue values, row-major
    first = batches["data_batch_1"][0][0]
    np.testing.assert_allclose(ds.train_x[0, 1, 0, :5].numpy(), first[1024:1029] / 255.0, atol=1e-7)
    assert ds.train_y[:4].tolist() == batches["data_batch_1"][1]
    assert ds.train_y[16:].tolist() == batches["data_batch_5"][1]
    assert ds.test_y.tolist() == batches["test_batch"][1]


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": print}, handle)
    with pytest.raises(DataFileError, match="data_batch_1: not a safe CIFAR-10 batch: refusing"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_absent_files_give_a_clear_error(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message and "etr download" in message
    expected = "t10k-labels-idx1-ubyte" if name != "cifar10" else "data_batch_1"
    assert expected in message


def test_env_var_sets_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ETR_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist")):
        load_dataset("mnist")


def test_load_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.5)
    with pytest.raises(ValueError, match="max_train"):
        load_dataset("digits", max_train=0)


def test_autoencoder_view_uses_pixels_as_targets():
    ds = load_dataset("digits").as_autoencoder()
    assert ds.task == "autoencoder" and torch.equal(ds.train_y, ds.train_x.reshape(ds.n_train, -1))
    with pytest.raises(ValueError, match="image dataset"):
        load_dataset("moons").as_autoencoder()


def test_sampler_is_without_replacement_within_each_epoch_with_partial_last_batch():
    sampler = BatchSampler(10, 4, seed=5)
    epochs = []
    for _ in range(3):
        batches = [sampler.next_batch() for _ in range(3)]
        assert [len(b) for b in batches] == [4, 4, 2]
        epochs.append(torch.cat(batches))
        assert sorted(epochs[-1].tolist()) == list(range(10))
    assert sampler.epochs == 3.0
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_sampler_drop_last_skips_the_remainder():
    sampler = BatchSampler(10, 4, seed=5, drop_last=True)
    sizes = [len(sampler.next_batch()) for _ in range(4)]
    assert sizes == [4, 4, 4, 4] and sampler.epoch == 1


def test_sampler_is_deterministic_and_resumable():
    a = BatchSampler(50, 7, seed=2)
    reference = [a.next_batch().tolist() for _ in range(20)]
    b = BatchSampler(50, 7, seed=2)
    first = [b.next_batch().tolist() for _ in range(9)]
    state = b.state_dict()
    c = BatchSampler(50, 7, seed=2)
    c.load_state_dict(state)
    rest = [c.next_batch().tolist() for _ in range(11)]
    assert first + rest == reference
    assert c.samples_seen == sum(len(r) for r in reference)
    with pytest.raises(ValueError, match="seed"):
        BatchSampler(50, 7, seed=3).load_state_dict(state)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(10, 0)
    with pytest.raises(TypeError, match="seed"):
        BatchSampler(10, 2, seed=1.5)


def test_available_datasets_lists_file_sets_only_when_all_files_are_present(tmp_path, monkeypatch):
    always = ["digits", "blobs", "moons", "spirals"]
    assert available_datasets(tmp_path) == always
    folder = tmp_path / "mnist"
    folder.mkdir()
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    for stem in stems:
        (folder / f"{stem}.gz").write_bytes(b"")
    assert available_datasets(tmp_path) == always  # one file still missing
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"")  # raw (uncompressed) file counts too
    assert available_datasets(tmp_path) == [*always, "mnist"]
    monkeypatch.setenv("ETR_DATA", str(tmp_path))
    assert available_datasets() == [*always, "mnist"]


def test_download_verifies_md5_and_writes_with_umask_permissions(tmp_path, monkeypatch):
    import hashlib
    import io
    import os
    import stat

    from etr_core import data_download

    payload = b"idx bytes"
    url = "https://example.invalid/mnist/train-images-idx3-ubyte.gz"
    monkeypatch.setattr(data_download, "_DOWNLOADS", {"mnist": [(url, hashlib.md5(payload).hexdigest())]})
    monkeypatch.setattr(data_download.urllib.request, "urlopen", lambda u, timeout: io.BytesIO(payload))
    old = os.umask(0o022)
    try:
        folder = data_download.download_files("mnist", tmp_path / "mnist")
    finally:
        os.umask(old)
    target = folder / "train-images-idx3-ubyte.gz"
    assert target.read_bytes() == payload and stat.S_IMODE(target.stat().st_mode) == 0o644
    monkeypatch.setattr(data_download, "_DOWNLOADS", {"mnist": [(url.replace("train", "t10k"), "0" * 32)]})
    with pytest.raises(OSError, match=r"checksum mismatch for https://example\.invalid/mnist/t10k"):
        data_download.download_files("mnist", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["train-images-idx3-ubyte.gz"]  # nothing partial
