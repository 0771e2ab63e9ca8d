"""Exact More-Sorensen solver for small dense problems (Eq. 8 in the M-norm).

Oracles: the global optimality certificate of More & Sorensen (1983) -- (H + lambda M) s = -g,
lambda >= 0, lambda (||s||_M - radius) = 0, M^{-1/2} H M^{-1/2} + lambda I positive semidefinite --,
SciPy's trust-exact subproblem (spherical), and a brute-force search over the 2-D disc.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize._trustregion_exact import IterativeSubproblem

from etr_core.subproblem import solve_exact, steihaug_toint_pcg

F64 = torch.float64


def _model(g, H, s) -> float:
    return float(g @ s + 0.5 * s @ (H @ s))


def _check_certificate(g, H, m, radius, res, tol=1e-8):
    s, lam = res.step.double(), res.multiplier
    m = torch.ones_like(g) if m is None else m
    norm = math.sqrt(float((m * s * s).sum()))
    assert lam is not None and lam >= -1e-12
    assert norm <= radius * (1 + 1e-9)
    scale = 1.0 + float(g.norm()) + float(H.abs().max()) * radius
    np.testing.assert_allclose(((H + lam * torch.diag(m)) @ s + g).numpy(), 0.0, atol=tol * scale)
    assert lam * (radius - norm) <= tol * scale * max(1.0, radius)
    r = torch.sqrt(m)
    shifted = H / r[:, None] / r[None, :] + lam * torch.eye(len(g), dtype=F64)
    assert float(torch.linalg.eigvalsh(0.5 * (shifted + shifted.T))[0]) >= -tol * scale
    assert res.pred_reduction == pytest.approx(-_model(g, H, s), rel=1e-10, abs=1e-14)


def _random(gen, d, indefinite=True):
    A = torch.randn(d, d, generator=gen, dtype=F64)
    H = A + A.T if indefinite else A @ A.T + 0.1 * torch.eye(d, dtype=F64)
    g = torch.randn(d, generator=gen, dtype=F64)
    m = torch.rand(d, generator=gen, dtype=F64) * 3 + 0.1
    return H, g, m


@pytest.mark.parametrize("seed", range(8))
def test_certificate_on_random_problems(seed):
    gen = torch.Generator().manual_seed(seed)
    H, g, m = _random(gen, 2 + seed, indefinite=seed % 3 != 0)
    for radius in (1e-3, 0.1, 1.0, 10.0, 1e3):
        for mm in (None, m):
            res = solve_exact(g, H, radius, mm)
            assert res.exit in ("converged", "boundary")
            _check_certificate(g, H, mm, radius, res)
            assert res.hit_boundary == (res.exit == "boundary")


def test_agrees_with_scipy_trust_exact():
    """SciPy >= 1.17 caps its More-Sorensen loop, so it sometimes stops short of the optimum: ours must
    never be worse and must agree on most problems."""
    rng = np.random.default_rng(0)
    close = 0
    for _ in range(40):
        d = int(rng.integers(2, 8))
        A = rng.standard_normal((d, d))
        H = A + A.T
        g = rng.standard_normal(d)
        radius = float(10 ** rng.uniform(-2, 1))
        sub = IterativeSubproblem(
            np.zeros(d), lambda x: 0.0, lambda x, g=g: g, lambda x, H=H: H, k_easy=1e-10, k_hard=1e-10
        )
        p, _ = sub.solve(radius)
        res = solve_exact(torch.tensor(g), torch.tensor(H), radius)
        ours, theirs = _model(torch.tensor(g), torch.tensor(H), res.step), float(g @ p + 0.5 * p @ H @ p)
        # SciPy's answer may sit slightly outside the region; ours is feasible and no worse beyond that slack.
        slack = abs(float(np.linalg.norm(p)) - radius) * float(np.linalg.norm(g + H @ p)) + 1e-10
        assert ours <= theirs + slack * (1 + abs(theirs))
        close += abs(ours - theirs) <= 1e-6 * (1 + abs(theirs))
    assert close >= 30


def test_brute_force_over_the_2d_ellipse():
    gen = torch.Generator().manual_seed(21)
    radii = np.linspace(0, 1, 401) ** 0.5
    angles = np.linspace(0, 2 * np.pi, 1441)
    for _ in range(6):
        H, g, m = _random(gen, 2)
        radius = 0.7
        res = solve_exact(g, H, radius, m)
        u = (
            np.stack([np.outer(radii, np.cos(angles)).ravel(), np.outer(radii, np.sin(angles)).ravel()])
            * radius
        )
        pts = u / np.sqrt(m.numpy())[:, None]
        vals = g.numpy() @ pts + 0.5 * np.sum(pts * (H.numpy() @ pts), 0)
        best = float(vals.min())
        ours = _model(g, H, res.step)
        assert ours <= best + 1e-12
        assert ours == pytest.approx(best, abs=1e-3)


def test_hard_case_uses_the_eigenvector_and_is_deterministic():
    # g has no component along e_0, the eigenvector of the negative eigenvalue.
    H = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=F64))
    g = torch.tensor([0.0, 1.0, 1.0], dtype=F64)
    for radius in (0.5, 1.0, 5.0):
        res = solve_exact(g, H, radius)
        assert res.exit == "hard_case" and res.hit_boundary
        assert res.multiplier == pytest.approx(2.0, rel=1e-14)
        rest = torch.tensor([0.0, -1 / 3, -1 / 5], dtype=F64)  # -(H + 2I)^+ g
        tau = math.sqrt(radius**2 - float(rest @ rest))
        np.testing.assert_allclose(
            res.step.numpy(),
            (rest + tau * torch.tensor([1.0, 0, 0], dtype=F64)).numpy(),
            rtol=1e-12,
            atol=1e-14,
        )
        _check_certificate(g, H, None, radius, res)
        again = solve_exact(g, H, radius)
        assert torch.equal(res.step, again.step)


def test_hard_case_rotated_with_ellipsoid():
    gen = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=F64))
    m = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=F64)
    r = torch.sqrt(m)
    H_hat = Q @ torch.diag(torch.tensor([-1.5, 0.5, 2.0, 3.0], dtype=F64)) @ Q.T
    H = H_hat * r[:, None] * r[None, :]
    coeffs = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=F64)  # no share along the first eigenvector
    g = r * (Q @ coeffs)
    res = solve_exact(g, H, 3.0, m)
    assert res.exit == "hard_case"
    _check_certificate(g, H, m, 3.0, res)
    direction = Q[:, 0]
    u = r * res.step
    shifted = torch.tensor([1.0, 2.0, 3.5, 4.5], dtype=F64)  # eigenvalues + 1.5, first one unused
    rest = -(Q[:, 1:] @ (coeffs[1:] / shifted[1:]))
    # The step minus the pseudo-inverse part is parallel to the full eigenvector (not one component).
    extra = u - rest
    cos = float(extra @ direction) / float(extra.norm())
    assert abs(abs(cos) - 1.0) <= 1e-10


def test_near_hard_case_is_continuous():
    H = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=F64))
    for tiny in (1e-3, 1e-6, 1e-9, 1e-13):
        g = torch.tensor([tiny, 1.0, 1.0], dtype=F64)
        res = solve_exact(g, H, 1.0)
        _check_certificate(g, H, None, 1.0, res, tol=1e-7)
        assert float(res.step[0]) < 0  # moves against the tiny component


def test_zero_gradient_cases():
    res = solve_exact(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), 1.0)
    assert res.exit == "zero_gradient" and float(res.step.abs().max()) == 0.0 and res.multiplier == 0.0
    indefinite = torch.diag(torch.tensor([1.0, -3.0], dtype=F64))
    res = solve_exact(torch.zeros(2, dtype=F64), indefinite, 2.0)
    assert res.exit == "hard_case"
    np.testing.assert_allclose(res.step.abs().numpy(), [0.0, 2.0], atol=1e-14)
    assert res.pred_reduction == pytest.approx(6.0, rel=1e-14)


def test_interior_newton_and_comparison_with_steihaug():
    gen = torch.Generator().manual_seed(3)
    H, g, m = _random(gen, 6, indefinite=False)
    res = solve_exact(g, H, 1e6, m)
    assert res.exit == "converged" and res.multiplier == 0.0 and not res.hit_boundary
    np.testing.assert_allclose(res.step.numpy(), torch.linalg.solve(H, -g).numpy(), rtol=1e-10)
    for radius in (0.01, 0.3, 2.0):
        ex = solve_exact(g, H, radius, m)
        st = steihaug_toint_pcg(g, lambda v: H @ v, radius, m, kappa=1e-8, max_iter=50)
        assert ex.pred_reduction >= st.pred_reduction * (1 - 1e-12)


def test_iteration_cap_returns_a_feasible_step():
    gen = torch.Generator().manual_seed(4)
    H, g, m = _random(gen, 5)
    res = solve_exact(g, H, 0.5, m, max_iter=1)
    assert res.exit in ("max_iter", "boundary")
    assert math.sqrt(float((m * res.step**2).sum())) <= 0.5 * (1 + 1e-10)
    assert res.iterations <= 1


def test_dtype_validation_and_nonfinite():
    H = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    g = torch.tensor([1.0, -1.0])
    res = solve_exact(g, H, 0.1)
    assert res.step.dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        solve_exact(g, torch.eye(3), 1.0)
    with pytest.raises(ValueError, match="radius"):
        solve_exact(g, H, 0.0)
    with pytest.raises(ValueError, match="max_iter"):
        solve_exact(g, H, 1.0, max_iter=0)
    with pytest.raises(ValueError, match="m must be"):
        solve_exact(g, H, 1.0, torch.tensor([1.0, 0.0]))
    bad = solve_exact(torch.tensor([1.0, float("nan")]), H, 1.0)
    assert bad.exit == "nonfinite" and float(bad.step.abs().sum()) == 0.0
