"""Downloads of the file datasets from their official hosts, verified by MD5 (``etr download``).

Needs internet access and is never called implicitly. Each file is streamed to a temporary file in
the dataset folder (with the permissions ``open()`` gives: 0666 less the umask), checked, then
renamed into place, so an interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

from etr_core.files import temporary_name

# Official sources and MD5 sums (the same ones torchvision verifies).
_DOWNLOADS: dict[str, list[tuple[str, str]]] = {
    "mnist": [
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ],
    "fashion_mnist": [
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ],
    "cifar10": [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    ],
}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_files(name: str, folder: Path) -> Path:
    """Fetch the official files of dataset ``name`` into ``folder``; returns ``folder``.

    Files already present with the right MD5 are kept; a mismatch raises ``OSError`` naming the URL.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for url, md5 in _DOWNLOADS[name]:
        target = folder / url.rsplit("/", 1)[1]
        if target.exists() and _md5(target) == md5:
            continue
        tmp = temporary_name(target)
        try:
            with open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            got = _md5(tmp)
            if got != md5:
                raise OSError(f"checksum mismatch for {url}: expected md5 {md5}, got {got}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    if name == "cifar10":
        with tarfile.open(folder / "cifar-10-python.tar.gz") as archive:
            archive.extractall(folder, filter="data")
    return folder
