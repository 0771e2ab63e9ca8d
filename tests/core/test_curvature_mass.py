"""Diagonal mass delta(A) (Becker et al., 1988; paper section 3.2) and its block variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from etr_core.curvature import (
    ParameterBlock,
    block_diagonal_mass,
    block_masses,
    diagonal_mass,
    entry_scales,
)


def test_identity_and_diagonal_matrices_have_mass_one():
    assert diagonal_mass(torch.eye(7)) == 1.0
    assert diagonal_mass(torch.diag(torch.tensor([-3.0, 0.0, 2.0]))) == 1.0


@pytest.mark.parametrize("d", [1, 2, 5, 100])
def test_all_ones_has_mass_one_over_d(d):
    assert diagonal_mass(torch.ones(d, d)) == pytest.approx(1.0 / d, rel=1e-14)
    assert diagonal_mass(-2.5 * torch.ones(d, d, dtype=torch.float64)) == pytest.approx(1.0 / d, rel=1e-14)


def test_constructed_diagonally_dominant_matrix():
    # diag 10, off-diagonal +-1 with random signs: delta = 10 d / (10 d + d(d-1)) = 10 / (9 + d)
    d = 12
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (d, d), generator=gen).double() * 2 - 1
    A = torch.triu(signs, 1)
    A = A + A.T + 10 * torch.eye(d, dtype=torch.float64)
    assert diagonal_mass(A) == pytest.approx(10 / (9 + d), rel=1e-14)
    # the hand-computed mass with numpy
    a = A.numpy()
    assert diagonal_mass(A) == pytest.approx(np.abs(np.diag(a)).sum() / np.abs(a).sum(), rel=1e-14)


def test_block_masses_of_a_block_diagonal_matrix():
    blocks = [ParameterBlock("a", 0, 2), ParameterBlock("b", 2, 5)]
    A = torch.zeros(5, 5, dtype=torch.float64)
    A[:2, :2] = torch.tensor([[4.0, 1.0], [1.0, 4.0]])          # total 10, diagonal 8
    A[2:, 2:] = torch.ones(3, 3)                                   # total 9, diagonal 3
    assert block_diagonal_mass(A, blocks) == pytest.approx(1.0)
    assert diagonal_mass(A) == pytest.approx(11 / 19)
    rows = block_masses(A, blocks)
    assert [r.name for r in rows] == ["a", "b"]
    assert rows[0].share_of_total == pytest.approx(10 / 19)
    assert rows[0].delta == pytest.approx(0.8)
    assert rows[0].delta_over_uniform == pytest.approx(1.6)
    assert rows[1].delta == pytest.approx(1 / 3)
    assert rows[1].delta_over_uniform == pytest.approx(1.0)
    # mass outside the blocks lowers the block-diagonal share
    A[0, 4] = A[4, 0] = 0.5
    assert block_diagonal_mass(A, blocks) == pytest.approx(19 / 20)


def test_block_mass_matches_explicit_sum_on_random_matrix():
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(2100, 2100, generator=gen)   # > one 1024-row chunk of the summation
    blocks = [ParameterBlock("x", 0, 1500), ParameterBlock("y", 1500, 2100)]
    a = A.double().numpy()
    inside = np.abs(a[:1500, :1500]).sum() + np.abs(a[1500:, 1500:]).sum()
    assert block_diagonal_mass(A, blocks) == pytest.approx(inside / np.abs(a).sum(), rel=1e-10)
    assert diagonal_mass(A) == pytest.approx(np.abs(np.diag(a)).sum() / np.abs(a).sum(), rel=1e-10)


def test_entry_scales_match_numpy():
    gen = torch.Generator().manual_seed(4)
    A = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    A = A + A.T
    a = A.numpy()
    off = a[~np.eye(30, dtype=bool)]
    s = entry_scales(A)
    assert s.rms_diag == pytest.approx(np.sqrt(np.mean(np.diag(a) ** 2)))
    assert s.rms_off == pytest.approx(np.sqrt(np.mean(off**2)))
    assert s.mean_abs_diag == pytest.approx(np.mean(np.abs(np.diag(a))))
    assert s.mean_abs_off == pytest.approx(np.mean(np.abs(off)))


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="square"):
        diagonal_mass(torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        diagonal_mass(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    for bad in ([[1.0, float("inf")], [0.0, 1.0]], [[float("inf"), 0.0], [0.0, float("-inf")]]):
        with pytest.raises(ValueError, match="NaN or Inf"):
            diagonal_mass(torch.tensor(bad))
    with pytest.raises(ValueError, match="all zeros"):
        diagonal_mass(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="tile"):
        block_diagonal_mass(torch.eye(4), [ParameterBlock("a", 0, 2), ParameterBlock("b", 3, 4)])
    with pytest.raises(ValueError, match="cover"):
        block_masses(torch.eye(4), [ParameterBlock("a", 0, 2)])
    with pytest.raises(ValueError, match="d >= 2"):
        entry_scales(torch.eye(1))
