"""Sampled-row diagonal mass, Hutchinson / Bekas diagonals and Lanczos eigenvalues vs exact oracles."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from etr_core.curvature import (
    ParameterBlock,
    bekas_diagonal,
    diagonal_mass,
    exact_hessian,
    hutchinson_diagonal,
    lanczos_extreme_eigenvalues,
    network_hvp,
    relative_l2_error,
    sampled_row_mass,
    stratified_allocation,
)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 24), nn.Tanh(), nn.Linear(24, 5)).double()   # d = 389
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=gen)
    H = exact_hessian(model, x, y)
    return model, x, y, H


def _symmetric(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return (A + A.T) / 2 + torch.diag(torch.linspace(-3, 5, d, dtype=torch.float64))


def test_sampled_row_mass_on_a_network_within_its_interval(small_net):
    model, x, y, H = small_net
    exact = diagonal_mass(H.matrix)
    hvp = network_hvp(model, x, y)
    assert (hvp.dtype, hvp.device, hvp.d) == (torch.float64, torch.device("cpu"), H.d)
    est = sampled_row_mass(hvp, H.tensor_blocks, 120, seed=0)   # float64 basis vectors from hvp.dtype
    low, high = est.interval
    assert low <= exact <= high
    assert est.hvp_calls == est.rows == sum(est.rows_per_block.values()) == hvp.calls
    assert 0 < est.std_error < 0.5 * est.estimate


def test_sampled_row_mass_interval_coverage(small_net):
    # over many seeds the 95% interval should cover the exact value about 95% of the time
    _, _, _, H = small_net
    exact = diagonal_mass(H.matrix)
    matrix = H.matrix

    def hvp(v):
        return matrix @ v

    covered = 0
    trials = 200
    for seed in range(trials):
        low, high = sampled_row_mass(hvp, H.tensor_blocks, 60, seed=seed, dtype=torch.float64).interval
        covered += low <= exact <= high
    assert covered / trials >= 0.85


def test_sampled_row_mass_census_is_exact(small_net):
    _, _, _, H = small_net
    matrix = H.matrix
    est = sampled_row_mass(lambda v: matrix @ v, H.tensor_blocks, 10_000, dtype=torch.float64)
    assert est.rows == H.d
    assert est.estimate == pytest.approx(diagonal_mass(matrix), rel=1e-12)
    assert est.std_error == 0.0


def test_stratified_allocation_is_proportional_with_a_floor():
    blocks = [ParameterBlock("w", 0, 900), ParameterBlock("b", 900, 901), ParameterBlock("v", 901, 1000)]
    assert stratified_allocation(blocks, 100) == [90, 1, 10]


def test_hutchinson_over_all_sign_vectors_is_exactly_the_diagonal():
    d = 8
    A = _symmetric(d, 0)
    probes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)
    est = hutchinson_diagonal(lambda v: A @ v, d, probes=probes, dtype=torch.float64)
    torch.testing.assert_close(est.diag, A.diagonal(), rtol=0, atol=1e-12)


def test_hutchinson_is_unbiased_within_its_reported_interval():
    d = 300
    A = _symmetric(d, 1)
    est = hutchinson_diagonal(lambda v: A @ v, d, 200, seed=3, dtype=torch.float64)
    z = (est.diag - A.diagonal()) / est.std_error
    assert (z.abs() < 2.58).double().mean() >= 0.95      # 99% intervals cover ~99% of coordinates
    assert abs(float(z.mean())) < 4 / d**0.5              # no bias across coordinates
    # the per-probe variance of coordinate i is sum_{j != i} A_ij^2: check the reported error
    off = (A**2).sum(1) - A.diagonal() ** 2
    ratio = est.std_error / (off / 200).sqrt()
    assert float(ratio.median()) == pytest.approx(1.0, abs=0.1)
    assert relative_l2_error(est.diag, A.diagonal()) > 0.1   # and honest: it is noisy


def test_bekas_rademacher_equals_hutchinson_and_gaussian_covers():
    d = 200
    A = _symmetric(d, 2)
    h = hutchinson_diagonal(lambda v: A @ v, d, 50, seed=4, dtype=torch.float64)
    b = bekas_diagonal(lambda v: A @ v, d, 50, probe="rademacher", seed=4, dtype=torch.float64)
    torch.testing.assert_close(b.diag, h.diag)
    g = bekas_diagonal(lambda v: A @ v, d, 400, probe="gaussian", seed=5, dtype=torch.float64)
    z = (g.diag - A.diagonal()) / g.std_error
    assert (z.abs() < 2.58).double().mean() >= 0.93
    with pytest.raises(ValueError, match="probe"):
        bekas_diagonal(lambda v: A @ v, d, 5, probe="uniform")


def test_lanczos_full_space_gives_all_eigenvalues():
    A = _symmetric(40, 3)
    res = lanczos_extreme_eigenvalues(lambda v: A @ v, 40, 40, dtype=torch.float64)
    exact = torch.linalg.eigvalsh(A).numpy()
    assert res.ritz_values == pytest.approx(exact, abs=1e-9)


def test_lanczos_extremes_on_network_hessian(small_net):
    model, x, y, H = small_net
    exact = torch.linalg.eigvalsh(H.matrix)
    res = lanczos_extreme_eigenvalues(network_hvp(model, x, y), H.d, 120, seed=1)
    assert res.largest == pytest.approx(float(exact[-1]), rel=1e-6)
    assert res.smallest == pytest.approx(float(exact[0]), rel=1e-4, abs=1e-8)
    assert res.smallest < 0            # random init: negative curvature is present
    assert res.hvp_calls == res.iterations <= 120
    assert list(res.top(2)) == pytest.approx(list(exact.flip(0)[:2].numpy()), rel=1e-4)


def test_estimator_validation():
    with pytest.raises(ValueError, match="num_rows"):
        sampled_row_mass(lambda v: v, [ParameterBlock("a", 0, 3)], 0)
    with pytest.raises(ValueError, match="blocks"):
        sampled_row_mass(lambda v: v, [], 5)
    with pytest.raises(ValueError, match="probes"):
        hutchinson_diagonal(lambda v: v, 4, probes=torch.ones(3, 5))
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_diagonal(lambda v: v, 4, 1)
