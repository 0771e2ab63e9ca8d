"""The torch.optim contract of EllipsoidalTR and FirstOrderTR, in the spirit of torch's OptimizerInfo:
one table of optimisers and options, one generic suite (state_dict, deepcopy, pickle, param_groups,
add_param_group, schedulers, hooks, load validation, scalar hyper-parameters).

Oracles: an uninterrupted run (bitwise), closed forms of the ellipsoid statistics, torch's own
schedulers and torch.optim.SGD (FirstOrderTR with radius_rule="eta" and the sphere is SGD, Theorem 1).
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from etr_core.optim import EllipsoidalTR, FirstOrderTR

OPTIMIZERS = [
    pytest.param(cls, {"ellipsoid": kind, "radius": 0.05}, id=f"{cls.__name__}-{kind}")
    for cls in (EllipsoidalTR, FirstOrderTR)
    for kind in ("uniform", "adagrad", "rms")
]
ACCUMULATING = [p for p in OPTIMIZERS if p.values[1]["ellipsoid"] != "uniform"]


def _task(dtype=torch.float64, seed: int = 0, n: int = 96):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen).to(dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    batches = [torch.randperm(n, generator=gen)[:48] for _ in range(8)]
    return model, X, y, batches


def _run(model, opt, X, y, batches) -> None:
    for idx in batches:
        opt.step(lambda idx=idx: nn.functional.cross_entropy(model(X[idx]), y[idx]))


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _same_state(a: dict, b: dict) -> bool:
    """Bitwise equality of two optimiser state dicts (tensors by torch.equal, the rest by ==)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not _same_state(x, y):
                return False
        elif isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif isinstance(x, list):
            if len(x) != len(y) or any(
                not _same_state(u, v) if isinstance(u, dict) else u != v for u, v in zip(x, y)
            ):
                return False
        elif x != y:
            return False
    return True


# --- state_dict: torch's layout, round trip bitwise ----------------------------------------------
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_state_dict_has_torch_layout(cls, options):
    model, *_ = _task()
    opt = cls(model.parameters(), **options)
    sd = opt.state_dict()
    params = list(model.parameters())
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == list(range(len(params)))
    assert sorted(sd["state"]) == list(range(len(params)))  # every parameter has an entry from the start
    assert sd["state"][0]["radius"] == 0.05 and sd["state"][0]["counters"]["steps"] == 0
    for i, p in enumerate(params):
        if options["ellipsoid"] == "uniform":
            assert "v" not in sd["state"][i]
        else:
            assert sd["state"][i]["v"].shape == p.shape and sd["state"][i]["v"].dtype == p.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_state_dict_round_trip_continues_bitwise(cls, options, dtype):
    model, X, y, batches = _task(dtype=dtype)
    opt = cls(model.parameters(), **options)
    _run(model, opt, X, y, batches[:3])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    _run(model, opt, X, y, batches[3:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain tensors and numbers only
    model2, _, _, _ = _task(dtype=dtype, seed=5)
    model2.load_state_dict(saved["model"])
    opt2 = cls(model2.parameters(), ellipsoid="uniform", radius=1.0)  # everything comes from the state
    opt2.load_state_dict(saved["opt"])
    _run(model2, opt2, X, y, batches[3:])
    assert torch.equal(_flat(model), _flat(model2))
    assert opt2.radius == opt.radius and opt2.counters == opt.counters
    assert _same_state(opt2.state_dict(), opt.state_dict())


@pytest.mark.parametrize(("cls", "options"), ACCUMULATING)
def test_load_casts_floating_state_to_the_parameters_dtype(cls, options):
    model, X, y, batches = _task(dtype=torch.float32)
    opt = cls(model.parameters(), **options)
    _run(model, opt, X, y, batches[:2])
    sd = copy.deepcopy(opt.state_dict())
    for entry in sd["state"].values():
        entry["v"] = entry["v"].double()
    opt2 = cls(model.parameters(), **options)
    opt2.load_state_dict(sd)
    for p in model.parameters():
        assert opt2.state[p]["v"].dtype == torch.float32
        assert torch.equal(opt2.state[p]["v"], opt.state[p]["v"])


# --- deepcopy and pickle ------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_deepcopy_gives_an_independent_working_optimiser(cls, options):
    model, X, y, batches = _task()
    opt = cls(model.parameters(), **options)
    _run(model, opt, X, y, batches[:2])
    model2, opt2 = copy.deepcopy((model, opt))
    before = copy.deepcopy(opt.state_dict())
    _run(model2, opt2, X, y, batches[2:5])  # the copy moves on ...
    assert _same_state(opt.state_dict(), before)  # ... the original is untouched
    _run(model, opt, X, y, batches[2:5])
    assert torch.equal(_flat(model), _flat(model2))
    assert _same_state(opt.state_dict(), opt2.state_dict())


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_pickle_with_the_parameters_continues_identically(cls, options):
    model, X, y, batches = _task()
    opt = cls(model.parameters(), **options)
    _run(model, opt, X, y, batches[:2])
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2.last_step == opt.last_step
    _run(model, opt, X, y, batches[2:5])
    _run(model2, opt2, X, y, batches[2:5])
    assert torch.equal(_flat(model), _flat(model2))
    assert _same_state(opt.state_dict(), opt2.state_dict())


# --- param_groups are the one source of truth -----------------------------------------------------
def _linear_problem(dtype=torch.float64):
    """f(w) = b^T w: every model of Algorithm 1 is exact (rho = 1), so each step is very successful
    and the radius grows by gamma1 up to the cap."""
    w = nn.Parameter(torch.zeros(5, dtype=dtype))
    b = torch.linspace(-1.0, 2.0, 5, dtype=dtype)
    return w, (lambda: b @ w)


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_group_edits_take_effect_at_the_next_step(cls, options):
    w, closure = _linear_problem()
    opt = cls([w], **options)
    opt.step(closure)
    assert opt.last_step.radius_after == pytest.approx(0.05 * 1.1, rel=1e-12)
    opt.param_groups[0]["gamma1"] = 2.0
    opt.step(closure)
    assert opt.last_step.radius_after == pytest.approx(0.05 * 1.1 * 2.0, rel=1e-12)
    opt.param_groups[0]["max_radius"] = 0.07  # the cap binds at once, before the step
    opt.step(closure)
    rec = opt.last_step
    assert rec.radius_before == 0.07 and rec.radius_after == 0.07
    assert rec.step_m_norm == pytest.approx(0.07, rel=1e-9)
    opt.param_groups[0]["radius"] = 0.003  # a new initial radius restarts Delta there
    opt.step(closure)
    assert opt.last_step.radius_before == 0.003
    assert opt.config.gamma1 == 2.0 and opt.config.max_radius == 0.07  # what you read is what runs


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_options_given_in_a_group_dict_are_honoured(cls, options):
    w, closure = _linear_problem()
    group = {"params": [w], "radius": 1.0, "max_radius": 20.0, "gamma1": 1.5}
    opt = cls([group], ellipsoid=options["ellipsoid"])
    assert opt.param_groups[0]["radius"] == 1.0 and opt.radius == 1.0
    opt.step(closure)
    assert opt.last_step.radius_before == 1.0 and opt.last_step.radius_after == pytest.approx(1.5)
    with pytest.raises(TypeError, match="radious"):
        cls([{"params": [nn.Parameter(torch.zeros(2))], "radious": 1.0}])


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_groups_that_disagree_raise_naming_the_option(cls, options):
    a, b = nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="radius differs between param groups"):
        cls([{"params": [a]}, {"params": [b], "radius": 1.0}], **options)
    opt = cls([{"params": [a]}, {"params": [b]}], **options)
    opt.param_groups[1]["max_radius"] = 0.5
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="max_radius differs"):
        opt.step(lambda: (a * a).sum() + (b * b).sum())
    assert torch.equal(a.detach(), torch.ones(3, dtype=torch.float64)) and opt.counters["forward"] == 0
    assert _same_state(opt.state_dict(), before)
    for group in opt.param_groups:
        group["max_radius"] = 0.5
    opt.step(lambda: (a * a).sum() + (b * b).sum())
    assert opt.last_step.radius_before <= 0.5 and opt.counters["steps"] == 1


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_add_param_group_trains_new_params_with_fresh_statistics(cls, options):
    model, X, y, batches = _task()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    for p in second:
        p.requires_grad_(False)
    opt = cls(first, **options)
    _run(model, opt, X, y, batches[:2])
    for p in second:
        p.requires_grad_(True)
    with pytest.raises(ValueError, match="radius differs"):
        opt.add_param_group({"params": second, "radius": 1.0})
    with pytest.raises(ValueError, match="does not require grad"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.float64)]})
    with pytest.raises(TypeError, match="dtype"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2, dtype=torch.float32))]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": second})
    idx = batches[2]
    loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
    g_new = torch.autograd.grad(loss, second)
    before = [p.detach().clone() for p in second]
    opt.step(lambda: nn.functional.cross_entropy(model(X[idx]), y[idx]))
    if opt.last_step.accepted:
        assert all(not torch.equal(p.detach(), b) for p, b in zip(second, before))
    if options["ellipsoid"] != "uniform":  # one update of a fresh accumulator, closed form (Eq. 2-3)
        weight = 0.2 if options["ellipsoid"] == "rms" else 1.0
        for p, g in zip(second, g_new):
            torch.testing.assert_close(opt.state[p]["v"], weight * g * g, rtol=1e-12, atol=0)


# --- schedulers: lr scales the radius cap (or is eta for radius_rule="eta") -----------------------
SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.7),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.1),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=1.0, total_steps=8, cycle_momentum=False
    ),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1.0 / (k + 1)),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_schedulers_schedule_the_radius_cap(cls, options, name):
    w, closure = _linear_problem()
    opt = cls([w], ellipsoid=options["ellipsoid"], radius=0.05, max_radius=0.05)
    scheduler = SCHEDULERS[name](opt)
    expected = 0.05
    for _ in range(6):
        cap = opt.param_groups[0]["lr"] * 0.05  # the cap in force: the scheduler's lr times max_radius
        opt.step(closure)
        # every (exact) step is very successful: Delta grows by gamma1 = 1.1 and is clipped at the cap
        expected = min(expected, cap)
        assert opt.last_step.radius_before == pytest.approx(expected, rel=1e-12)
        expected = min(expected * 1.1, cap)
        assert opt.last_step.radius_after == pytest.approx(expected, rel=1e-12)
        if name == "ReduceLROnPlateau":
            scheduler.step(1.0)  # a metric that never improves
        else:
            scheduler.step()
    assert opt.param_groups[0]["lr"] < 1.0


def test_one_cycle_with_momentum_cycling_says_why():
    w, _ = _linear_problem()
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(EllipsoidalTR([w]), max_lr=1.0, total_steps=4)


def test_a_scheduler_that_reaches_zero_gets_a_clear_error():
    w, closure = _linear_problem()
    opt = EllipsoidalTR([w], ellipsoid="uniform")
    opt.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match=r"lr .* must be > 0.*eta_min"):
        opt.step(closure)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "LambdaLR"])
def test_first_order_eta_rule_with_a_scheduler_is_scheduled_sgd(name):
    """radius_rule="eta" with the sphere is SGD with step size lr (Theorem 1), scheduled as torch's SGD."""
    model, X, y, batches = _task()
    reference = copy.deepcopy(model)
    opt = FirstOrderTR(model.parameters(), ellipsoid="uniform", radius_rule="eta", lr=0.3)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.3)
    schedulers = [SCHEDULERS[name](opt), SCHEDULERS[name](sgd)]
    for idx in batches:
        opt.step(lambda idx=idx: nn.functional.cross_entropy(model(X[idx]), y[idx]))
        sgd.zero_grad()
        nn.functional.cross_entropy(reference(X[idx]), y[idx]).backward()
        sgd.step()
        for scheduler in schedulers:
            scheduler.step()
    torch.testing.assert_close(_flat(model), _flat(reference), rtol=1e-12, atol=1e-12)


# --- hooks ----------------------------------------------------------------------------------------
def test_state_dict_load_and_step_hooks_fire():
    model, X, y, batches = _task()
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
    calls: list[str] = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd_post"))
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("step_pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("step_post"))

    def rename(o, sd):  # a pre-hook that adapts an old checkpoint runs before validation
        calls.append("load_pre")
        sd["param_groups"][0]["max_radius"] = sd["param_groups"][0].pop("cap")
        return sd

    opt.register_load_state_dict_pre_hook(rename)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    _run(model, opt, X, y, batches[:1])
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["cap"] = sd["param_groups"][0].pop("max_radius")
    opt.load_state_dict(sd)
    assert calls == ["step_pre", "step_post", "sd_pre", "sd_post", "load_pre", "load_post"]
    assert opt.param_groups[0]["max_radius"] == 10.0


# --- load_state_dict validates everything before it changes anything ----------------------------
def _corruptions():
    def edit(fn):
        def apply(sd):
            fn(sd)
            return sd

        return apply

    return {
        "not a dict": lambda sd: [1, 2],
        "old garbage": lambda sd: {"kind": "EllipsoidalTR"},
        "no state": edit(lambda sd: sd.pop("state")),
        "two groups": edit(lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0], params=[]))),
        "other model size": edit(lambda sd: sd["param_groups"][0]["params"].pop()),
        "first-order state": edit(lambda sd: sd["param_groups"][0].update(radius_rule="tr")),
        "missing option": edit(lambda sd: sd["param_groups"][0].pop("solver")),
        "bad option": edit(lambda sd: sd["param_groups"][0].update(eta1=2.0)),
        "nan option": edit(lambda sd: sd["param_groups"][0].update(max_radius=float("nan"))),
        "v wrong shape": edit(lambda sd: sd["state"][1].update(v=torch.zeros(7, dtype=torch.float64))),
        "v integer": edit(lambda sd: sd["state"][1].update(v=sd["state"][1]["v"].long())),
        "v complex": edit(lambda sd: sd["state"][1].update(v=sd["state"][1]["v"].to(torch.complex128))),
        "v negative": edit(lambda sd: sd["state"][2].update(v=-torch.ones_like(sd["state"][2]["v"]))),
        "v nan": edit(lambda sd: sd["state"][2]["v"].fill_(float("nan"))),
        "v missing": edit(lambda sd: sd["state"][3].pop("v")),
        "v for a sphere": edit(lambda sd: sd["param_groups"][0].update(ellipsoid="uniform")),
        "radius negative": edit(lambda sd: sd["state"][0].update(radius=-1.0)),
        "radius missing": edit(lambda sd: sd["state"][0].pop("radius")),
        "counters incomplete": edit(lambda sd: sd["state"][0]["counters"].pop("hvp")),
        "last_accepted not bool": edit(lambda sd: sd["state"][0].update(last_accepted=3)),
        "unknown state key": edit(lambda sd: sd["state"][1].update(momentum=torch.zeros(1))),
        "stray state entry": edit(lambda sd: sd["state"].update({99: {}})),
    }


@pytest.mark.parametrize("name", list(_corruptions()))
def test_bad_state_is_refused_and_leaves_the_optimiser_untouched(name):
    model, X, y, batches = _task()
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
    _run(model, opt, X, y, batches[:2])
    good = copy.deepcopy(opt.state_dict())
    bad = _corruptions()[name](copy.deepcopy(good))
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(bad)
    assert _same_state(opt.state_dict(), good)
    reference = copy.deepcopy((model, opt))
    _run(model, opt, X, y, batches[2:4])  # and it still steps exactly like an untouched copy
    _run(reference[0], reference[1], X, y, batches[2:4])
    assert torch.equal(_flat(model), _flat(reference[0]))


def test_loading_another_optimisers_state_names_it():
    model, *_ = _task()
    tr = EllipsoidalTR(model.parameters())
    with pytest.raises(ValueError, match="not a FirstOrderTR state"):
        FirstOrderTR(model.parameters()).load_state_dict(tr.state_dict())
    with pytest.raises(ValueError, match=r"4 parameter.*has 1: the state is for another model"):
        EllipsoidalTR([nn.Parameter(torch.zeros(3))]).load_state_dict(tr.state_dict())


def test_state_of_the_earlier_layout_still_loads():
    model, X, y, batches = _task()
    opt = EllipsoidalTR(model.parameters(), ellipsoid="adagrad", radius=0.05)
    _run(model, opt, X, y, batches[:2])
    flat_v = torch.cat([opt.state[p]["v"].reshape(-1) for p in model.parameters()])
    earlier = {
        "kind": "EllipsoidalTR",
        "config": opt.config.to_dict(),
        "radius": opt.radius,
        "ellipsoid": {"kind": "adagrad", "eps": 1e-10, "eps_mode": "paper", "steps": 2, "v": flat_v.clone()},
        "counters": dict(opt.counters),
        "last_accepted": opt._last_accepted,
        "last_step": None,
    }
    model2 = copy.deepcopy(model)
    opt2 = EllipsoidalTR(model2.parameters())
    opt2.load_state_dict(earlier)
    _run(model, opt, X, y, batches[2:4])
    _run(model2, opt2, X, y, batches[2:4])
    assert torch.equal(_flat(model), _flat(model2)) and opt.counters == opt2.counters


# --- torch.distributed.checkpoint's state-dict helpers --------------------------------------------
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_distributed_checkpoint_state_dict_helpers(cls, options):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    model, X, y, batches = _task()
    opt = cls(model.parameters(), **options)
    _run(model, opt, X, y, batches[:2])
    osd = copy.deepcopy(get_optimizer_state_dict(model, opt))
    assert set(osd["state"]) == {name for name, _ in model.named_parameters()}
    model2 = copy.deepcopy(model)
    _run(model, opt, X, y, batches[2:4])
    opt2 = cls(model2.parameters(), **options)
    set_optimizer_state_dict(model2, opt2, osd)
    _run(model2, opt2, X, y, batches[2:4])
    assert torch.equal(_flat(model), _flat(model2))


# --- hyper-parameters: any real scalar ------------------------------------------------------------
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_numpy_and_0_dim_tensor_hyper_parameters_run_like_floats(cls, options):
    runs = []
    for kind in ("python", "numpy", "tensor"):
        as_ = {"python": float, "numpy": np.float64, "tensor": lambda v: torch.tensor(v, dtype=torch.float64)}
        as_ = as_[kind]
        model, X, y, batches = _task()
        opt = cls(
            model.parameters(), ellipsoid=options["ellipsoid"], radius=as_(0.5), max_radius=as_(4.0),
            gamma1=as_(1.5), eps=as_(1e-8),
        )
        assert type(opt.param_groups[0]["radius"]) is float  # stored as plain Python numbers
        _run(model, opt, X, y, batches[:3])
        opt.param_groups[0]["max_radius"] = as_(0.25)
        _run(model, opt, X, y, batches[3:5])
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    model, *_ = _task()
    if cls is EllipsoidalTR:
        assert cls(model.parameters(), max_krylov=np.int64(7)).config.max_krylov == 7
        assert cls(model.parameters(), max_krylov=torch.tensor(7)).config.max_krylov == 7


@pytest.mark.parametrize(
    ("value", "error"),
    [(True, TypeError), (1 + 1j, TypeError), (np.complex64(1), TypeError), (float("nan"), ValueError),
     (np.float64("inf"), ValueError), (torch.ones(2), TypeError), ("0.1", TypeError)],
)
@pytest.mark.parametrize("cls", [EllipsoidalTR, FirstOrderTR])
def test_bad_scalars_are_refused_naming_the_parameter(cls, value, error):
    with pytest.raises(error, match="max_radius"):
        cls([nn.Parameter(torch.zeros(2))], max_radius=value)


def test_first_order_eta_rule_never_raises_about_a_radius_the_user_never_set():
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = FirstOrderTR([w], ellipsoid="uniform", radius_rule="eta", lr=1e300)
    with pytest.warns(RuntimeWarning, match="nonfinite_radius"):
        opt.step(lambda: 1e10 * (w * w).sum())  # lr * ||g|| overflows to inf
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt.param_groups[0]["lr"] = 0.1
    opt.step(lambda: (w * w).sum())  # the same optimiser then steps normally: w - 0.1 * 2w
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, -1.6], dtype=torch.float64))
    assert math.isfinite(opt.radius)


def _with_settings_and_a_fault(cls, options):
    """An optimiser with keep_grad/fork_rng switched off and one handled fault counted (a float32
    radius above safe_radius is capped: fault_counts['radius_capped'] == 1)."""
    model, X, y, batches = _task(dtype=torch.float32)
    opt = cls(model.parameters(), **{**options, "max_radius": 1e30})
    opt.keep_grad = False
    opt.fork_rng = False
    opt.radius = 1e20
    with pytest.warns(RuntimeWarning, match="radius_capped"):
        _run(model, opt, X, y, batches[:1])
    assert opt.fault_counts == {"radius_capped": 1}
    return model, opt, X, y, batches


def _copies(model, opt, cls, options):
    yield "state_dict", model, _loaded(model, opt, cls, options)
    model2, opt2 = copy.deepcopy((model, opt))
    yield "deepcopy", model2, opt2
    model3, opt3 = pickle.loads(pickle.dumps((model, opt)))
    yield "pickle", model3, opt3


def _loaded(model, opt, cls, options):
    fresh = cls(model.parameters(), **{**options, "max_radius": 1e30})
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_fault_counts_and_switches_survive_state_dict_deepcopy_and_pickle(cls, options):
    model, opt, X, y, batches = _with_settings_and_a_fault(cls, options)
    for how, model2, opt2 in _copies(model, opt, cls, options):
        assert opt2.fault_counts == {"radius_capped": 1}, how
        assert opt2.keep_grad is False and opt2.fork_rng is False, how
        assert all(g["keep_grad"] is False and g["fork_rng"] is False for g in opt2.param_groups), how
        _run(model2, opt2, X, y, batches[1:2])
        assert all(p.grad is None for p in model2.parameters()), how  # keep_grad=False is honoured
    assert opt.fault_counts == {"radius_capped": 1}  # the copies count on their own


def test_fork_rng_false_is_honoured_after_a_round_trip():
    """With fork_rng off, the trial call draws a new Dropout mask (torch's stream moves on twice)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    X = torch.randn(32, 4)
    saved = EllipsoidalTR(model.parameters(), radius=0.01)
    saved.fork_rng = False
    opt = EllipsoidalTR(model.parameters(), radius=0.01)
    opt.load_state_dict(saved.state_dict())
    masks: list[torch.Tensor] = []

    def closure():
        h = model[0](X)
        out = model[1](h)
        masks.append((out == 0).clone())
        return model[2](out).pow(2).mean()

    opt.step(closure)
    assert len(masks) == 2 and not torch.equal(masks[0], masks[1])
    opt.fork_rng = True
    masks.clear()
    opt.step(closure)
    assert len(masks) == 2 and torch.equal(masks[0], masks[1])


def test_settings_are_checked():
    opt = EllipsoidalTR([torch.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match="keep_grad must be a bool"):
        opt.keep_grad = 0
    with pytest.raises(TypeError, match="fork_rng must be a bool"):
        opt.fork_rng = "no"
