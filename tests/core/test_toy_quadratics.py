"""The tunable 2-D quadratic of Fig. 1: spectrum, rotation, derivatives (finite differences, autograd)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from etr_core.toy.quadratics import Quadratic2D, make_quadratic


@pytest.mark.parametrize("kappa,theta,scale", [(1.0, 0.0, 1.0), (20.0, 0.0, 0.5), (100.0, 30.0, 2.0),
                                               (1e4, 45.0, 1.0), (7.0, 120.0, 3.0)])
def test_spectrum_and_constants(kappa: float, theta: float, scale: float) -> None:
    q = make_quadratic(kappa, theta, scale)
    lam = np.linalg.eigvalsh(q.Q)
    assert lam == pytest.approx([scale, scale * kappa], rel=1e-12)
    assert q.mu == pytest.approx(lam[0], rel=1e-12)
    assert q.L == pytest.approx(lam[1], rel=1e-12)
    assert np.allclose(q.Q, q.Q.T)


@pytest.mark.parametrize("theta", [0.0, 30.0, 45.0, 70.0])
def test_rotation_turns_the_steep_direction(theta: float) -> None:
    """At theta = 0 the steep (large-eigenvalue) direction is vertical, as in Fig. 1; theta rotates it."""
    q = make_quadratic(50.0, theta)
    _, V = np.linalg.eigh(q.Q)
    steep = V[:, 1]
    t = math.radians(theta)
    expected = np.array([-math.sin(t), math.cos(t)])
    assert abs(abs(steep @ expected) - 1.0) < 1e-12
    if theta == 0.0:
        assert q.Q[0, 1] == pytest.approx(0.0, abs=1e-15)
    else:
        assert abs(q.Q[0, 1]) > 1e-3


def test_value_gradient_hessian_against_finite_differences() -> None:
    q = make_quadratic(30.0, 20.0, 1.5, w_star=(0.3, -0.7))
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(5):
        w = rng.normal(size=2)
        fd = np.array([(q.value(w + h * e) - q.value(w - h * e)) / (2 * h) for e in np.eye(2)])
        assert np.allclose(q.grad(w), fd, rtol=1e-7, atol=1e-7)
        fd_h = np.stack([(q.grad(w + h * e) - q.grad(w - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
        assert np.allclose(q.hessian(w), fd_h, rtol=1e-6, atol=1e-6)
    assert q.value(q.minimiser) == 0.0
    assert np.all(q.grad(q.minimiser) == 0.0)


def test_batched_evaluation_matches_pointwise() -> None:
    q = make_quadratic(10.0, 60.0)
    W = np.random.default_rng(1).normal(size=(4, 3, 2))
    values = q.value(W)
    grads = q.grad(W)
    assert values.shape == (4, 3) and grads.shape == (4, 3, 2)
    for idx in np.ndindex(4, 3):
        assert values[idx] == pytest.approx(q.value(W[idx]), rel=1e-14)
        assert np.allclose(grads[idx], q.grad(W[idx]), rtol=1e-14)


def test_torch_callable_matches_numpy_and_autograd() -> None:
    q = make_quadratic(200.0, 35.0, 0.7, w_star=(1.0, 2.0))
    fun = q.torch_fun()
    w = torch.tensor([0.4, -1.3], dtype=torch.float64, requires_grad=True)
    f = fun(w)
    (g,) = torch.autograd.grad(f, w)
    assert float(f.detach()) == pytest.approx(q.value(w.detach().numpy()), rel=1e-14)
    assert np.allclose(g.numpy(), q.grad(w.detach().numpy()), rtol=1e-13)
    H = torch.autograd.functional.hessian(fun, w.detach())
    assert np.allclose(H.numpy(), q.Q, rtol=1e-13)
    # float32 input keeps its dtype
    assert fun(torch.zeros(2, dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("kwargs,exc,word", [
    ({"kappa": 0.5}, ValueError, "kappa"),
    ({"kappa": 2e4}, ValueError, "kappa"),
    ({"kappa": float("nan")}, ValueError, "kappa"),
    ({"kappa": "ten"}, TypeError, "kappa"),
    ({"theta_deg": float("inf")}, ValueError, "theta_deg"),
    ({"scale": 0.0}, ValueError, "scale"),
    ({"w_star": (1.0,)}, ValueError, "w_star"),
    ({"w_star": (1.0, float("nan"))}, ValueError, "w_star"),
    ({"w_star": 3.0}, TypeError, "w_star"),
])
def test_invalid_parameters_are_named(kwargs: dict, exc: type, word: str) -> None:
    with pytest.raises(exc, match=word):
        make_quadratic(**kwargs)


def test_wrong_point_shape_is_rejected() -> None:
    q = make_quadratic()
    with pytest.raises(ValueError, match="w must have a trailing dimension of size 2"):
        q.value(np.zeros(3))


def test_describe_reports_current_numbers() -> None:
    q = make_quadratic(40.0, 15.0, 2.0)
    assert isinstance(q, Quadratic2D)
    text = q.describe()
    assert "κ = 40" in text and "15°" in text and "L = 80" in text and "μ = 2" in text
