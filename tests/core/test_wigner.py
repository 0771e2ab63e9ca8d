"""Proposition 1 (paper section 3.2, appendix D.1), corrected, against Monte Carlo and an exact integral."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.curvature import (
    compare_with_wigner,
    diagonal_mass,
    paper_printed_wigner_mass,
    sample_wigner,
    wigner_mass_closed_form,
    wigner_mass_exact,
    wigner_mass_monte_carlo,
)


def test_reference_values_of_the_corrected_formula():
    assert wigner_mass_closed_form(10, sigma_off=1.0, sigma_diag=2.0) == pytest.approx(0.181818, abs=1e-6)
    assert wigner_mass_closed_form(100) == pytest.approx(0.0100, abs=1e-12)
    assert wigner_mass_closed_form(37) == pytest.approx(1 / 37)
    # the paper's printed orientation gives a different number for unequal scales
    assert paper_printed_wigner_mass(10, sigma_off=1.0, sigma_diag=2.0) == pytest.approx(1 / 19)


@pytest.mark.parametrize(
    ("d", "sigma_off", "sigma_diag", "samples"),
    [(10, 1.0, 2.0, 4000), (100, 1.0, 1.0, 400), (30, 0.2, 1.0, 2000), (5, 3.0, 1.0, 4000)],
)
def test_closed_form_within_monte_carlo_error(d, sigma_off, sigma_diag, samples):
    mc = wigner_mass_monte_carlo(d, sigma_off, sigma_diag, samples=samples, seed=11)
    closed = wigner_mass_closed_form(d, sigma_off, sigma_diag)
    exact = wigner_mass_exact(d, sigma_off, sigma_diag)
    assert abs(mc.mean - exact) < 4 * mc.std_error
    if d >= 10:
        # from d = 10 on the ratio-of-expectations step is accurate to within the MC error
        assert abs(closed - mc.mean) < 4 * mc.std_error
        assert abs(closed - exact) < 2e-3 * exact
    else:
        # d = 5, sigma_off = 3: 0.0769 (closed form) against 0.0803 (exact and MC)
        assert abs(closed - mc.mean) > 4 * mc.std_error


def test_printed_formula_is_rejected_by_monte_carlo():
    mc = wigner_mass_monte_carlo(10, sigma_off=1.0, sigma_diag=2.0, samples=4000, seed=2)
    assert abs(mc.mean - 0.1818) < 4 * mc.std_error
    assert abs(mc.mean - paper_printed_wigner_mass(10, 1.0, 2.0)) > 50 * mc.std_error


def test_small_d_discrepancy_of_the_ratio_of_expectations():
    # d = 3 with equal scales: E[delta_W] = 0.348..., not 1/3
    mc = wigner_mass_monte_carlo(3, samples=40_000, seed=5)
    exact = wigner_mass_exact(3)
    assert exact == pytest.approx(0.3481, abs=5e-4)
    assert abs(mc.mean - exact) < 4 * mc.std_error
    assert abs(mc.mean - 1 / 3) > 4 * mc.std_error
    # and it vanishes as d grows
    assert abs(wigner_mass_exact(200) - 1 / 200) / (1 / 200) < 1e-3


def test_monte_carlo_shortcut_matches_explicit_matrices():
    # the sampler sums |entries| without forming W; explicit matrices through diagonal_mass agree
    values = [diagonal_mass(sample_wigner(12, 1.0, 0.5, seed=s)) for s in range(600)]
    explicit_mean = float(np.mean(values))
    explicit_se = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    mc = wigner_mass_monte_carlo(12, 1.0, 0.5, samples=3000, seed=9)
    assert abs(explicit_mean - mc.mean) < 4 * math.hypot(explicit_se, mc.std_error)
    W = sample_wigner(6, 1.0, 2.0, seed=0)
    torch.testing.assert_close(W, W.T)


def test_mean_abs_matching_is_a_tautology_and_rms_matching_is_not():
    # any symmetric matrix: scales matched by mean |entry| reproduce delta_H exactly. Here the
    # off-diagonal entries are sparse (heavy-tailed), as in network Hessians.
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(40, 40, generator=gen) < 0.05
    upper = torch.randn(40, 40, generator=gen, dtype=torch.float64) * mask
    A = torch.triu(upper, 1)
    A = A + A.T + torch.diag(torch.randn(40, generator=gen, dtype=torch.float64))
    a = A.numpy()
    off = np.abs(a[~np.eye(40, dtype=bool)]).mean() / math.sqrt(2 / math.pi)
    diag = np.abs(np.diag(a)).mean() / math.sqrt(2 / math.pi)
    assert wigner_mass_closed_form(40, off, diag) == pytest.approx(diagonal_mass(A), rel=1e-12)
    # RMS matching differs for heavy-tailed entries ...
    cmp = compare_with_wigner(A)
    assert abs(cmp.delta_w_rms - cmp.delta_h) > 0.1 * cmp.delta_h
    # ... and is ~1 for a real Gaussian Wigner matrix, whose entries are not heavy-tailed
    W = sample_wigner(400, sigma_off=1.0, sigma_diag=3.0, seed=1)
    cmp_w = compare_with_wigner(W)
    assert cmp_w.ratio_rms == pytest.approx(1.0, abs=0.05)
    assert cmp_w.delta_w_equal == pytest.approx(1 / 400)
    assert cmp_w.ratio_equal == pytest.approx(cmp_w.delta_h * 400)


def test_edge_cases_and_validation():
    assert wigner_mass_closed_form(1) == 1.0
    assert wigner_mass_exact(5, sigma_off=0.0, sigma_diag=1.0) == 1.0
    assert wigner_mass_exact(5, sigma_off=1.0, sigma_diag=0.0) == 0.0
    with pytest.raises(ValueError, match="both 0"):
        wigner_mass_closed_form(5, 0.0, 0.0)
    with pytest.raises(ValueError, match="sigma_off"):
        wigner_mass_closed_form(5, -1.0, 1.0)
    with pytest.raises(ValueError, match="d must be >= 1"):
        wigner_mass_exact(0)
    with pytest.raises(ValueError, match="samples"):
        wigner_mass_monte_carlo(5, samples=1)
    with pytest.raises(ValueError, match="d >= 2"):
        compare_with_wigner(torch.eye(1))
