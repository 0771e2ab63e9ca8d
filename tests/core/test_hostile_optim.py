"""Hostile-user variants of the torch.optim contract of EllipsoidalTR / FirstOrderTR.

Each test feeds an input a user of ``torch.optim`` would try (other normalisation layers, other
stochastic modules, other schedulers, foreign state dicts, hooks, grad modes) and asserts what torch's
own optimisers or modules give. Known gaps are marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from etr_core import EllipsoidalTR, FirstOrderTR

OPTIMISERS = [EllipsoidalTR, FirstOrderTR]


def _data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def _closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    return lambda: nn.functional.cross_entropy(model(x), y)


# ---------------------------------------------------------------------------------------------
# Module buffers of other normalisation layers: one forward at the end point, as for BatchNorm.


@pytest.mark.parametrize("opt_cls", OPTIMISERS)
def test_instance_norm_running_stats_equal_one_forward_at_end_point(opt_cls):
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.Unflatten(1, (4, 4)),
        nn.InstanceNorm1d(4, track_running_stats=True, momentum=None),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    opt = opt_cls(model.parameters(), radius=1e-2)
    for _ in range(3):
        before = copy.deepcopy(model)
        opt.step(_closure(model, x, y))
        with torch.no_grad():  # oracle: the pre-step buffers after one forward at the end point
            for p_ref, p in zip(before.parameters(), model.parameters()):
                p_ref.copy_(p)
            before(x)
        for (name, b), (_, b_ref) in zip(model.named_buffers(), before.named_buffers()):
            assert torch.equal(b, b_ref), name


# ---------------------------------------------------------------------------------------------
# Stochastic modules other than nn.Dropout: one random draw per step, so rho compares like with like.


def test_rnn_dropout_uses_one_mask_per_step():
    torch.manual_seed(0)
    rnn = nn.RNN(4, 8, num_layers=2, dropout=0.5, batch_first=True)
    head = nn.Linear(8, 3)
    xs, ys = torch.randn(16, 5, 4), torch.randint(0, 3, (16,))
    opt = EllipsoidalTR([*rnn.parameters(), *head.parameters()], radius=1e-2)
    for _ in range(10):
        opt.step(lambda: nn.functional.cross_entropy(head(rnn(xs)[0][:, -1]), ys))
        # same mask at w and w + s: the quadratic model predicts a tiny step almost exactly
        assert abs(opt.last_step.rho - 1.0) < 0.05


def test_bernoulli_stochastic_depth_sees_one_draw_per_step():
    x, y = _data()
    torch.manual_seed(0)
    block, head = nn.Linear(8, 8), nn.Linear(8, 3)
    draws: list[torch.Tensor] = []

    def closure():
        keep = torch.bernoulli(torch.full((32, 1), 0.5))
        draws.append(keep)
        return nn.functional.cross_entropy(head(x + keep * block(x)), y)

    opt = EllipsoidalTR([*block.parameters(), *head.parameters()], radius=1e-2)
    opt.step(closure)
    assert len(draws) == 2 and torch.equal(draws[0], draws[1])
    opt.step(closure)
    assert not torch.equal(draws[2], draws[0])  # the next step draws afresh


# ---------------------------------------------------------------------------------------------
# Schedulers: lr scales the radius cap, so every lr scheduler (chained too) schedules lr * max_radius.


@pytest.mark.parametrize(
    "make",
    [
        lambda o: lr_scheduler.ChainedScheduler(
            [lr_scheduler.ExponentialLR(o, 0.5), lr_scheduler.StepLR(o, 2)]
        ),
        lambda o: lr_scheduler.SequentialLR(
            o, [lr_scheduler.ConstantLR(o, 0.5, 2), lr_scheduler.ExponentialLR(o, 0.5)], milestones=[2]
        ),
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 2, eta_min=0.1),
    ],
    ids=["chained", "sequential", "cosine_restarts"],
)
def test_other_schedulers_scale_the_radius_cap(make):
    x, y = _data()
    model = _mlp()
    opt = EllipsoidalTR(model.parameters(), radius=1e-2, max_radius=0.05)
    sched = make(opt)
    for _ in range(5):
        cap = opt.param_groups[0]["lr"] * 0.05
        opt.step(_closure(model, x, y))
        record = opt.last_step
        assert record.radius_before <= cap * (1 + 1e-12)
        assert record.radius_after <= cap * (1 + 1e-12)
        sched.step()


# ---------------------------------------------------------------------------------------------
# load_state_dict from another optimiser is refused before anything changes.


@pytest.mark.parametrize("foreign", ["Adam", "SGD", "LBFGS"])
def test_state_of_a_torch_optimiser_is_refused_and_changes_nothing(foreign):
    x, y = _data()
    model = _mlp()
    other = getattr(torch.optim, foreign)(model.parameters(), lr=0.1)
    opt = EllipsoidalTR(model.parameters(), radius=1e-2)
    opt.step(_closure(model, x, y))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="EllipsoidalTR"):
        opt.load_state_dict(other.state_dict())
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"][0]["radius"] == before["state"][0]["radius"]


# ---------------------------------------------------------------------------------------------
# deepcopy mid-training with Dropout, then step both: bitwise like an uninterrupted run.


@pytest.mark.parametrize("opt_cls", OPTIMISERS)
def test_deepcopy_mid_training_with_dropout_continues_bitwise(opt_cls):
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = opt_cls(model.parameters(), radius=1e-2, ellipsoid="rms")
    torch.manual_seed(5)
    for _ in range(3):
        opt.step(_closure(model, x, y))
    rng = torch.get_rng_state()
    model2, opt2 = copy.deepcopy((model, opt))
    for _ in range(3):
        opt.step(_closure(model, x, y))
    torch.set_rng_state(rng)
    for _ in range(3):
        opt2.step(_closure(model2, x, y))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert opt.radius == opt2.radius and opt.counters == opt2.counters


# ---------------------------------------------------------------------------------------------
# Known gaps (the optimiser package): each test states the right outcome.


@pytest.mark.parametrize("opt_cls", OPTIMISERS)
def test_step_inside_no_grad_works_like_lbfgs(opt_cls):
    x, y = _data()
    model, ref = _mlp(), _mlp()
    lbfgs = torch.optim.LBFGS(ref.parameters(), max_iter=1)

    def lbfgs_closure():
        lbfgs.zero_grad()
        loss = nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        lbfgs.step(lbfgs_closure)  # torch's own closure optimiser: fine under no_grad
    opt = opt_cls(model.parameters(), radius=1e-2)
    with torch.no_grad():
        opt.step(_closure(model, x, y))
    assert opt.counters["steps"] == 1


def test_module_backward_hooks_are_never_silent_about_the_curvature():
    """Module backward hooks are part of the graph, so Hessian products pass through them too (the
    documented behaviour); the optimiser says so once, names the module and counts every step."""
    x, y = _data()
    calls = [0]
    model = _mlp()
    model[0].register_full_backward_hook(lambda mod, gin, gout: calls.__setitem__(0, calls[0] + 1))
    opt = EllipsoidalTR(model.parameters(), radius=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            opt.step(_closure(model, x, y))
    assert opt.counters["hvp"] > opt.counters["steps"]  # Hessian products were made
    assert calls[0] >= opt.counters["backward"]  # the hook ran (at least once per gradient)
    hooked = [w for w in caught if "module backward hooks on Linear" in str(w.message)]
    assert len(hooked) == 1 and issubclass(hooked[0].category, RuntimeWarning)
    assert opt.fault_counts["module_backward_hooks"] == 4


def test_post_accumulate_grad_hooks_fire_once_per_step():
    x, y = _data()
    model = _mlp()
    calls = [0]
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: calls.__setitem__(0, calls[0] + 1))
    opt = EllipsoidalTR(model.parameters(), radius=1e-2)
    opt.step(_closure(model, x, y))
    assert all(p.grad is not None for p in model.parameters())
    assert calls[0] == len(list(model.parameters()))


def test_a_repeated_fault_warns_once_and_is_counted():
    x, y = _data()
    model = _mlp()
    opt = EllipsoidalTR(model.parameters(), radius=1e-2, tiny_pred=1e30)  # every step: nonpositive_pred
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(20):
            opt.step(_closure(model, x, y))
    assert opt.last_step.fault == "nonpositive_pred"
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
