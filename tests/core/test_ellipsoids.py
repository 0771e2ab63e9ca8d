"""Ellipsoids (Eq. 2-3, Corollary 1, Prop. 2) against closed forms computed here with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.ellipsoids import (
    AdagradEllipsoid,
    Ellipsoid,
    RMSPropEllipsoid,
    UniformEllipsoid,
    m_inv_norm,
    m_norm,
    make_ellipsoid,
)


def _gradients(t: int, d: int, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(d, generator=gen, dtype=torch.float64) * (1 + k % 3) for k in range(t)]
    for g in grads:
        g[0] = 0.0  # a coordinate that never sees a gradient
    return [g.to(dtype) for g in grads]


def test_norms_match_closed_form_and_are_dual():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, generator=gen, dtype=torch.float64)
    y = torch.randn(7, generator=gen, dtype=torch.float64)
    m = torch.rand(7, generator=gen, dtype=torch.float64) + 0.1
    xn, mn = x.numpy(), m.numpy()
    assert m_norm(x, m).item() == pytest.approx(math.sqrt(float(np.sum(mn * xn**2))), rel=1e-14)
    assert m_inv_norm(x, m).item() == pytest.approx(math.sqrt(float(np.sum(xn**2 / mn))), rel=1e-14)
    assert m_norm(x, m).dim() == 0 and m_inv_norm(x, m).dim() == 0
    # Cauchy-Schwarz for the dual pair, with equality at y = M x.
    assert abs(float(x @ y)) <= m_norm(x, m).item() * m_inv_norm(y, m).item() * (1 + 1e-14)
    assert float(x @ (m * x)) == pytest.approx(m_norm(x, m).item() * m_inv_norm(m * x, m).item(), rel=1e-13)


def test_uniform_is_ones_and_needs_a_length():
    e = UniformEllipsoid()
    with pytest.raises(RuntimeError, match="like"):
        e.diag()
    like = torch.zeros(5, dtype=torch.float32)
    assert torch.equal(e.diag(like), torch.ones(5))
    e.update(torch.randn(4, dtype=torch.float64))
    d = e.diag()
    assert d.dtype == torch.float64 and torch.equal(d, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adagrad_paper_mode_closed_form(dtype):
    eps = 1e-10
    grads = _gradients(6, 5, dtype=dtype)
    e = AdagradEllipsoid(eps=eps)
    previous = None
    for t, g in enumerate(grads, start=1):
        e.update(g)
        m = e.diag()
        assert m.dtype == dtype
        expected = np.sqrt(sum(gi.double().numpy() ** 2 for gi in grads[:t]) + eps)
        np.testing.assert_allclose(
            m.double().numpy(), expected, rtol=1e-6 if dtype == torch.float32 else 1e-14
        )
        assert bool((m >= math.sqrt(eps) * (1 - 1e-6)).all())
        if previous is not None:
            assert bool((m >= previous).all())  # Adagrad m never shrinks
        previous = m
    assert m[0].item() == pytest.approx(math.sqrt(eps), rel=1e-6)


def test_adagrad_authors_mode_equals_paper_mode():
    # For Adagrad the initial accumulator eps never decays, so both modes agree exactly in float64.
    grads = _gradients(4, 6)
    a, b = AdagradEllipsoid(eps=1e-8), AdagradEllipsoid(eps=1e-8, eps_mode="authors")
    for g in grads:
        a.update(g)
        b.update(g)
    np.testing.assert_allclose(a.diag().numpy(), b.diag().numpy(), rtol=1e-15)


@pytest.mark.parametrize("beta", [0.0, 0.8, 0.99])
def test_rms_paper_mode_closed_form_ema(beta):
    eps = 1e-10
    grads = _gradients(7, 5)
    e = RMSPropEllipsoid(beta=beta, eps=eps)
    for t, g in enumerate(grads, start=1):
        e.update(g)
        ema = sum((1 - beta) * beta ** (t - i) * grads[i - 1].numpy() ** 2 for i in range(1, t + 1))
        np.testing.assert_allclose(e.diag().numpy(), np.sqrt(ema + eps), rtol=1e-13)
        assert e.diag()[0].item() == pytest.approx(math.sqrt(eps), rel=1e-12)  # the persistent floor


def test_rms_bias_correction_closed_form():
    beta, eps = 0.8, 1e-10
    grads = _gradients(3, 4)
    e = RMSPropEllipsoid(beta=beta, eps=eps, bias_correction=True)
    for t, g in enumerate(grads, start=1):
        e.update(g)
        ema = sum((1 - beta) * beta ** (t - i) * grads[i - 1].numpy() ** 2 for i in range(1, t + 1))
        np.testing.assert_allclose(e.diag().numpy(), np.sqrt(ema / (1 - beta**t) + eps), rtol=1e-13)
    e1 = RMSPropEllipsoid(beta=beta, eps=eps, bias_correction=True)
    e1.update(grads[0])
    np.testing.assert_allclose(e1.diag()[1:].numpy(), np.sqrt(grads[0][1:].numpy() ** 2 + eps), rtol=1e-13)


def test_rms_authors_mode_floor_decays_like_beta_power_t():
    """Regression test documenting the published code: eps is only the initial EMA value."""
    beta, eps = 0.8, 1e-8
    e = RMSPropEllipsoid(beta=beta, eps=eps, eps_mode="authors")
    grads = _gradients(20, 3)
    for t, g in enumerate(grads, start=1):
        e.update(g)
        assert e.diag()[0].item() == pytest.approx(math.sqrt(beta**t * eps), rel=1e-12)
    paper = RMSPropEllipsoid(beta=beta, eps=eps)
    for g in grads:
        paper.update(g)
    assert paper.diag()[0].item() > 5 * e.diag()[0].item()  # sqrt(0.8**20) ~ 0.107


def test_rms_is_uniformly_equivalent_with_bounded_gradients():
    """Proposition 2 (diagonal, with the root): sqrt(eps) <= m_i <= sqrt(L^2 + eps) for all t."""
    eps, L = 1e-10, 3.0
    e = RMSPropEllipsoid(beta=0.8, eps=eps)
    gen = torch.Generator().manual_seed(3)
    for _ in range(200):
        g = (torch.rand(50, generator=gen, dtype=torch.float64) * 2 - 1) * L
        g[::7] = 0.0
        e.update(g)
        m = e.diag()
        assert float(m.min()) >= math.sqrt(eps) * (1 - 1e-12)
        assert float(m.max()) <= math.sqrt(L * L + eps) * (1 + 1e-12)


def test_diag_before_update_raises_or_returns_the_empty_state_value():
    for e in (
        AdagradEllipsoid(eps=1e-6),
        RMSPropEllipsoid(eps=1e-6),
        RMSPropEllipsoid(eps=1e-6, eps_mode="authors"),
    ):
        with pytest.raises(RuntimeError, match="update"):
            e.diag()
        like = torch.zeros(3, dtype=torch.float32)
        out = e.diag(like)
        assert out.dtype == torch.float32 and out.shape == (3,)
        np.testing.assert_allclose(out.numpy(), 1e-3, rtol=1e-6)


def test_diag_is_a_new_tensor_not_a_view_of_the_state():
    e = RMSPropEllipsoid()
    e.update(torch.ones(3, dtype=torch.float64))
    m = e.diag()
    m_copy = m.clone()
    e.update(torch.full((3,), 5.0, dtype=torch.float64))
    assert torch.equal(m, m_copy)


@pytest.mark.parametrize("kind", ["uniform", "adagrad", "rms"])
def test_state_dict_round_trip_is_exact(kind):
    grads = _gradients(5, 4, dtype=torch.float32)
    a = make_ellipsoid(kind, eps=1e-7)
    for g in grads[:3]:
        a.update(g)
    sd = a.state_dict()
    b = make_ellipsoid(kind, eps=1.0)
    b.load_state_dict(sd)
    if "v" in sd and sd["v"] is not None:
        sd["v"].add_(100.0)  # the saved tensor is a copy: mutating it changes neither ellipsoid
    assert torch.equal(a.diag(), b.diag())
    for g in grads[3:]:
        a.update(g)
        b.update(g)
    assert torch.equal(a.diag(), b.diag())
    b.reset()
    if kind == "uniform":
        assert torch.equal(b.diag(grads[0]), torch.ones(4))
    else:
        with pytest.raises(RuntimeError):
            b.diag()


def test_load_state_dict_rejects_another_kind():
    a = AdagradEllipsoid()
    a.update(torch.ones(2))
    with pytest.raises(ValueError, match="kind"):
        RMSPropEllipsoid().load_state_dict(a.state_dict())


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, float("nan")])
def test_rms_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        RMSPropEllipsoid(beta=beta)


@pytest.mark.parametrize("eps", [0.0, -1e-8, float("inf")])
def test_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        AdagradEllipsoid(eps=eps)
    with pytest.raises(ValueError, match="eps"):
        RMSPropEllipsoid(eps=eps)


def test_rejects_bad_mode_name_and_types():
    with pytest.raises(ValueError, match="eps_mode"):
        RMSPropEllipsoid(eps_mode="floor")
    with pytest.raises(ValueError, match="ellipsoid"):
        make_ellipsoid("adam")
    with pytest.raises(TypeError):
        RMSPropEllipsoid(beta="0.8")
    with pytest.raises(TypeError, match="unexpected"):
        make_ellipsoid("uniform", lr=0.1)


def test_update_rejects_nonfinite_and_wrong_length_without_changing_state():
    e = RMSPropEllipsoid()
    e.update(torch.ones(3, dtype=torch.float64))
    before = e.diag()
    with pytest.raises(ValueError, match="NaN"):
        e.update(torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="entries"):
        e.update(torch.ones(4, dtype=torch.float64))
    assert torch.equal(e.diag(), before) and e.steps == 1


def test_make_ellipsoid_names_and_aliases():
    assert isinstance(make_ellipsoid("uniform"), UniformEllipsoid)
    assert isinstance(make_ellipsoid("uni", eps=1e-3), UniformEllipsoid)
    assert isinstance(make_ellipsoid("ada"), AdagradEllipsoid)
    assert isinstance(make_ellipsoid("adagrad", eps=1e-4), AdagradEllipsoid)
    rms = make_ellipsoid("rmsprop", beta=0.9, eps_mode="authors")
    assert isinstance(rms, RMSPropEllipsoid) and rms.beta == 0.9 and rms.eps_mode == "authors"
    assert make_ellipsoid(rms) is rms
    for e in (UniformEllipsoid(), AdagradEllipsoid(), rms):
        assert isinstance(e, Ellipsoid)


def test_state_follows_the_gradient_dtype_and_accepts_shaped_gradients():
    e = AdagradEllipsoid()
    e.update(torch.ones(2, 3, dtype=torch.float32))
    assert e.diag().shape == (6,) and e.diag().dtype == torch.float32
