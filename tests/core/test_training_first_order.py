"""The trainer's first-order step is a bare torch loop plus a loss check; its fault fallback; threads.

Oracles: a bare ``torch.optim`` loop on the same batches (bitwise equal parameters), the model's
initial weights from ``build_model`` (what a restored snapshot must hold), closed-form thread counts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from etr_core.data import BatchSampler, load_dataset
from etr_core.models import build_model
from etr_core.training import SNAPSHOT_EVERY, TrainConfig, resolve_num_threads, train

FAST = {"device": "cpu", "eval_every": 10**6, "data_options": {"max_train": 256}}


def _bare(method: str, lr: float, steps: int):
    data = load_dataset("digits", seed=0, max_train=256)
    model = build_model("mlp_small", data.input_shape, data.num_classes, seed=0)
    opt = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam}[method](model.parameters(), lr=lr)
    sampler = BatchSampler(data.n_train, 32, seed=0)
    for _ in range(steps):
        idx = sampler.next_batch()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
        opt.step()
    return model


@pytest.mark.parametrize(("method", "lr"), [("SGD", 0.1), ("Adam", 1e-3)])
def test_first_order_steps_equal_a_bare_loop_bitwise(method, lr):
    steps = 2 * SNAPSHOT_EVERY + 3  # crosses snapshots, which must not change the numbers
    result = train(TrainConfig(method=method, lr=lr, max_steps=steps, **FAST))
    bare = _bare(method, lr, steps)
    for ours, ref in zip(result.model.parameters(), bare.parameters()):
        assert torch.equal(ours, ref)
    s = result.summary
    assert (s["forward"], s["backward"], s["hvp"], s["step"]) == (steps, steps, 0, steps)
    assert result.stop_reason == "max_steps"


def _nan_gradient_at(monkeypatch, step: int) -> None:
    """Make training step ``step`` (1-based) return its true loss with a NaN gradient: the update then
    writes NaN into the parameters although the loss was finite."""
    from etr_core import training

    real = training._Trainer._data_loss
    calls = {"n": 0}

    def loss(self, out, target, reduction="mean"):
        value = real(self, out, target, reduction)
        if not self.model.training:
            return value
        calls["n"] += 1
        if calls["n"] != step:
            return value
        w = self.params[0]
        return value + 0.0 * torch.sqrt(torch.abs(w - w.detach())).sum()  # d sqrt at 0: inf * 0 = NaN

    monkeypatch.setattr(training._Trainer, "_data_loss", loss)


def test_nonfinite_update_is_caught_at_the_next_loss_and_rolled_back(monkeypatch):
    """The NaN update of step 3 shows in step 4's loss: step 4 does no backward, and the snapshot
    (taken before step 1: the initial weights) is put back."""
    _nan_gradient_at(monkeypatch, 3)
    result = train(TrainConfig(method="SGD", lr=0.1, max_steps=50, **FAST))
    assert result.stop_reason == "nonfinite_loss" and len(result.steps) == 4
    assert "step 1 started from" in result.summary["stop_detail"]
    s = result.summary
    assert (s["forward"], s["backward"]) == (4, 3)
    init = build_model("mlp_small", (1, 8, 8), 10, seed=0)
    for ours, ref in zip(result.model.parameters(), init.parameters()):
        assert torch.equal(ours, ref)


def test_nonfinite_update_on_the_last_step_is_caught_at_the_end(monkeypatch):
    _nan_gradient_at(monkeypatch, 3)
    result = train(TrainConfig(method="SGD", lr=0.1, max_steps=3, **FAST))
    assert result.stop_reason == "nonfinite_loss"
    assert "after the update of step 3" in result.summary["stop_detail"]
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())
    assert math.isfinite(result.summary["train_loss"])


def test_huge_but_finite_parameters_are_kept():
    """lr = 1e38: the update stays finite in float32 but the next loss overflows: the run stops there
    and keeps those (finite) parameters, as documented."""
    result = train(TrainConfig(method="SGD", lr=1e38, max_steps=50, **FAST))
    assert result.stop_reason == "nonfinite_loss" and len(result.steps) == 2
    assert "started from" not in result.summary["stop_detail"]
    bare = _bare("SGD", 1e38, 1)
    for ours, ref in zip(result.model.parameters(), bare.parameters()):
        assert torch.equal(ours, ref)


def test_finite_parameters_are_kept_when_only_the_batch_is_bad(monkeypatch):
    """A NaN loss from the data (parameters still finite) keeps the parameters of the previous step."""
    from etr_core import training

    calls = {"n": 0}
    real = training._Trainer._data_loss

    def nan_on_fifth(self, out, target, reduction="mean"):
        loss = real(self, out, target, reduction)
        if not self.model.training:  # evaluation passes
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(training._Trainer, "_data_loss", nan_on_fifth)
    result = train(TrainConfig(method="Adam", lr=1e-3, max_steps=20, **FAST))
    assert result.stop_reason == "nonfinite_loss" and len(result.steps) == 5
    assert "started from" not in result.summary["stop_detail"]
    bare = _bare("Adam", 1e-3, 4)
    for ours, ref in zip(result.model.parameters(), bare.parameters()):
        assert torch.equal(ours, ref)


@pytest.mark.parametrize(
    ("requested", "cores", "load", "current", "expected"),
    [
        (3, 2, 9.0, 2, 3),  # explicit --threads wins
        (None, 2, 9.0, 2, 1),  # busy 2-core machine: one thread
        (None, 2, 0.1, 2, 2),  # idle: torch's default
        (None, 2, 1.4, 2, 1),  # less than one and a half free cores: one
        (None, 16, 3.4, 16, 13),  # the cores the load leaves free
        (None, 16, 0.0, 4, 4),  # never above torch's current setting (OMP_NUM_THREADS, set_num_threads)
        (None, 1, 0.0, 1, 1),
    ],
)
def test_thread_resolution(requested, cores, load, current, expected):
    assert resolve_num_threads(requested, cores=cores, load=load, current=current) == expected


def test_thread_resolution_rejects_bad_counts_and_train_restores_threads():
    with pytest.raises(ValueError, match="num_threads"):
        resolve_num_threads(0)
    with pytest.raises(TypeError, match="num_threads"):
        resolve_num_threads(1.5)
    before = torch.get_num_threads()
    train(TrainConfig(method="SGD", max_steps=1, num_threads=2, **FAST))
    assert torch.get_num_threads() == before
    auto = resolve_num_threads(None)
    assert 1 <= auto <= before
