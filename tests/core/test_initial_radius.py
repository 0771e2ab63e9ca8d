"""Automatic initial radius (radius="auto"): the M-norm length of the first Cauchy step.

Oracle: the closed form on a quadratic f(w) = 1/2 w^T A w - b^T w, where g = A w - b, H = A, and for
the RMS ellipsoid after its first update m = sqrt((1 - beta) g^2 + eps) (Eq. 3 from v = 0):
Delta_0 = (g^T M^-1 g)^{3/2} / (d^T A d), d = M^-1 g.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from etr_core.config import TRConfig
from etr_core.initial_radius import cauchy_radius
from etr_core.optim import EllipsoidalTR, FirstOrderTR


def _quadratic(seed: int = 0, d: int = 6, indefinite: bool = False):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.linspace(0.5, 4.0, d, dtype=torch.float64)
    if indefinite:
        eig = -eig
    A = Q @ torch.diag(eig) @ Q.T
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, generator=gen, dtype=torch.float64).requires_grad_()
    return A, b, w


def _closure(A, b, w):
    return lambda: 0.5 * w @ A @ w - b @ w


def _expected(A, b, w0, m):
    g = A @ w0 - b
    d = g / m
    return float((g @ d) ** 1.5 / (d @ A @ d))


@pytest.mark.parametrize("ellipsoid", ["uniform", "rms"])
def test_chosen_radius_is_the_closed_form_cauchy_radius(ellipsoid):
    A, b, w = _quadratic()
    w0 = w.detach().clone()
    g = A @ w0 - b
    m = torch.ones_like(g) if ellipsoid == "uniform" else torch.sqrt(0.2 * g * g + 1e-16)
    opt = EllipsoidalTR([w], ellipsoid=ellipsoid, radius="auto", max_radius=1e3)
    assert opt.param_groups[0]["auto_radius"] is True
    opt.step(_closure(A, b, w))
    rec = opt.last_step
    assert rec.radius_before == pytest.approx(_expected(A, b, w0, m), rel=1e-12)
    assert opt.state[w]["auto_radius"] == rec.radius_before
    assert opt.counters["hvp"] == rec.hvp_calls + 1  # the choice costs one Hessian-vector product


def test_function_matches_the_closed_form_and_refuses_negative_curvature():
    A, b, w = _quadratic(seed=3)
    g = A @ w.detach() - b
    m = torch.rand(g.shape, dtype=torch.float64) + 0.5
    assert cauchy_radius(g, lambda v: A @ v, m) == pytest.approx(_expected(A, b, w.detach(), m), rel=1e-12)
    assert cauchy_radius(g, lambda v: -(A @ v), m) is None
    assert cauchy_radius(torch.zeros_like(g), lambda v: A @ v, m) is None
    assert cauchy_radius(g, lambda v: torch.full_like(v, math.nan), m) is None
    with pytest.raises(ValueError, match="flat tensors"):
        cauchy_radius(g, lambda v: v, m[:3])


def test_without_positive_curvature_the_configured_radius_stays():
    A, b, w = _quadratic(indefinite=True)
    opt = EllipsoidalTR([w], ellipsoid="uniform", radius="auto")
    opt.step(_closure(A, b, w))
    assert opt.last_step.radius_before == 1e-4  # Table 1's Delta_0, the fallback


def test_chosen_radius_is_capped_at_lr_times_max_radius():
    A, b, w = _quadratic()
    A = A * 1e-6  # flat: the Cauchy radius is huge
    opt = EllipsoidalTR([w], ellipsoid="uniform", radius="auto", max_radius=2.0)
    opt.param_groups[0]["lr"] = 0.5
    opt.step(_closure(A, b, w))
    assert opt.last_step.radius_before == 1.0


def test_state_dict_and_deepcopy_keep_the_choice_and_do_not_choose_again():
    A, b, w = _quadratic()
    opt = EllipsoidalTR([w], ellipsoid="rms", radius="auto", max_radius=1e3)
    opt.step(_closure(A, b, w))
    chosen = opt.state[w]["auto_radius"]
    w2 = w.detach().clone().requires_grad_()
    fresh = EllipsoidalTR([w2], ellipsoid="rms", radius="auto", max_radius=1e3)
    fresh.load_state_dict(opt.state_dict())
    w3, copied = copy.deepcopy((w, opt))
    for param, o in ((w2, fresh), (w3, copied)):
        assert o.state[param]["auto_radius"] == chosen
        before = o.counters["hvp"]
        radius = o.radius
        o.step(_closure(A, b, param))
        assert o.last_step.radius_before == radius  # the radius carried on, not chosen again
        assert o.counters["hvp"] - before == o.last_step.hvp_calls


def test_bad_radius_string_is_refused():
    with pytest.raises(ValueError, match="radius must be a positive number or 'auto'"):
        EllipsoidalTR([torch.zeros(2, requires_grad=True)], radius="big")


def test_first_order_tr_refuses_what_needs_hessian_products():
    with pytest.raises(ValueError, match="radius='auto' needs the quadratic model"):
        FirstOrderTR([torch.zeros(2, requires_grad=True)], radius="auto")
    with pytest.raises(ValueError, match="radius='auto' needs"):
        FirstOrderTR([torch.zeros(2, requires_grad=True)], preset="fast")
    with pytest.raises(ValueError, match=r"hessian_fraction=0\.5 needs"):
        FirstOrderTR([torch.zeros(2, requires_grad=True)], preset=TRConfig(hessian_fraction=0.5))
