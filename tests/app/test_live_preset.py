"""The live page's TR preset reaches the optimiser in the worker (paper Table 1 vs the automatic radius).

The oracle of the first step: with ``paper`` the radius starts at Table 1's 1e-4, so after one step it
is 1e-4 times gamma1 = 1.1, 1 or 1/gamma2 = 1/1.5. With ``fast`` it starts at the Cauchy radius of the
first batch, computed here with plain autograd: for TR_uni (M = I), Delta_0 = ||g||^3 / (g^T H g).
"""

from __future__ import annotations

import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from etr_core.data import BatchSampler
from etr_core.live import default_registry, metrics_csv, read_metrics_csv, stop_all_runs
from etr_core.models import build_model
from etr_core.training import TrainConfig, dataset_for
from tests.app.support import APP

PAGE = "pages/live_training.py"
TINY = {"lt_methods": "TR_uni,Adam", "lt_budget": "100", "lt_max_steps": "10", "lt_eval_every": "1",
        "lt_model": "mlp_tiny"}
GROWTH = (1.1, 1.0, 1 / 1.5)  # Table 1: very successful, successful, rejected (TR_uni)


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live-training worker outlived its test"


def _finished_run(preset: str):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for key, value in {**TINY, "lt_tr_preset": preset}.items():
        at.query_params[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.radio(key="lt_tr_preset").value == preset
    assert at.query_params.get("lt_tr_preset") in (preset, [preset])  # round-tripped in the URL
    at.button(key="lt_start").click().run()
    run = default_registry().get(at.query_params.get("run"))
    assert run is not None, at.session_state["lt_start_error"]
    deadline = time.monotonic() + 180
    while not at.success and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    assert at.success, "the run did not finish"
    return at, run


def _cauchy_radius() -> float:
    """||g||^3 / g^T H g on the first TR batch at the initial weights (digits, mlp_tiny, seed 0)."""
    config = TrainConfig(dataset="digits", model="mlp_tiny", method="TR_uni", seed=0, max_steps=10)
    data = dataset_for(config)
    model = build_model("mlp_tiny", data.input_shape, data.num_classes, seed=0)
    idx = BatchSampler(data.n_train, 512, seed=0).next_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = torch.nn.functional.cross_entropy(model(data.train_x[idx].float()), data.train_y[idx].long())
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.cat([x.reshape(-1) for x in grads])
    hg = torch.cat([x.reshape(-1) for x in torch.autograd.grad(g, params, grad_outputs=g.detach())])
    g64, hg64 = g.detach().double(), hg.detach().double()
    return float(g64.norm() ** 3 / torch.dot(g64, hg64))


def _first_radius(run) -> float:
    steps = run.snapshot().steps
    return float(steps[steps["method"] == "TR_uni"].sort_values("step")["radius"].iloc[0])


@pytest.mark.slow
def test_the_preset_reaches_the_optimiser_and_shows_in_summary_and_csv() -> None:
    paper_page, paper = _finished_run("paper")
    fast_page, fast = _finished_run("fast")
    assert min(abs(_first_radius(paper) / (1e-4 * f) - 1) for f in GROWTH) < 1e-6
    expected = _cauchy_radius()
    assert expected > 1e-3  # far from Table 1's 1e-4: the test tells the presets apart
    assert min(abs(_first_radius(fast) / (expected * f) - 1) for f in GROWTH) < 1e-3
    for page, run, preset in ((paper_page, paper, "paper"), (fast_page, fast, "fast")):
        table = page.dataframe[0].value.set_index("method")
        assert table.loc["TR_uni", "TR preset"] == preset and table.loc["Adam", "TR preset"] == ""
        snap = run.snapshot()
        steps, _ = read_metrics_csv(metrics_csv(snap.steps, snap.evals))  # what the download holds
        assert set(steps.loc[steps["method"] == "TR_uni", "preset"]) == {preset}
        assert steps.loc[steps["method"] == "Adam", "preset"].isna().all()


def test_comparison_configs_route_the_preset_to_tr_methods_only() -> None:
    from etr_core.config import authors
    from etr_core.live import comparison_configs
    from etr_core.training import resolve_tr_config

    uni, adam = comparison_configs(["TR_uni", "Adam"], preset="authors", max_steps=5)
    assert uni.preset == "authors" and adam.preset == "paper"
    expected = authors("mnist", "fc", "uniform")  # digits uses the authors' MNIST values
    resolved = resolve_tr_config(uni)
    assert (resolved.radius, resolved.eta1, resolved.eta2, resolved.batch_size) == \
        (expected.radius, expected.eta1, expected.eta2, expected.batch_size)
    assert resolve_tr_config(comparison_configs(["TR_rms"], preset="fast")[0]).auto_radius is True
    with pytest.raises(ValueError, match="preset"):
        comparison_configs(["TR_rms"], preset="quick")


def test_the_authors_preset_on_a_data_set_without_files_says_so_in_one_line() -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in {"lt_tr_preset": "authors", "lt_dataset": "moons", "lt_methods": "TR_rms"}.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(PAGE).run()
    assert any("authors' files set every TR parameter" in c.value for c in at.caption)
    at.button(key="lt_start").click().run()
    assert not at.exception, at.exception
    (error,) = at.error
    assert "preset='authors'" in error.value and "moons" in error.value and "\n" not in error.value
    assert at.query_params.get("run") is None
