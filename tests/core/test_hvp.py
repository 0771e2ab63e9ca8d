"""Hessian-vector products through one retained graph against independent oracles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from etr_core.hvp import flat_grad, flatten, grad_with_graph, make_hvp, unflatten_like


def _mlp_problem(seed: int = 0):
    """2-layer tanh MLP 6-10-4 on a fixed batch, float64: d = 6*10 + 10 + 10*4 + 4 = 114."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(32, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4)).double()
    params = list(model.parameters())
    shapes = [p.shape for p in params]

    def loss_of_flat(w: torch.Tensor) -> torch.Tensor:
        tensors = unflatten_like(w, [torch.empty(s, dtype=w.dtype) for s in shapes])
        h = torch.tanh(X @ tensors[0].T + tensors[1])
        out = h @ tensors[2].T + tensors[3]
        return nn.functional.cross_entropy(out, y)

    def loss_of_model() -> torch.Tensor:
        return nn.functional.cross_entropy(model(X), y)

    return model, params, loss_of_flat, loss_of_model


def test_flatten_unflatten_roundtrip_and_views():
    a, b = torch.randn(2, 3), torch.randn(4)
    vec = flatten([a, b])
    assert vec.shape == (10,)
    views = unflatten_like(vec, [a, b])
    assert torch.equal(views[0], a) and torch.equal(views[1], b)
    views[1].fill_(7.0)  # views share storage with vec
    assert torch.equal(vec[6:], torch.full((4,), 7.0))
    with pytest.raises(ValueError, match="entries"):
        unflatten_like(torch.zeros(9), [a, b])
    with pytest.raises(ValueError, match="1-D"):
        unflatten_like(torch.zeros(2, 5), [a, b])
    with pytest.raises(ValueError, match="at least one"):
        flatten([])


def test_hvp_matches_autograd_functional_hessian_on_mlp():
    _model, params, loss_of_flat, loss_of_model = _mlp_problem()
    w0 = flatten([p.detach() for p in params])
    d = w0.numel()
    assert 100 <= d <= 130
    H = torch.autograd.functional.hessian(loss_of_flat, w0)
    g = flat_grad(loss_of_model(), params, create_graph=True)
    hvp = make_hvp(g, params)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(d, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    assert hvp.calls == 3


def test_hvp_matches_central_differences_of_gradient():
    _model, params, loss_of_flat, _ = _mlp_problem(seed=3)
    w0 = flatten([p.detach() for p in params])
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v /= v.norm()

    def grad_at(w):
        w = w.clone().requires_grad_(True)
        return torch.autograd.grad(loss_of_flat(w), w)[0]

    h = 1e-6
    fd = (grad_at(w0 + h * v) - grad_at(w0 - h * v)) / (2 * h)
    w = w0.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_of_flat(w), w, create_graph=True)[0]
    hv = make_hvp(g, [w])(v)
    assert torch.linalg.vector_norm(hv - fd) <= 1e-6 * torch.linalg.vector_norm(fd)


def test_hvp_is_symmetric_and_linear():
    _, params, _, loss_of_model = _mlp_problem(seed=5)
    g = flat_grad(loss_of_model(), params, create_graph=True)
    hvp = make_hvp(g, params)
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(g.numel(), generator=gen, dtype=torch.float64)
    v = torch.randn(g.numel(), generator=gen, dtype=torch.float64)
    hu, hv = hvp(u), hvp(v)
    assert abs(float(u @ hv - v @ hu)) <= 1e-10 * max(1.0, float(u.norm() * hv.norm()))
    torch.testing.assert_close(hvp(2.0 * u - 3.0 * v), 2.0 * hu - 3.0 * hv, rtol=1e-10, atol=1e-12)
    assert not hu.requires_grad


def test_hvp_unused_params_and_constant_gradient_give_zeros():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)  # loss linear in b
    unused = torch.zeros(4, dtype=torch.float64, requires_grad=True)  # loss independent of it
    loss = (x**3).sum() + (3.0 * b).sum()
    g = flat_grad(loss, [x, b, unused], create_graph=True)
    torch.testing.assert_close(
        g.detach(), torch.cat([3 * x.detach() ** 2, torch.full((2,), 3.0), torch.zeros(4)]).double()
    )
    v = torch.ones(9, dtype=torch.float64)
    expected = torch.cat([6 * x.detach(), torch.zeros(6, dtype=torch.float64)])
    torch.testing.assert_close(make_hvp(g, [x, b, unused])(v), expected)
    # a loss linear in every parameter: the gradient has no graph at all, H = 0
    loss_lin = (2.0 * b).sum()
    g_lin = flat_grad(loss_lin, [b], create_graph=True)
    assert torch.equal(
        make_hvp(g_lin, [b])(torch.ones(2, dtype=torch.float64)), torch.zeros(2, dtype=torch.float64)
    )


def test_hvp_input_errors():
    x = torch.ones(3, requires_grad=True)
    g = flat_grad((x**2).sum(), [x], create_graph=True)
    hvp = make_hvp(g, [x])
    with pytest.raises(ValueError, match="shape"):
        hvp(torch.ones(4))
    with pytest.raises(ValueError, match="params hold"):
        make_hvp(g, [x, torch.ones(2, requires_grad=True)])
    with pytest.raises(ValueError, match="scalar"):
        flat_grad(x * 2, [x])
    with pytest.raises(ValueError, match="require grad"):
        flat_grad(torch.tensor(1.0), [x])


def test_hvp_float32_agrees_with_float64():
    _, params64, _, loss64 = _mlp_problem(seed=7)
    g64 = flat_grad(loss64(), params64, create_graph=True)
    v = torch.randn(g64.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = make_hvp(g64, params64)(v)
    model32 = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4))
    with torch.no_grad():
        for p32, p64 in zip(model32.parameters(), params64):
            p32.copy_(p64.float())
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(32, 6, generator=gen, dtype=torch.float64).float()
    y = torch.randint(0, 4, (32,), generator=gen)
    params32 = list(model32.parameters())
    g32 = flat_grad(nn.functional.cross_entropy(model32(X), y), params32, create_graph=True)
    out = make_hvp(g32, params32)(v.float())
    assert out.dtype == torch.float32
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-5


def test_per_parameter_path_matches_flat_path_and_oracle():
    _, params, loss_of_flat, loss_of_model = _mlp_problem(seed=9)
    w0 = flatten([p.detach() for p in params])
    H = torch.autograd.functional.hessian(loss_of_flat, w0)
    g, hvp = grad_with_graph(loss_of_model(), params)
    assert not g.requires_grad
    torch.testing.assert_close(g, flat_grad(loss_of_model(), params), rtol=0, atol=0)
    flat_hvp = make_hvp(flat_grad(loss_of_model(), params, create_graph=True), params)
    v = torch.randn(g.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hvp(v), flat_hvp(v), rtol=1e-13, atol=1e-15)
    assert hvp.calls == 2


def test_per_parameter_path_with_unused_and_linear_parameters():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    unused = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    g, hvp = grad_with_graph((x**3).sum() + (3.0 * b).sum(), [x, b, unused])
    torch.testing.assert_close(g[3:], torch.tensor([3.0, 3.0, 0, 0, 0, 0], dtype=torch.float64))
    v = torch.ones(9, dtype=torch.float64)
    torch.testing.assert_close(hvp(v), torch.cat([6 * x.detach(), torch.zeros(6, dtype=torch.float64)]))
    _, hvp_lin = grad_with_graph((2.0 * b).sum(), [b])
    assert torch.equal(hvp_lin(torch.ones(2, dtype=torch.float64)), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shaped like"):
        make_hvp([torch.zeros(2)], [x])
