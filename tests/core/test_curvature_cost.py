"""Cost model of the exact Hessian (sizes, chunks, memory) against closed forms and measurements."""

from __future__ import annotations

import resource

import pytest
import torch

from etr_core.curvature import exact_hessian
from etr_core.curvature.cost import chunk_size_for, mlp_hessian_cost, training_seconds
from etr_core.hessian_analysis import parameter_count


@pytest.mark.parametrize("sizes", [(64, 16, 10), (2, 64, 64, 3), (784, 4, 10)])
def test_matrix_bytes_and_d_follow_the_closed_form(sizes):
    cost = mlp_hessian_cost(sizes, 256)
    d = parameter_count(sizes)
    assert cost.d == d and cost.matrix_bytes == d * d * 4
    assert mlp_hessian_cost(sizes, 256, bytes_per_entry=8).matrix_bytes == d * d * 8
    assert cost.peak_bytes > cost.matrix_bytes


def test_chunks_shrink_as_activations_grow_and_stay_in_range():
    assert chunk_size_for((64, 16, 10), 256) == 512               # 26 floats x 256 examples: 26 kB
    w = 64 + 64 + 3
    assert chunk_size_for((2, 64, 64, 3), 800) == 32 * 2**20 // (800 * w * 4)
    assert chunk_size_for((2, 4096, 10), 10**6) == 16
    assert mlp_hessian_cost((64, 16, 10), 2000).seconds > mlp_hessian_cost((64, 16, 10), 200).seconds > 0


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="batch"):
        mlp_hessian_cost((4, 3), 0)
    with pytest.raises(ValueError, match="sizes"):
        mlp_hessian_cost((4,), 10)
    with pytest.raises(ValueError, match="steps"):
        training_seconds((4, 3), -1, 64)


@pytest.mark.slow
def test_the_estimated_peak_bounds_the_measured_growth():
    # a fresh Hessian on 1,000 examples: the resident-set growth stays below the model's peak
    torch.manual_seed(0)
    sizes = (64, 24, 10)
    model = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10))
    x, y = torch.randn(1000, 64), torch.randint(0, 10, (1000,))
    cost = mlp_hessian_cost(sizes, 1000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    H = exact_hessian(model, x, y, chunk_size=cost.chunk_size)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert H.d == cost.d
    assert grown <= cost.peak_bytes
