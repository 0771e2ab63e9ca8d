"""FirstOrderTR (paper appendix B, Fig. 5): Theorem 1 inside the loop and the Fig. 5 iteration counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from etr_core.optim import FirstOrderTR


def _task(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    batches = [torch.randperm(64, generator=gen)[:32] for _ in range(25)]
    return X, y, batches


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _train(model, opt, X, y, batches, use_closure: bool):
    for idx in batches:

        def loss_fn(idx=idx):
            return nn.functional.cross_entropy(model(X[idx]), y[idx])

        if use_closure:
            opt.step(loss_fn)
        else:  # a torch.optim baseline: backward, then step
            opt.zero_grad()
            loss_fn().backward()
            opt.step()


def _assert_same_params(a: nn.Module, b: nn.Module):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-11, atol=1e-13)


def test_theorem1_uniform_equals_sgd():
    X, y, batches = _task(1)
    ours, ref = _model(1), _model(1)
    opt = FirstOrderTR(ours.parameters(), ellipsoid="uniform", radius_rule="eta", lr=0.3)
    _train(ours, opt, X, y, batches, use_closure=True)
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.3), X, y, batches, use_closure=False)
    _assert_same_params(ours, ref)
    assert opt.counters["accepted"] == opt.counters["steps"] == len(batches)
    assert opt.counters["forward"] == len(batches)  # forced acceptance: no trial evaluation


@pytest.mark.parametrize("eps_mode", ["paper", "authors"])
def test_theorem1_adagrad_equals_torch_adagrad(eps_mode):
    """m = sqrt(eps + sum g^2) in both eps modes = torch Adagrad with initial accumulator eps, eps 0."""
    X, y, batches = _task(2)
    ours, ref = _model(2), _model(2)
    opt = FirstOrderTR(
        ours.parameters(), ellipsoid="adagrad", radius_rule="eta", lr=0.05, eps=1e-10, eps_mode=eps_mode
    )
    _train(ours, opt, X, y, batches, use_closure=True)
    base = torch.optim.Adagrad(ref.parameters(), lr=0.05, initial_accumulator_value=1e-10, eps=0.0)
    _train(ref, base, X, y, batches, use_closure=False)
    _assert_same_params(ours, ref)


def test_theorem1_rms_equals_torch_rmsprop():
    """The square-root RMS ellipsoid with beta = alpha is RMSprop (Corollary 1); eps = 1e-300 vanishes
    next to the accumulator in float64, matching RMSprop with eps = 0."""
    X, y, batches = _task(3)
    ours, ref = _model(3), _model(3)
    opt = FirstOrderTR(ours.parameters(), ellipsoid="rms", radius_rule="eta", lr=0.01, beta=0.8, eps=1e-300)
    _train(ours, opt, X, y, batches, use_closure=True)
    _train(
        ref,
        torch.optim.RMSprop(ref.parameters(), lr=0.01, alpha=0.8, eps=0.0),
        X,
        y,
        batches,
        use_closure=False,
    )
    _assert_same_params(ours, ref)


def test_theorem1_rms_paper_eps_equals_hand_written_preconditioned_gd():
    X, y, batches = _task(4)
    ours, ref = _model(4), _model(4)
    opt = FirstOrderTR(ours.parameters(), ellipsoid="rms", radius_rule="eta", lr=0.02, beta=0.8, eps=1e-6)
    _train(ours, opt, X, y, batches, use_closure=True)
    params = list(ref.parameters())
    v = [torch.zeros_like(p) for p in params]
    for idx in batches:
        grads = torch.autograd.grad(nn.functional.cross_entropy(ref(X[idx]), y[idx]), params)
        with torch.no_grad():
            for p, vi, g in zip(params, v, grads):
                vi.mul_(0.8).add_(0.2 * g * g)
                p.sub_(0.02 * g / torch.sqrt(vi + 1e-6))
    _assert_same_params(ours, ref)


def test_tr_mode_steps_lie_on_the_boundary_with_linear_prediction():
    X, y, batches = _task(5)
    model = _model(5)
    opt = FirstOrderTR(model.parameters(), ellipsoid="adagrad", radius=0.05)
    accumulator = None
    for idx in batches[:8]:
        params = list(model.parameters())
        g = torch.cat(
            [
                t.reshape(-1)
                for t in torch.autograd.grad(nn.functional.cross_entropy(model(X[idx]), y[idx]), params)
            ]
        )
        accumulator = g * g if accumulator is None else accumulator + g * g
        m = torch.sqrt(accumulator + 1e-16)
        opt.step(lambda idx=idx: nn.functional.cross_entropy(model(X[idx]), y[idx]))
        rec = opt.last_step
        assert rec.step_m_norm == pytest.approx(rec.radius_before, rel=1e-12)
        assert rec.pred_reduction == pytest.approx(
            rec.radius_before * float(torch.sqrt((g * g / m).sum())), rel=1e-12
        )
        assert rec.hvp_calls == 0
    assert opt.counters["hvp"] == 0 and opt.counters["forward"] == 16


def test_first_order_options_are_validated():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="lr"):
        FirstOrderTR([w], radius_rule="eta")
    with pytest.raises(ValueError, match="lr"):
        FirstOrderTR([w], radius_rule="eta", lr=-1.0)
    with pytest.raises(ValueError, match="lr"):
        FirstOrderTR([w], lr=0.1)
    with pytest.raises(ValueError, match="radius_rule"):
        FirstOrderTR([w], radius_rule="adaptive")
    with pytest.raises(ValueError, match="gamma2"):
        FirstOrderTR([w], gamma2=1.0)


def _iterations_to_target(kappa: float, ellipsoid: str, radius: float) -> int:
    w = nn.Parameter(torch.tensor([2.0, 1.0], dtype=torch.float64))
    opt = FirstOrderTR(
        [w],
        ellipsoid=ellipsoid,
        radius=radius,
        max_radius=10.0,
        eta1=1e-4,
        eta2=0.95,
        gamma1=1.1,
        gamma2=1.5,
        eps=1e-10,
    )

    def f():
        return 0.5 * (w[0] ** 2 + kappa * w[1] ** 2)

    for it in range(5000):
        if float(f().detach()) < 1e-8:
            return it
        opt.step(f)
    raise AssertionError("did not reach f < 1e-8 in 5000 iterations")


@pytest.mark.parametrize(
    ("ellipsoid", "expected"),
    [("uniform", {1e-4: 646, 1e-2: 597, 1.0: 557}), ("adagrad", {1e-4: 145, 1e-2: 94, 1.0: 49})],
)
def test_d65_spherical_vs_ellipsoidal_on_ill_conditioned_quadratic(ellipsoid, expected):
    """Fig. 5 analogue, kappa = 100: spherical first-order TR needs 550-650 iterations, the Adagrad
    ellipsoid 50-150 (the paper's Fig. 5 point). Counts within +-20%."""
    for radius, reference in expected.items():
        n = _iterations_to_target(100.0, ellipsoid, radius)
        assert abs(n - reference) <= 0.2 * reference, (radius, n, reference)
