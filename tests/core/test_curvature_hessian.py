"""Exact Hessian of small networks (paper section 3.2) against independent oracles."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from etr_core.curvature import (
    HESSIAN_METHODS,
    check_hessian_size,
    exact_hessian,
    network_hvp,
    parameter_blocks,
)


def _tiny_mlp(seed: int = 0, sizes=(5, 4, 3), act=nn.Tanh) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


def _data(n=11, features=5, classes=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=gen)


def _manual_loss(model: nn.Sequential, x, y, loss=nn.functional.cross_entropy):
    """The loss as a function of the flat parameters, written by hand (no functional_call)."""
    shapes = [p.shape for p in model.parameters()]
    numels = [p.numel() for p in model.parameters()]
    acts = [m for m in model if not isinstance(m, nn.Linear)]

    def f(w):
        parts = [t.view(s) for t, s in zip(w.split(numels), shapes)]
        h = x
        for k in range(0, len(parts), 2):
            h = h @ parts[k].T + parts[k + 1]
            if k // 2 < len(acts):
                h = acts[k // 2](h)
        return loss(h, y)

    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("method", HESSIAN_METHODS)
def test_matches_autograd_functional_hessian(method):
    model = _tiny_mlp()
    x, y = _data()
    f, w = _manual_loss(model, x, y)
    oracle = torch.autograd.functional.hessian(f, w)
    for chunk in (1, 7, 1000):
        H = exact_hessian(model, x, y, chunk_size=chunk, method=method)
        assert H.matrix.shape == (w.numel(), w.numel())
        torch.testing.assert_close(H.matrix, oracle, rtol=1e-10, atol=1e-12)
    assert H.loss == pytest.approx(float(f(w)), rel=1e-12)


def test_matches_central_finite_differences_of_the_gradient():
    model = _tiny_mlp(seed=3, sizes=(4, 3, 3, 2), act=nn.Sigmoid)
    x, y = _data(n=9, features=4, classes=2, seed=5)
    f, w = _manual_loss(model, x, y)
    H = exact_hessian(model, x, y).matrix
    h = 1e-5
    fd = torch.empty_like(H)
    for i in range(w.numel()):
        e = torch.zeros_like(w)
        e[i] = h
        gp = torch.func.grad(f)(w + e)
        gm = torch.func.grad(f)(w - e)
        fd[:, i] = (gp - gm) / (2 * h)
    torch.testing.assert_close(H, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["reverse", "double_backward"])
def test_custom_loss_and_symmetry(method):
    model = _tiny_mlp(sizes=(3, 5, 2))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    t = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    f, w = _manual_loss(model, x, t, nn.functional.mse_loss)
    H = exact_hessian(model, x, t, nn.functional.mse_loss, method=method).matrix
    torch.testing.assert_close(H, torch.autograd.functional.hessian(f, w), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H, H.T, rtol=1e-10, atol=1e-13)


def test_full_data_hessian_is_mean_of_batch_hessians():
    # mean loss over 12 examples = average of the mean losses of three equal batches
    model = _tiny_mlp()
    x, y = _data(n=12)
    full = exact_hessian(model, x, y).matrix
    parts = [exact_hessian(model, x[i : i + 4], y[i : i + 4]).matrix for i in (0, 4, 8)]
    torch.testing.assert_close(full, sum(parts) / 3, rtol=1e-10, atol=1e-12)


def test_network_hvp_matches_dense_hessian():
    model = _tiny_mlp()
    x, y = _data()
    H = exact_hessian(model, x, y).matrix
    hvp = network_hvp(model, x, y)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), H @ v, rtol=1e-10, atol=1e-12)


def test_blocks_per_tensor_and_per_layer():
    model = _tiny_mlp(sizes=(5, 4, 3))
    tensors = parameter_blocks(model, "tensor")
    assert [(b.name, b.start, b.stop) for b in tensors] == [
        ("0.weight", 0, 20), ("0.bias", 20, 24), ("2.weight", 24, 36), ("2.bias", 36, 39),
    ]
    layers = parameter_blocks(model, "layer")
    assert [(b.name, b.start, b.stop, b.size) for b in layers] == [("0", 0, 24, 24), ("2", 24, 39, 15)]
    with pytest.raises(ValueError, match="by"):
        parameter_blocks(model, "module")


def test_size_limit_names_d_and_limit():
    model = nn.Sequential(nn.Linear(100, 50), nn.Tanh(), nn.Linear(50, 10))  # d = 5,560
    x, y = torch.randn(4, 100), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match=r"d = 5,560 .*max_params = 5,000"):
        exact_hessian(model, x, y, max_params=5000)
    with pytest.raises(ValueError, match="max_params"):
        check_hessian_size(10, max_params=0)
    with pytest.raises(ValueError, match="method"):
        exact_hessian(_tiny_mlp(), *_data(), method="magic")
    with pytest.raises(ValueError, match="chunk_size"):
        exact_hessian(_tiny_mlp(), *_data(), chunk_size=0)
    check_hessian_size(12_000)  # the default limit admits 12,000


def test_float32_close_to_float64():
    model64 = _tiny_mlp()
    x, y = _data()
    model32 = _tiny_mlp().float()
    H64 = exact_hessian(model64, x, y).matrix
    H32 = exact_hessian(model32, x.float(), y).matrix
    assert H32.dtype == torch.float32
    torch.testing.assert_close(H32.double(), H64, rtol=1e-4, atol=1e-6)
