"""Hessian-vector products on a sub-batch of the gradient batch (hessian_fraction).

Oracle: linear least squares f(w) = 1/(2n) ||X w - y||^2 with an interior step solved exactly
(CG to 1e-12 in d = 5 iterations, uniform ellipsoid): s = -H^-1 g with H = X_k^T X_k / k on the first
k = ceil(fraction * n) rows, g the gradient on all n rows.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from etr_core.hessian_batch import takes_batch_fraction
from etr_core.optim import EllipsoidalTR

N, D = 64, 5


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=gen, dtype=torch.float64)
    noise = 0.1 * torch.randn(N, generator=gen, dtype=torch.float64)
    y = X @ torch.randn(D, generator=gen, dtype=torch.float64) + noise
    w = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    return X, y, w


def _opt(w, **kw):
    options = dict(
        ellipsoid="uniform", radius=1e3, max_radius=1e4, krylov_tol=1e-12, theta=0.0, max_krylov=50
    )
    return EllipsoidalTR([w], **{**options, **kw})


def _newton_step(X, y, w0, k):
    g = X.T @ (X @ w0 - y) / N
    H = X[:k].T @ X[:k] / k
    return -torch.linalg.solve(H, g)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_step_uses_the_first_fraction_of_the_batch_for_the_hessian(fraction):
    X, y, w = _data()
    calls = []

    def closure(batch_fraction: float = 1.0):
        n = math.ceil(batch_fraction * N)
        calls.append(n)
        return 0.5 * ((X[:n] @ w - y[:n]) ** 2).mean()

    opt = _opt(w, hessian_fraction=fraction)
    w0 = w.detach().clone()
    opt.step(closure)
    k = math.ceil(fraction * N)
    assert opt.last_step.accepted
    torch.testing.assert_close(w.detach() - w0, _newton_step(X, y, w0, k), rtol=1e-9, atol=1e-12)
    expected_calls = [N, k, N] if fraction < 1 else [N, N]  # w, Hessian batch, trial at w + s
    assert calls == expected_calls
    assert opt.counters["forward"] == len(calls)
    assert opt.counters["backward"] == (2 if fraction < 1 else 1)


def test_a_closure_without_batch_fraction_keeps_the_whole_batch_and_warns_once():
    X, y, w = _data(1)
    opt = _opt(w, hessian_fraction=0.25)
    w0 = w.detach().clone()

    def closure():
        return 0.5 * ((X @ w - y) ** 2).mean()

    with pytest.warns(UserWarning, match="hessian_fraction=0.25 needs a closure"):
        opt.step(closure)
    torch.testing.assert_close(w.detach() - w0, _newton_step(X, y, w0, N), rtol=1e-9, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(closure)


def test_an_explicit_hessian_closure_wins_over_the_fraction():
    X, y, w = _data(2)
    opt = _opt(w, hessian_fraction=0.25)
    w0 = w.detach().clone()

    def closure(batch_fraction: float = 1.0):
        assert batch_fraction == 1.0, "the Hessian batch must come from hessian_closure"
        return 0.5 * ((X @ w - y) ** 2).mean()

    opt.step(closure, hessian_closure=lambda: 0.5 * ((X[:40] @ w - y[:40]) ** 2).mean())
    torch.testing.assert_close(w.detach() - w0, _newton_step(X, y, w0, 40), rtol=1e-9, atol=1e-12)


def test_fraction_is_a_group_option_checked_and_saved():
    _, _, w = _data()
    opt = _opt(w, hessian_fraction=0.5)
    assert opt.param_groups[0]["hessian_fraction"] == 0.5
    assert opt.state_dict()["param_groups"][0]["hessian_fraction"] == 0.5
    opt.param_groups[0]["hessian_fraction"] = 1.5
    with pytest.raises(ValueError, match=r"hessian_fraction must be in \(0, 1\]"):
        opt.step(lambda: (w * w).sum())
    with pytest.raises(ValueError, match="hessian_fraction"):
        EllipsoidalTR([w], hessian_fraction=0.0)


def test_batch_fraction_detection():
    def a(batch_fraction=1.0): ...
    def b(*, batch_fraction=1.0): ...
    def c(**kwargs): ...
    def d(): ...
    def e(*args): ...
    assert takes_batch_fraction(a) and takes_batch_fraction(b) and takes_batch_fraction(c)
    assert not takes_batch_fraction(d) and not takes_batch_fraction(e)
    assert not takes_batch_fraction(print)
