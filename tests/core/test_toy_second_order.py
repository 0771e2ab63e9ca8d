"""Whole runs of Newton, GD and the (ellipsoidal) trust-region methods on 2-D functions (section 4,
Algorithm 1, appendix B): convergence, the spherical-vs-ellipsoidal comparison, divergence as data,
and the iteration table checked against independent evaluations of the stored iterates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etr_core.toy.functions import get_function, quadratic_function
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.second_order import (
    compare_runs,
    iterations_table,
    run_gradient_descent,
    run_method,
    run_newton,
    run_trust_region,
)

TR = ("tr_uniform", "tr_adagrad", "tr_rms")


def _quadratic(kappa: float, theta: float):
    q = make_quadratic(kappa, theta)
    return quadratic_function(q.Q, q.w_star)


@pytest.mark.parametrize("method", TR)
def test_trust_region_runs_converge_on_a_quadratic_and_rosenbrock(method: str) -> None:
    fn = _quadratic(10.0, 30.0)
    run = run_trust_region(fn, (2.0, 1.0), method, max_iter=200, gtol=1e-8)
    assert run.status == "converged"
    assert np.linalg.norm(fn.gradient(run.final_point)) <= 1e-8
    assert np.allclose(run.final_point, 0.0, atol=1e-7)
    rosen = get_function("rosenbrock")
    run = run_trust_region(rosen, (-1.2, 1.0), method, max_iter=200, gtol=1e-8)
    assert run.status == "converged" and np.allclose(run.final_point, [1.0, 1.0], atol=1e-6)
    # Deterministic TR on a quadratic: the model is exact, so rho = 1 for every step.
    quad_run = run_trust_region(fn, (2.0, 1.0), method, max_iter=200, gtol=1e-8)
    finite = np.isfinite(quad_run.rho)
    assert np.allclose(quad_run.rho[finite], 1.0, atol=1e-8)


def test_newton_and_gd_converge_on_a_convex_quadratic() -> None:
    fn = _quadratic(10.0, 0.0)
    newton = run_newton(fn, (2.0, 1.0))
    assert newton.status == "converged" and newton.nit == 1  # one step on a quadratic
    gd = run_gradient_descent(fn, (2.0, 1.0), lr=1.0 / 10.0, max_iter=1000, gtol=1e-8)
    assert gd.status == "converged"
    # GD with lr = 1/L contracts the slow coordinate by (1 - mu/L) per step: closed-form iteration count.
    expected = math.ceil(math.log(1e-8 / 2.0) / math.log(1 - 0.1))
    assert abs(gd.nit - expected) <= 1


def test_ellipsoids_need_fewer_iterations_on_an_ill_conditioned_axis_aligned_quadratic() -> None:
    """With a truncated Krylov solve (one CG step, as when d is much larger than the CG budget) the step
    follows -M^{-1} g: the ellipsoid's diagonal preconditions an axis-aligned ill-conditioned problem
    (section 4.1, "Why ellipsoids?"). Rotating the problem by 45 degrees removes most of that edge
    (section 3.2: a diagonal matrix cannot align with tilted curvature directions)."""
    counts = {}
    for theta in (0.0, 45.0):
        fn = _quadratic(100.0, theta)
        runs = compare_runs(
            fn, (2.0, 1.0), TR, max_iter=1000, gtol=1e-6, radius=1.0, tr_options={"max_krylov": 1}
        )
        counts[theta] = {k: r.iterations_to(ftol=1e-8, f_min=0.0) for k, r in runs.items()}
        assert all(v is not None for v in counts[theta].values()), counts
    aligned = counts[0.0]
    assert aligned["tr_rms"] < aligned["tr_uniform"] / 5
    assert aligned["tr_adagrad"] < aligned["tr_uniform"] / 5
    rotated = counts[45.0]
    gain_aligned = aligned["tr_uniform"] / aligned["tr_rms"]
    gain_rotated = rotated["tr_uniform"] / rotated["tr_rms"]
    assert gain_aligned > 5 * gain_rotated


def test_newton_is_attracted_by_the_saddle_where_trust_region_is_not() -> None:
    fn = get_function("paper")
    runs = compare_runs(
        fn, (1.0, 0.2), ("newton", "tr_uniform", "tr_rms"), max_iter=100, gtol=1e-8, radius=0.5
    )
    assert np.linalg.norm(runs["newton"].final_point) < 1e-8  # the saddle (0, 0)
    # First a downhill step aimed at the saddle; then, with w0 = 0, climbing the w1 ridge up to it.
    assert runs["newton"].exits[0] == "saddle-attracted"
    assert all(k == "ascent" for k in runs["newton"].exits[1:])
    assert np.all(np.diff(runs["newton"].f[1:]) > 0)
    for key in ("tr_uniform", "tr_rms"):
        end = runs[key].final_point
        assert min(np.linalg.norm(end - [0, 1]), np.linalg.norm(end - [0, -1])) < 1e-6
        assert runs[key].f[-1] == pytest.approx(-0.25, abs=1e-12)
    table = {row["method"]: row for row in iterations_table(runs, fn, gtol=1e-6)}
    assert table["Newton"]["ended at"].startswith("saddle")
    assert table["Newton"]["to f − f* ≤ ftol"] is None
    assert table["TR_uni"]["ended at"].startswith("minimum")


def test_iteration_table_is_consistent_with_the_histories() -> None:
    fn = get_function("rosenbrock")
    runs = compare_runs(fn, (-1.2, 1.0), max_iter=60, gtol=1e-8, radius=1.0, lr=1e-3)
    rows = iterations_table(runs, fn, gtol=1e-5, ftol=1e-6)
    assert [r["method"] for r in rows] == [r.label for r in runs.values()]
    for row, run in zip(rows, runs.values()):
        pts = run.iterates
        assert row["iterations"] == run.nit == len(pts) - 1
        # Independent evaluation of the stored iterates.
        grads = np.array([np.linalg.norm(fn.gradient(p)) for p in pts])
        values = np.array([fn.value(p) for p in pts])
        assert np.allclose(run.f, values, rtol=1e-12, atol=1e-300)
        assert np.allclose(run.grad_norm, grads, rtol=1e-10, atol=1e-300)
        hit = np.flatnonzero(grads <= 1e-5)
        assert row["to ‖g‖ ≤ gtol"] == (int(hit[0]) if hit.size else None)
        hit = np.flatnonzero(values <= 1e-6)
        assert row["to f − f* ≤ ftol"] == (int(hit[0]) if hit.size else None)
        assert row["final f"] == values[-1]
        assert row["CG iterations"] == int(run.cg_iterations.sum())
        if run.method.startswith("tr_"):
            moved = np.any(pts[1:] != pts[:-1], axis=1)
            assert np.array_equal(moved, run.accepted)  # rejected steps leave w unchanged
            assert row["accepted"] == int(moved.sum())
            assert row["Hv products"] == int(run.hvp_calls.sum()) > 0
            assert np.all(run.radius > 0) and np.all(run.m > 0)
            # Algorithm 1, line 7: the radius grows after very successful steps, shrinks after failures.
            grow = run.radius[1:] > run.radius[:-1]
            shrink = run.radius[1:] < run.radius[:-1]
            assert np.all(run.rho[:-1][grow] > 0.95 - 1e-12)
            assert np.all(run.rho[:-1][shrink] < 1e-4)


def test_divergence_and_overflow_are_reported_as_data() -> None:
    rosen = get_function("rosenbrock")
    gd = run_gradient_descent(rosen, (-1.2, 1.0), lr=0.1, max_iter=100)
    assert gd.status == "diverged" and "Diverged" in gd.message
    assert gd.nit < 100
    monkey = get_function("monkey_saddle")
    runs = compare_runs(monkey, (0.5, 0.4), ("tr_uniform", "tr_rms", "gd"), max_iter=300, radius=0.5)
    assert runs["tr_uniform"].status == "diverged"
    assert "unbounded below" in runs["tr_uniform"].message
    assert runs["gd"].status == "diverged"
    start = run_trust_region(rosen, (1e200, 1e200), "tr_rms")
    assert start.status == "nonfinite_start" and start.nit == 0


def test_start_at_a_saddle_and_singular_newton() -> None:
    fn = get_function("paper")
    runs = compare_runs(fn, (0.0, 0.0), max_iter=20)
    for run in runs.values():
        assert run.status == "converged" and run.nit == 0
    singular = run_newton(fn, (0.5, 1 / math.sqrt(3)))
    assert singular.status == "singular" and singular.nit == 0 and "singular" in singular.message


def test_invalid_arguments_raise() -> None:
    fn = get_function("paper")
    with pytest.raises(ValueError, match="method"):
        run_method(fn, (0.1, 0.1), "bfgs")
    with pytest.raises(ValueError, match="lr"):
        run_gradient_descent(fn, (0.1, 0.1), lr=0.0)
    with pytest.raises(ValueError, match="x0"):
        run_newton(fn, (0.1, math.nan))
    with pytest.raises(ValueError, match="exactly one"):
        run_newton(fn, (0.1, 0.1)).iterations_to()
