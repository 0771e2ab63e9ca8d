"""The Hessian-diagonal ellipsoid and ellipsoidal ARC on 2-D functions (etr_core.toy.beyond_paper)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from etr_core.toy.beyond_paper import hessian_diagonal_limit, run_arc, run_beyond, run_hessian_tr
from etr_core.toy.functions import get_function, quadratic_function
from etr_core.toy.quadratics import make_quadratic


def _quadratic(kappa: float, theta: float):
    q = make_quadratic(kappa, theta)
    return q, quadratic_function(q.Q, q.w_star)


@pytest.mark.parametrize("theta", [0, 30, 45])
def test_exact_probes_give_the_closed_form_diagonal_ellipsoid(theta):
    # On 1/2 (w - w*)^T A (w - w*) the Hessian is A everywhere; the EMA of exact diag(A)^2 starting at 0
    # gives m_t = sqrt((1 - beta^(t+1)) a_ii^2 + eps): the diagonal-scaled ellipse, never A's eigenvalues.
    q, fn = _quadratic(100, theta)
    beta, eps = 0.8, 1e-10
    run = run_hessian_tr(fn, (2.0, 1.0), max_iter=30, gtol=1e-9, beta=beta, eps=eps)
    t = np.arange(1, run.nit + 1)[:, None]
    expected = np.sqrt((1 - beta**t) * np.diag(q.Q)[None, :] ** 2 + eps)
    np.testing.assert_allclose(run.m, expected, rtol=1e-12)
    np.testing.assert_allclose(hessian_diagonal_limit(q.Q, 10**6), np.abs(np.diag(q.Q)), rtol=1e-9)
    # the region's axis ratio is the Jacobi preconditioner's: m_1 / m_0 = a_11 / a_00 at every step
    np.testing.assert_allclose(run.m[:, 1] / run.m[:, 0], q.Q[1, 1] / q.Q[0, 0], rtol=1e-9)


def test_beta_zero_is_the_jacobi_preconditioner_from_the_first_step():
    A = np.array([[4.0, 1.0], [1.0, 0.5]])
    fn = quadratic_function(A, np.array([0.5, -0.5]))
    run = run_hessian_tr(fn, (2.0, 1.0), max_iter=5, beta=0.0, eps=1e-300)
    assert run.nit > 0
    np.testing.assert_allclose(run.m, np.tile([4.0, 0.5], (run.nit, 1)), rtol=1e-14)


def test_random_probes_are_exact_when_the_hessian_is_diagonal_and_counted():
    q, fn = _quadratic(30, 0)
    run = run_hessian_tr(fn, (2.0, 1.0), max_iter=10, probes=3, beta=0.0, eps=1e-300)
    np.testing.assert_allclose(run.m, np.tile(np.diag(q.Q), (run.nit, 1)), rtol=1e-14)
    np.testing.assert_array_equal(run.hvp_calls, run.cg_iterations + 3)
    exact = run_hessian_tr(fn, (2.0, 1.0), max_iter=10)
    np.testing.assert_array_equal(exact.hvp_calls, exact.cg_iterations + 2)


def test_random_probes_on_a_rotated_quadratic_are_unbiased_on_average():
    # one probe: z * (A z) = diag(A) + z0 z1 a01 (1, 1), i.e. a_ii +- a01, each with probability 1/2
    q, fn = _quadratic(10, 45)
    m0 = np.array([run_hessian_tr(fn, (2.0, 1.0), max_iter=1, probes=1, seed=s, beta=0.0, eps=1e-300).m[0]
                   for s in range(200)])
    a00, a01 = q.Q[0, 0], q.Q[0, 1]
    assert a00 - abs(a01) > 0  # so |d_hat| = d_hat and the mean of m estimates a00
    values = np.unique(np.round(m0[:, 0], 9))
    np.testing.assert_allclose(values, np.round([a00 - abs(a01), a00 + abs(a01)], 9))
    assert abs(m0[:, 0].mean() - a00) <= 4 * abs(a01) / np.sqrt(len(m0))


def _cubic_oracle(g, H, m, sigma):
    """Global minimiser of g^T s + 1/2 s^T H s + sigma/3 ||s||_M^3 by SciPy's BFGS from several starts."""
    def model(s):
        return g @ s + 0.5 * s @ H @ s + sigma / 3 * np.sqrt(s @ (m * s)) ** 3

    def grad(s):
        return g + H @ s + sigma * np.sqrt(s @ (m * s)) * m * s

    best = None
    for start in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, -1.0]):
        res = scipy_minimize(model, np.array(start), jac=grad, method="BFGS", options={"gtol": 1e-12})
        if best is None or res.fun < best.fun:
            best = res
    return best


@pytest.mark.parametrize("ellipsoid", ["rms", "hessian", "uniform"])
def test_arc_step_is_the_global_minimiser_of_the_cubic_model(ellipsoid):
    fn = get_function("rosenbrock")
    w0 = np.array([-1.2, 1.0])
    run = run_arc(fn, w0, ellipsoid=ellipsoid, max_iter=3, sigma=1.0)
    g, H, m, s = fn.gradient(w0), fn.hessian(w0), run.m[0], run.steps[0]
    oracle = _cubic_oracle(g, H, m, run.sigma[0])
    np.testing.assert_allclose(s, oracle.x, atol=1e-5)
    # first-order optimality of the subproblem: g + H s + sigma ||s||_M M s = 0
    residual = g + H @ s + run.sigma[0] * np.sqrt(s @ (m * s)) * m * s
    assert np.linalg.norm(residual) <= 1e-8 * np.linalg.norm(g)


def test_arc_sigma_follows_cgt_update():
    fn = get_function("rosenbrock")
    run = run_arc(fn, (-1.2, 1.0), max_iter=60, sigma=1.0)
    for t in range(run.nit - 1):
        rho, sigma = run.rho[t], run.sigma[t]
        expected = sigma / 2 if rho >= 0.9 else (sigma if rho >= 0.1 else 2 * sigma)
        assert run.sigma[t + 1] == pytest.approx(max(expected, 1e-8), rel=1e-15)
        assert run.accepted[t] == (rho >= 0.1)


@pytest.mark.parametrize("method", ["tr_hess", "arc_rms", "arc_hess"])
def test_methods_converge_to_the_known_minimiser(method):
    rosen = get_function("rosenbrock")
    run = run_beyond(rosen, (-1.2, 1.0), method, max_iter=300, gtol=1e-7)
    assert run.status == "converged"
    np.testing.assert_allclose(run.final_point, [1.0, 1.0], atol=1e-5)
    q, quad = _quadratic(100, 30)
    run = run_beyond(quad, (2.0, 1.0), method, max_iter=300, gtol=1e-8)
    assert run.status == "converged"
    np.testing.assert_allclose(run.final_point, q.w_star, atol=1e-6)
    assert np.all(np.diff(run.f[np.r_[True, run.accepted]]) <= 1e-12)  # accepted steps never increase f


def test_bad_inputs_name_the_parameter():
    fn = get_function("rosenbrock")
    with pytest.raises(ValueError, match="probes"):
        run_hessian_tr(fn, (0.0, 0.0), probes="two")
    with pytest.raises(ValueError, match="probes"):
        run_hessian_tr(fn, (0.0, 0.0), probes=0)
    with pytest.raises(ValueError, match="ellipsoid"):
        run_arc(fn, (0.0, 0.0), ellipsoid="full")
    with pytest.raises(ValueError, match="x0"):
        run_arc(fn, (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="sigma"):
        run_arc(fn, (0.0, 0.0), sigma=-1.0)
    with pytest.raises(ValueError, match="method"):
        run_beyond(fn, (0.0, 0.0), "newton")
    with pytest.raises(ValueError, match="steps"):
        hessian_diagonal_limit(np.eye(2), -1)
