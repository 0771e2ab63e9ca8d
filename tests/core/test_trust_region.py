"""Outer-loop rules of Algorithm 1 (Eq. 10, line 7): rho, step quality, radius update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.trust_region import classify_step, reduction_ratio, update_radius, validate_tr_parameters

ETA1, ETA2, GAMMA1, GAMMA2, MAX_RADIUS = 1e-4, 0.95, 1.1, 1.5, 10.0


def test_reduction_ratio_is_float64_and_exact():
    # A predicted decrease below float32 resolution of a loss near 2.3 still gives the right rho.
    f_old = np.float32(2.302585)
    f_new = float(f_old) - 1e-9
    rho = reduction_ratio(float(f_old), f_new, 2e-9)
    assert isinstance(rho, float)
    assert rho == pytest.approx(0.5, rel=1e-6)
    assert reduction_ratio(torch.tensor(3.0, dtype=torch.float64), torch.tensor(2.0), 4.0) == 0.25


@pytest.mark.parametrize(
    "f_old, f_new, pred",
    [
        (1.0, float("nan"), 0.5),
        (1.0, float("inf"), 0.5),
        (1.0, -float("inf"), 0.5),
        (float("nan"), 0.0, 0.5),
        (1.0, 0.5, float("nan")),
        (1.0, 0.5, float("inf")),
        (1.0, 0.5, 0.0),  # no predicted decrease: never accept (the published code returned +1)
        (1.0, 0.5, -0.1),  # a model increase
        (1.0, 1.0, 0.0),
    ],
)
def test_reduction_ratio_rejects_nonsense(f_old, f_new, pred):
    rho = reduction_ratio(f_old, f_new, pred)
    assert rho == -math.inf
    assert classify_step(rho, ETA1, ETA2) == "unsuccessful"


def test_reduction_ratio_tiny_threshold():
    assert reduction_ratio(1.0, 0.9, 1e-13, tiny=1e-12) == -math.inf
    assert reduction_ratio(1.0, 1.0 - 2e-12, 1e-12 * 2, tiny=1e-12) == pytest.approx(1.0, rel=1e-3)


# Radius table: (rho, expected quality, expected radius from radius 1.0)
TABLE = [
    (float("nan"), "unsuccessful", 1.0 / GAMMA2),
    (-math.inf, "unsuccessful", 1.0 / GAMMA2),
    (-1.0, "unsuccessful", 1.0 / GAMMA2),
    (0.0, "unsuccessful", 1.0 / GAMMA2),
    (ETA1, "successful", 1.0),
    (0.5 * (ETA1 + ETA2), "successful", 1.0),
    (ETA2, "very_successful", GAMMA1),
    (5.0, "very_successful", GAMMA1),
]


@pytest.mark.parametrize("rho, quality, radius", TABLE)
def test_radius_rule_table(rho, quality, radius):
    q = classify_step(rho, ETA1, ETA2)
    assert q == quality
    assert update_radius(1.0, q, GAMMA1, GAMMA2, MAX_RADIUS) == pytest.approx(radius, rel=1e-15)


def test_radius_stays_in_bounds_under_long_sequences():
    gen = np.random.default_rng(0)
    radius = 1e-4
    for _ in range(5000):
        quality = ("very_successful", "successful", "unsuccessful")[gen.integers(3)]
        radius = update_radius(radius, quality, GAMMA1, GAMMA2, MAX_RADIUS)
        assert 0.0 < radius <= MAX_RADIUS
    for _ in range(3000):
        radius = update_radius(radius, "unsuccessful", GAMMA1, 10.0, MAX_RADIUS)
        assert radius > 0.0
    assert update_radius(9.5, "very_successful", GAMMA1, GAMMA2, MAX_RADIUS) == MAX_RADIUS


def test_grow_only_on_boundary():
    assert (
        update_radius(1.0, "very_successful", 2.0, 4.0, 10.0, hit_boundary=False, grow_only_on_boundary=True)
        == 1.0
    )
    assert (
        update_radius(1.0, "very_successful", 2.0, 4.0, 10.0, hit_boundary=True, grow_only_on_boundary=True)
        == 2.0
    )
    assert update_radius(1.0, "very_successful", 2.0, 4.0, 10.0, hit_boundary=False) == 2.0
    with pytest.raises(ValueError, match="hit_boundary"):
        update_radius(1.0, "successful", 2.0, 4.0, 10.0, grow_only_on_boundary=True)


def test_nonfinite_trial_loss_never_grows_the_radius():
    for f_new in (float("nan"), float("inf")):
        q = classify_step(reduction_ratio(1.0, f_new, 0.1), ETA1, ETA2)
        assert update_radius(2.0, q, GAMMA1, GAMMA2, MAX_RADIUS) < 2.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"eta1": 0.0}, "eta1"),
        ({"eta1": 1.0}, "eta1"),
        ({"eta2": 1.0}, "eta2"),
        ({"eta1": 0.5, "eta2": 0.4}, "eta1"),
        ({"eta1": 0.5, "eta2": 0.5}, "eta1"),
        ({"gamma1": 1.0}, "gamma1"),
        ({"gamma2": 0.5}, "gamma2"),
        ({"radius": 0.0}, "radius"),
        ({"radius": -1.0}, "radius"),
        ({"radius": 11.0}, "radius"),
        ({"max_radius": float("inf")}, "max_radius"),
    ],
)
def test_validate_tr_parameters(kwargs, name):
    params = {"radius": 1e-4, "max_radius": 10.0, "eta1": 1e-4, "eta2": 0.95, "gamma1": 1.1, "gamma2": 1.5}
    validate_tr_parameters(**params)
    params.update(kwargs)
    with pytest.raises(ValueError, match=name):
        validate_tr_parameters(**params)


def test_bad_quality_and_types():
    with pytest.raises(ValueError, match="quality"):
        update_radius(1.0, "great", 1.1, 1.5, 10.0)
    with pytest.raises(ValueError, match="gamma1"):
        update_radius(1.0, "successful", 0.9, 1.5, 10.0)
    with pytest.raises(TypeError):
        reduction_ratio("a", 1.0, 1.0)
    with pytest.raises(ValueError, match="eta1"):
        classify_step(0.5, 0.9, 0.1)
