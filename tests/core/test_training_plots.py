"""Figure builders of etr_core.viz.training_plots: statistics against SciPy, traces, markers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from etr_core.viz.training_plots import first_below, first_reach, loss_curves, mean_and_ci, tr_traces


def test_mean_and_ci_matches_scipy_t_interval():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(7, 4))
    mean, low, high = mean_and_ci(values)
    for j in range(4):
        lo, hi = stats.t.interval(0.95, 6, loc=values[:, j].mean(), scale=stats.sem(values[:, j]))
        assert mean[j] == pytest.approx(values[:, j].mean())
        assert (low[j], high[j]) == pytest.approx((lo, hi))


def _run(label, seed, losses, accs):
    n = len(losses)
    evals = pd.DataFrame(
        {
            "step": range(n),
            "backprops": np.arange(n) * 10.0,
            "epoch": np.arange(n) / 2,
            "seconds": np.arange(n) * 0.1,
            "train_loss": losses,
            "train_acc": accs,
        }
    )
    metrics = pd.DataFrame(
        {"step": range(1, n), "radius": np.linspace(1e-3, 1, n - 1), "rho": 0.5, "cg_iterations": 3}
    )
    return SimpleNamespace(label=label, config={"seed": seed}, evals=evals, metrics=metrics)


def test_loss_curves_mean_band_and_accuracy_marker():
    runs = [
        _run("A", 0, [1.0, 0.1, 0.01], [0.5, 0.995, 1.0]),
        _run("A", 1, [1.0, 0.1, 0.001], [0.5, 0.9, 0.999]),
        _run("B", 0, [2.0, 1.0, 0.5], [0.1, 0.2, 0.3]),
    ]
    fig = loss_curves(runs, x="backprops", points=3)
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    a = lines["A (n=2)"]
    # geometric mean of the two runs at the last point: 10 ** mean(log10 0.01, log10 0.001)
    assert a.y[-1] == pytest.approx(10**-2.5)
    assert any(t.fill == "toself" for t in fig.data)  # the 95% band of the two-run group
    assert fig.layout.yaxis.type == "log"
    markers = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(markers) == 1 and markers[0].x0 == pytest.approx(15.0)  # mean of 10 and 20 backprops


def test_first_reach_and_first_below():
    run = _run("A", 0, [1.0, 0.05, 0.01], [0.5, 0.99, 1.0])
    assert first_reach(run, "epoch") == 0.5
    assert first_below(run, "backprops", 0.02) == 20.0
    assert first_below(run, "backprops", 1e-6) is None


def test_tr_traces_has_three_panels():
    fig = tr_traces([_run("TR_rms", 0, [1.0, 0.5, 0.2], [0.1, 0.5, 0.9])])
    assert len(fig.data) == 3 and fig.layout.yaxis.type == "log"
