"""The Hessian page's plan: units keyed on what they depend on, and no setting above the caps."""

from __future__ import annotations

import itertools

import pytest
import torch

from etr_core.curvature import wigner_mass_closed_form
from etr_core.hessian_analysis import hessian_batch, parameter_count, snapshot_at, train_checkpoints
from etr_core.hessian_jobs import BudgetExceeded, ResultCache
from etr_core.hessian_plan import (
    CPU_CAP,
    FIRST_ANSWER_CAP,
    MEMORY_CAP,
    PAGE_MAX_PARAMS,
    PageSettings,
    _snapshot_in_worker,
    _train_in_worker,
    background_units,
    estimate,
    first_units,
    fit_to_budget,
    monte_carlo_samples,
    page_dataset,
)

BATCHES = [16, 32, 64, 128, 256, 512, 1024, 1_000_000]
STEPS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000]
WIDTHS = [2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]
SHAPES = {"digits": (64, 10, 1437), "moons": (2, 2, 800), "blobs": (2, 3, 800), "mnist": (784, 10, 5000)}


def _settings(data="digits", width=16, depth=1, batch=256, steps=200, seeds=1, phase="end", seed=0):
    n_in, classes, n = SHAPES[data]
    return PageSettings(data, (n_in, *[width] * depth, classes), "tanh", batch, steps, phase, seeds, seed, n)


def test_the_default_fits_untouched_and_answers_first_within_two_seconds_by_the_model():
    s = _settings()
    fitted, message = fit_to_budget(s, BATCHES, STEPS)
    assert fitted == s and message is None
    first, total, peak = estimate(s)
    assert first < 2.0 and total < CPU_CAP and peak < MEMORY_CAP


def test_the_abusive_url_is_clamped_to_the_cap_with_a_reason():
    s = _settings(width=48, steps=2000, seeds=10, batch=1_000_000)
    assert estimate(s)[1] > 60 * CPU_CAP                      # minutes of CPU as asked
    fitted, message = fit_to_budget(s, BATCHES, STEPS)
    first, total, peak = estimate(fitted)
    assert total <= CPU_CAP and first <= FIRST_ANSWER_CAP and peak <= MEMORY_CAP
    assert fitted.seeds < 10 and fitted.batch < 1_000_000 and fitted.sizes == s.sizes
    assert "30 s" in message and "seeds 10 ->" in message and "batch all ->" in message


def test_no_widget_combination_exceeds_the_caps_after_fitting():
    # the most expensive corner of every other widget: the end phase, 10 seeds, a long run
    grid = itertools.product(SHAPES, WIDTHS, (1, 2, 3), BATCHES, (200, 2000))
    for data, width, depth, batch, steps in grid:
        seeds, phase = 10, "end"
        s = _settings(data, width, depth, batch, steps, seeds, phase)
        if s.d > PAGE_MAX_PARAMS:
            continue                                           # refused by the page
        first, total, peak = estimate(fit_to_budget(s, BATCHES, STEPS)[0])
        assert total <= CPU_CAP and first <= FIRST_ANSWER_CAP and peak <= MEMORY_CAP, s


def test_units_are_keyed_on_what_they_depend_on():
    s = _settings()
    fg = first_units(s)
    bg = background_units(s)
    # the first answer is part of the background: computed once
    assert {u.key for u in fg} <= {u.key for u in bg}
    # the shown phase and the number of seeds never change a unit's key
    assert first_units(_settings(phase="end", seeds=5)) == fg
    assert background_units(_settings(seeds=3))[: len(bg)] == bg
    # the Hessian batch changes the snapshots, not the training
    other = background_units(_settings(batch=64))
    def keys(units, kind):
        return [u.key for u in units if u.key[0] == kind]

    assert keys(other, "checkpoint") == keys(bg, "checkpoint")
    assert not set(keys(other, "snapshot")) & set(keys(bg, "snapshot"))
    # "all" examples and any batch above n share one key
    assert first_units(_settings(batch=1_000_000)) == first_units(_settings(batch=5000))
    assert parameter_count(s.sizes) == s.d


@pytest.mark.slow
def test_worker_functions_match_the_library_and_stop_at_their_budget():
    s = _settings(width=2)
    net = s.net
    cache = ResultCache()
    checkpoint, cpu = _train_in_worker(net, 0, 10, None, 30.0)
    assert checkpoint.step == 10 and cpu >= 0
    x, y, _ = page_dataset("digits")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    (direct,) = train_checkpoints(s.sizes, x, y, [10], seed=0, dtype=torch.float32)
    assert torch.equal(direct.params, checkpoint.params)
    result, _ = _snapshot_in_worker(net, 0, 10, 64, 50, checkpoint.params, 30.0)
    hx, hy = hessian_batch(x, y, 64, 0)
    expected = snapshot_at(s.sizes, direct.params, hx, hy, step=10, lanczos_iter=30, seed=0)
    cmp = result.snapshot.comparison
    assert cmp.delta_h == pytest.approx(expected.comparison.delta_h, rel=1e-6)
    assert result.snapshot.heatmap.shape == (50, 50)
    # the Monte Carlo baselines agree with the corrected closed form of Proposition 1
    assert result.wigner_equal.mean == pytest.approx(1 / cmp.d, abs=4 * result.wigner_equal.std_error + 1e-4)
    rms = wigner_mass_closed_form(cmp.d, cmp.sigma_off_rms, cmp.sigma_diag_rms)
    assert result.wigner_rms.mean == pytest.approx(rms, abs=4 * result.wigner_rms.std_error + 1e-3 * rms)
    assert result.wigner_rms.samples == monte_carlo_samples(cmp.d)
    with pytest.raises(BudgetExceeded, match="Hessian rows"):
        _snapshot_in_worker(net, 0, 10, 64, None, checkpoint.params, -1.0)
    with pytest.raises(BudgetExceeded, match="training"):
        _train_in_worker(net, 0, 100, None, -1.0)
    assert len(cache) == 0
