"""A training budget in backprops (the paper's x-axis unit, section 5)."""

from __future__ import annotations

import pytest

from etr_core.training import TrainConfig, train


def test_first_order_budget_is_exactly_one_backprop_per_step():
    cfg = TrainConfig(method="Adam", max_steps=None, max_backprops=17, eval_every=100, device="cpu")
    s = train(cfg).summary
    assert s["stop_reason"] == "max_backprops"
    assert s["step"] == 17 and s["backprops"] == 17 == s["backward"]


def test_tr_budget_stops_at_the_first_step_boundary_past_it():
    cfg = TrainConfig(method="TR_uni", max_steps=None, max_backprops=25, eval_every=100, device="cpu")
    result = train(cfg)
    bp = [r["backprops"] for r in result.steps]
    assert result.summary["stop_reason"] == "max_backprops"
    assert bp[-1] >= 25 > (bp[-2] if len(bp) > 1 else 0)  # the last step started below the budget


def test_bad_budget_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="max_backprops"):
        TrainConfig(max_steps=None, max_backprops=0)
    with pytest.raises(ValueError, match="max_backprops"):
        TrainConfig(max_steps=None, max_epochs=None, max_seconds=None, max_backprops=None)
