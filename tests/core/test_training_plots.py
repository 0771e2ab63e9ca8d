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


def _summary_run(method, lr, seed, final):
    label = method if lr is None else f"{method} (lr={lr:g})"
    return SimpleNamespace(method=method, label=label, summary={"train_loss": final}, config={"seed": seed})


def test_best_of_grid_keeps_the_step_size_with_the_lowest_mean_final_loss():
    from etr_core.viz.training_plots import best_of_grid

    runs = [
        _summary_run("Adam", 1e-3, 0, 0.30),
        _summary_run("Adam", 1e-3, 1, 0.10),  # mean 0.20
        _summary_run("Adam", 1e-2, 0, 0.05),
        _summary_run("Adam", 1e-2, 1, float("nan")),  # a diverged seed makes this step size the worst
        _summary_run("Adam", 3e-4, 0, 0.25),
        _summary_run("Adam", 3e-4, 1, 0.25),  # mean 0.25
        _summary_run("TR_rms", None, 0, 0.4),
    ]
    kept = best_of_grid(runs)
    assert sorted(r.label for r in kept) == ["Adam (lr=0.001)", "Adam (lr=0.001)", "TR_rms"]


def test_each_method_keeps_its_palette_colour_and_dash():
    from etr_core.viz.palette import METHOD_COLOURS

    runs = [
        _run("TR_rms", 0, [1.0, 0.5, 0.2], [0.1, 0.2, 0.3]),
        _run("Adam (lr=0.001)", 0, [1.0, 0.4, 0.1], [0.1, 0.2, 0.3]),
    ]
    fig = loss_curves(runs, points=3)
    lines = {t.name.split(" (n=")[0]: t for t in fig.data if t.mode == "lines"}
    assert lines["TR_rms"].line.color == METHOD_COLOURS["TR_rms"] and lines["TR_rms"].line.dash == "solid"
    assert lines["Adam (lr=0.001)"].line.color == METHOD_COLOURS["Adam"]
    assert lines["Adam (lr=0.001)"].line.dash == "dash"
