"""Curvature tools measure without side effects: buffers, BatchNorm and Dropout (paper section 3.2).

Oracles: ``torch.autograd.functional.hessian`` of the loss written by hand with ``F.batch_norm``
(batch statistics in train mode, the running ones in eval mode), and a finite difference of
gradients for the Hessian-vector product.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from etr_core.curvature import (
    HESSIAN_METHODS,
    exact_hessian,
    hutchinson_diagonal,
    lanczos_extreme_eigenvalues,
    loss_of_flat_parameters,
    network_hvp,
)


class Counter(nn.Module):
    """A module that writes a buffer on every forward (as a custom statistic would)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls.add_(1)
        return x


def _bn_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), Counter(), nn.Linear(5, 3)).double()
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(5, dtype=torch.float64) + 0.5)
        bn.weight.copy_(torch.randn(5, dtype=torch.float64))
        bn.bias.copy_(torch.randn(5, dtype=torch.float64))
    bn.num_batches_tracked.fill_(7)
    return model


def _data(n: int = 9, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _oracle_loss(model: nn.Sequential, x, y):
    """Cross entropy of the model written with F.batch_norm; the flat parameter order of the model."""
    bn = model[1]
    shapes = [p.shape for p in model.parameters()]
    numels = [p.numel() for p in model.parameters()]
    train = model.training
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()

    def f(w):
        W1, b1, g, beta, W2, b2 = (t.view(s) for t, s in zip(w.split(numels), shapes))
        h = x @ W1.T + b1
        h = F.batch_norm(h, None if train else rm, None if train else rv, g, beta, training=train, eps=bn.eps)
        return F.cross_entropy(torch.tanh(h) @ W2.T + b2, y)

    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _buffers(model):
    return {name: b.clone() for name, b in model.named_buffers()}


def _assert_bitwise_equal(before, model):
    after = dict(model.named_buffers())
    assert before.keys() == after.keys()
    for name, b in before.items():
        assert torch.equal(b, after[name]) and b.dtype == after[name].dtype, name


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", HESSIAN_METHODS)
def test_exact_hessian_of_batchnorm_model_is_right_and_leaves_buffers(method, train):
    model = _bn_model()
    model.train(train)
    x, y = _data()
    before = _buffers(model)
    f, w = _oracle_loss(model, x, y)
    oracle = torch.autograd.functional.hessian(f, w)
    H = exact_hessian(model, x, y, method=method, chunk_size=7)
    torch.testing.assert_close(H.matrix, oracle, rtol=1e-9, atol=1e-11)
    assert H.loss == pytest.approx(float(f(w)), rel=1e-12)
    _assert_bitwise_equal(before, model)
    assert model.training is train and model[1].track_running_stats


def test_train_and_eval_mode_hessians_differ():
    # the two modes are two different functions: the test above is not vacuous
    model = _bn_model()
    x, y = _data()
    H_train = exact_hessian(model.train(), x, y).matrix
    H_eval = exact_hessian(model.eval(), x, y).matrix
    assert (H_train - H_eval).abs().max() > 1e-3


def test_loss_function_never_writes_buffers():
    model = _bn_model().train()
    x, y = _data()
    before = _buffers(model)
    f, w = loss_of_flat_parameters(model, x, y)
    oracle, _ = _oracle_loss(model, x, y)
    for _ in range(3):
        assert float(f(w)) == pytest.approx(float(oracle(w)), rel=1e-12)
    _assert_bitwise_equal(before, model)


def test_network_hvp_and_estimators_leave_buffers_and_match_finite_differences():
    model = _bn_model().train()
    x, y = _data()
    before = _buffers(model)
    hvp = network_hvp(model, x, y)
    f, w = _oracle_loss(model, x, y)
    v = torch.randn(w.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-5

    def grad_at(u):
        u = u.detach().requires_grad_(True)
        return torch.autograd.grad(f(u), u)[0]

    fd = (grad_at(w + eps * v) - grad_at(w - eps * v)) / (2 * eps)   # central difference of gradients
    torch.testing.assert_close(hvp(v), fd, rtol=1e-6, atol=1e-8)
    oracle = torch.autograd.functional.hessian(f, w)
    eig = torch.linalg.eigvalsh(oracle)
    lanczos = lanczos_extreme_eigenvalues(hvp, hvp.d, hvp.d)
    assert lanczos.largest == pytest.approx(float(eig[-1]), rel=1e-8)
    assert lanczos.smallest == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-10)
    estimate = hutchinson_diagonal(hvp, hvp.d, 64, seed=0)
    assert estimate.diag.shape == (hvp.d,)
    _assert_bitwise_equal(before, model)


def test_dropout_uses_one_mask_and_leaves_the_random_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3)).double().train()
    x, y = _data()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    results = {m: exact_hessian(model, x, y, method=m, chunk_size=5).matrix for m in HESSIAN_METHODS}
    assert torch.equal(torch.get_rng_state(), state)
    # oracle: the loss with the mask the next forward would draw, replayed for every evaluation
    shapes = [p.shape for p in model.parameters()]
    numels = [p.numel() for p in model.parameters()]

    def f(w):
        W1, b1, W2, b2 = (t.view(s) for t, s in zip(w.split(numels), shapes))
        torch.set_rng_state(state)
        h = F.dropout(torch.tanh(x @ W1.T + b1), 0.5, training=True)
        return F.cross_entropy(h @ W2.T + b2, y)

    with torch.random.fork_rng(devices=[]):
        w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        oracle = torch.autograd.functional.hessian(f, w)
    for method, H in results.items():
        torch.testing.assert_close(H, oracle, rtol=1e-9, atol=1e-11, msg=method)


def test_batchnorm_conv_model_in_float32_does_not_raise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(5, 1, 6, 6)
    y = torch.tensor([0, 1, 2, 1, 0])
    before = _buffers(model)
    H = exact_hessian(model, x, y)
    assert torch.isfinite(H.matrix).all()
    torch.testing.assert_close(H.matrix, H.matrix.T, rtol=1e-4, atol=1e-5)
    _assert_bitwise_equal(before, model)
