"""Shared pytest configuration: deterministic, quiet, CPU-friendly."""

from __future__ import annotations

import os

os.environ.setdefault("ETR_TESTING", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator so every test draws the same numbers."""
    return torch.Generator().manual_seed(1234)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
