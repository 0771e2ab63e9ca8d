"""One TR iteration taken apart (the app's Step view), checked against closed forms on quadratics."""

from __future__ import annotations

import numpy as np
import pytest

from etr_core.toy.functions import quadratic_function
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.second_order import compare_runs, run_newton
from etr_core.toy.step_detail import tr_step_detail


def _problem(kappa: float = 100.0, theta: float = 45.0):
    q = make_quadratic(kappa, theta)
    return q, quadratic_function(q.Q, q.w_star, title="q", view=(-2.5, 2.5, -2.5, 2.5))


@pytest.mark.parametrize("method", ["tr_uniform", "tr_rms", "tr_adagrad"])
def test_cg_iterates_follow_the_closed_form(method: str) -> None:
    q, fn = _problem()
    runs = compare_runs(fn, (2.0, 1.0), (method,), max_iter=40, gtol=1e-8, radius=1.0,
                        tr_options={"max_krylov": 50})
    run = runs[method]
    for t in range(run.nit):
        d = tr_step_detail(fn, run, t)
        w, m, H = run.iterates[t], run.m[t], q.Q
        g = H @ (w - q.minimiser)
        s = d.cg_points - w
        assert np.allclose(s[0], 0.0)
        # every CG iterate is feasible: ||s_j||_M <= Delta (1 + 1e-10)
        assert np.all(np.sqrt(np.sum(m * s ** 2, axis=1)) <= d.radius * (1 + 1e-10))
        # the first CG iterate lies along the preconditioned gradient -M^-1 g (closed-form step or boundary)
        p = -g / m
        alpha = float(g @ (g / m)) / float(p @ H @ p)
        first = alpha * p
        if np.sqrt(np.sum(m * first ** 2)) > d.radius:
            first = p * d.radius / np.sqrt(np.sum(m * p ** 2))
        assert np.allclose(s[1], first, rtol=1e-9, atol=1e-12), (method, t)
        # an interior end point of a 2-D solve is the Newton point w* (closed form)
        if d.exit == "converged" and len(s) == 3:
            assert np.allclose(d.target, q.minimiser, atol=1e-8 * max(1.0, np.linalg.norm(w)))
        # the recorded outcome: accepted steps move the run to w_t + s_t, rejected ones keep w_t
        assert np.allclose(run.iterates[t + 1], d.target if d.accepted else w, rtol=1e-12, atol=1e-14)
        assert d.predicted_decrease == pytest.approx(-(g @ d.step + 0.5 * d.step @ H @ d.step), rel=1e-9)


def test_bad_inputs() -> None:
    _, fn = _problem()
    run = compare_runs(fn, (2.0, 1.0), ("tr_uniform",), max_iter=3, gtol=1e-8, radius=1.0)["tr_uniform"]
    with pytest.raises(ValueError, match="t must be <="):
        tr_step_detail(fn, run, run.nit)
    with pytest.raises(TypeError, match="RunHistory"):
        tr_step_detail(fn, "run", 0)
    newton = run_newton(fn, (2.0, 1.0), max_iter=3)
    with pytest.raises(ValueError, match="no trust-region"):
        tr_step_detail(fn, newton, 0)
