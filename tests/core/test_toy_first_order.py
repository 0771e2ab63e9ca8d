"""First-order methods on 2-D quadratics and their implicit trust regions (Theorem 1, Corollary 1,
Fig. 1, Fig. 5), checked against independent oracles: closed forms, torch.optim,
scipy.linalg.sqrtm, a dense search over each ellipse's boundary and the KKT condition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from etr_core.toy.first_order import (
    DIVERGENCE_GROWTH,
    METHOD_NAMES,
    TR_METHODS,
    run_batch,
    run_method,
)
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.random_starts import random_starts, suboptimality_bands
from etr_core.toy.theorem1 import check_theorem1

LR = {"gd": None, "adagrad": 0.4, "adagrad_full": 0.4, "rmsprop": 0.05, "adam": 0.1,
      "tr_sphere": 0.3, "tr_adagrad": 0.3}


def _lr(method: str, problem) -> float:
    return 0.8 / problem.L if method == "gd" else LR[method]


def _dense_boundary_minimiser(q: np.ndarray, A: np.ndarray, r: float, n: int = 400_000) -> np.ndarray:
    """argmin q^T s over n points s = r A^{-1/2} (cos phi, sin phi) (scipy's matrix square root)."""
    inv_root = np.real(np.linalg.inv(scipy.linalg.sqrtm(A)))
    phi = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pts = r * inv_root @ np.stack([np.cos(phi), np.sin(phi)])
    return pts[:, int(np.argmin(q @ pts))]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_theorem1_every_method_step_is_the_ellipse_minimiser(method: str) -> None:
    """s_t minimises q_t^T s over ||s||_{A_t} <= r_t (Eq. 5): dense boundary search and KKT (Eq. 14)."""
    problem = make_quadratic(50.0, 30.0)
    tr = run_method(problem, method, _lr(method, problem), 12, (-2.5, 1.5))
    assert tr.n_steps == 12 and not tr.diverged
    for t in (0, 1, 5, 11):
        q, A, r, s = tr.model_gradients[t], tr.shapes[t], tr.radii[t], tr.steps[t]
        cond = np.linalg.cond(A)
        rel = max(1e-10, 1e-14 * cond)      # rounding in A^-1 grows with the ellipse's aspect ratio
        # the step lies on the boundary
        assert math.sqrt(s @ A @ s) == pytest.approx(r, rel=rel)
        # no boundary point has a lower linear model; the minimiser is the method's step
        dense = _dense_boundary_minimiser(q, A, r)
        assert q @ s <= q @ dense + 1e-12 * abs(q @ s)
        resolution = r * (2 * math.pi / 400_000) * math.sqrt(cond) / math.sqrt(np.linalg.eigvalsh(A)[0])
        assert np.linalg.norm(s - dense) <= 4 * resolution + 1e-9 * np.linalg.norm(s)
        # KKT: q + lambda A s / ||s||_A = 0 with lambda = ||q||_{A^-1}
        lam = math.sqrt(q @ np.linalg.solve(A, q))
        kkt = q + lam * (A @ s) / math.sqrt(s @ A @ s)
        assert np.linalg.norm(kkt) <= rel * np.linalg.norm(q)
        # the step is -eta_t A^-1 q with the recorded step size, radius eta_t ||q||_{A^-1}
        eta = tr.step_sizes[t]
        assert np.linalg.norm(s + eta * np.linalg.solve(A, q)) <= rel * np.linalg.norm(s)
        assert r == pytest.approx(eta * lam, rel=rel)
        # the library's own check agrees and reports holds
        check = check_theorem1(tr, t)
        assert check.holds
        assert np.linalg.norm(check.closed_form_step - s) <= rel * np.linalg.norm(s)
        assert check.boundary_search_model_change == pytest.approx(q @ dense, rel=1e-8)
        # an accepted step moves the iterate by s
        if tr.accepted[t]:
            assert np.allclose(tr.iterates[t + 1] - tr.iterates[t], s, rtol=1e-12, atol=1e-14)
        else:
            assert np.array_equal(tr.iterates[t + 1], tr.iterates[t])


def test_theorem1_by_hand_on_a_linear_function() -> None:
    """f(w) = 1^T w + 10, GD with eta = 0.5: s = (-0.5, -0.5), r = 0.5 sqrt(2), lambda = sqrt(2)."""

    class Linear:
        """f(w) = 1^T w: the gradient is always (1, 1)."""

        minimiser = np.zeros(2)
        f_star = 0.0

        def value(self, w):
            return np.asarray(w, dtype=np.float64).sum(axis=-1) + 10.0

        def grad(self, w):
            return np.ones_like(np.asarray(w, dtype=np.float64))

    tr = run_method(Linear(), "gd", 0.5, 1, (0.0, 0.0))
    assert np.allclose(tr.steps[0], [-0.5, -0.5])
    assert tr.radii[0] == pytest.approx(0.5 * math.sqrt(2.0), rel=1e-15)
    check = check_theorem1(tr, 0)
    assert check.multiplier == pytest.approx(math.sqrt(2.0), rel=1e-14)
    assert check.kkt_residual < 1e-15


@pytest.mark.parametrize("eta_l", [0.3, 1.0, 1.9])
def test_gd_matches_the_closed_form(eta_l: float) -> None:
    """GD on a quadratic: w_t - w* = (I - eta Q)^t (w_0 - w*)."""
    problem = make_quadratic(30.0, 25.0, w_star=(0.5, -0.25))
    eta = eta_l / problem.L
    w0 = np.array([-2.0, 1.0])
    tr = run_method(problem, "gd", eta, 25, w0)
    M = np.eye(2) - eta * problem.Q
    for t in range(26):
        expected = problem.minimiser + np.linalg.matrix_power(M, t) @ (w0 - problem.minimiser)
        assert np.allclose(tr.iterates[t], expected, rtol=1e-10, atol=1e-12)
    assert np.allclose(tr.shapes, np.eye(2))


def _torch_reference(method: str, problem, lr: float, n: int, w0, eps: float) -> np.ndarray:
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    fun = problem.torch_fun()
    opt = {
        "adagrad": lambda: torch.optim.Adagrad([w], lr=lr, eps=eps),
        "rmsprop": lambda: torch.optim.RMSprop([w], lr=lr, alpha=0.9, eps=eps),
        "adam": lambda: torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999), eps=eps),
    }[method]()
    out = [w.detach().numpy().copy()]
    for _ in range(n):
        opt.zero_grad()
        fun(w).backward()
        opt.step()
        out.append(w.detach().numpy().copy())
    return np.stack(out)


@pytest.mark.parametrize("method", ["adagrad", "rmsprop", "adam"])
def test_diagonal_methods_match_torch_optim(method: str) -> None:
    """torch.optim puts eps outside the root (sqrt(v) + eps), ours inside (sqrt(v + eps), Eq. 2-3);
    with eps = 1e-16 the two agree to rounding."""
    problem = make_quadratic(40.0, 20.0)
    lr = {"adagrad": 0.3, "rmsprop": 0.02, "adam": 0.05}[method]
    tr = run_method(problem, method, lr, 30, (-2.0, 1.5), eps=1e-16)
    ref = _torch_reference(method, problem, lr, 30, [-2.0, 1.5], 1e-16)
    assert np.allclose(tr.iterates, ref, rtol=1e-7, atol=1e-9)


def test_full_matrix_adagrad_matches_an_independent_computation() -> None:
    """A_t = (sum g g^T + eps I)^{1/2} via scipy.linalg.sqrtm, step -eta A_t^{-1} g_t (Eq. 2, Corollary 1)."""
    problem = make_quadratic(60.0, 35.0)
    eta, eps = 0.4, 1e-6
    tr = run_method(problem, "adagrad_full", eta, 20, (-2.0, 1.5), eps=eps)
    w = np.array([-2.0, 1.5])
    G = np.zeros((2, 2))
    for t in range(20):
        g = problem.grad(w)
        G = G + np.outer(g, g)
        A = np.real(scipy.linalg.sqrtm(G + eps * np.eye(2)))
        assert np.allclose(tr.shapes[t], A, rtol=1e-7, atol=1e-9)
        w = w - eta * np.linalg.solve(A, g)
        assert np.allclose(tr.iterates[t + 1], w, rtol=1e-7, atol=1e-9)


def test_full_matrix_adagrad_survives_a_rank_one_accumulator() -> None:
    """After one step sum g g^T has rank one; with a tiny eps rounding must not produce NaN."""
    problem = make_quadratic(1e4, 45.0)
    tr = run_method(problem, "adagrad_full", 0.3, 10, (-2.5, 1.5))
    assert not tr.diverged
    assert np.all(np.isfinite(tr.iterates)) and np.all(np.isfinite(tr.shapes))
    assert all(np.all(np.linalg.eigvalsh(A) > 0) for A in tr.shapes)


def test_tr_adagrad_shape_is_torch_adagrads_accumulator_over_the_iterates() -> None:
    """1st-order TR_ada's ellipse is A_t = diag(sqrt(S_t + eps)) with S_t torch.optim.Adagrad's
    ``state_sum`` after one step per *distinct* iterate: a rejected step (same point, same gradient)
    must not add g_t^2 a second time. Gradients come from the closed form Q (w - w*)."""
    problem = make_quadratic(100.0)
    tr = run_method(problem, "tr_adagrad", 0.3, 60, (2.0, 1.0))
    assert 5 <= int((~tr.accepted).sum()) < 60      # the run has rejected steps to get right
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    oracle = torch.optim.Adagrad([p], lr=0.0, eps=1e-10)
    Q = np.diag([1.0, 100.0])
    for t in range(tr.n_steps):
        if t == 0 or tr.accepted[t - 1]:
            p.grad = torch.as_tensor(Q @ tr.iterates[t])
            oracle.step()
        expected = np.sqrt(oracle.state[p]["sum"].numpy() + 1e-10)
        assert np.allclose(np.diagonal(tr.shapes[t]), expected, rtol=1e-12), t
    sphere = run_method(problem, "tr_sphere", 0.3, 30, (2.0, 1.0))
    assert np.allclose(sphere.shapes, np.eye(2))


def test_tr_adagrad_first_step_is_torch_adagrads_step() -> None:
    """Theorem 1 inside Algorithm 1: with Delta_0 = eta ||g_0||_{A_0^-1} the first (accepted) TR_ada
    step is torch.optim.Adagrad's step with lr = eta; afterwards only the step length differs."""
    problem = make_quadratic(100.0)
    w0 = np.array([2.0, -0.7])
    g0 = np.diag([1.0, 100.0]) @ w0
    eta = 0.5
    a0 = np.sqrt(g0 ** 2 + 1e-10)
    radius0 = eta * float(np.sqrt(np.sum(g0 ** 2 / a0)))
    tr = run_method(problem, "tr_adagrad", radius0, 1, w0)
    p = torch.tensor(w0, requires_grad=True)
    oracle = torch.optim.Adagrad([p], lr=eta, eps=0.0, initial_accumulator_value=1e-10)
    p.grad = torch.as_tensor(g0)
    oracle.step()
    assert tr.accepted[0]
    assert np.allclose(tr.iterates[1], p.detach().numpy(), rtol=0, atol=1e-12)


def test_fig5_gap_comes_from_the_radius_rule() -> None:
    """Fig. 5 preset (kappa = 100, w0 = (2, 1), 60 steps): Adagrad (eta = 1) reaches f ~ 1e-26, the
    Adagrad-ellipse TR only ~1e-8 because near w* its radius, not tied to ||g||, is too long: steps
    alternate accepted / rejected (each rejection divides Delta by gamma2 = 1.5), while a TR whose
    radius follows Adagrad's step length, Delta_t = ||g_t||_{A_t^-1}, is Adagrad itself."""
    problem = make_quadratic(100.0)
    adagrad = run_method(problem, "adagrad", 1.0, 60, (2.0, 1.0))
    tr = run_method(problem, "tr_adagrad", 0.3, 60, (2.0, 1.0))
    assert adagrad.values[-1] < 1e-20
    assert 1e-14 < tr.values[-1] < 1e-4
    late = tr.accepted[30:]
    assert 0.3 <= 1.0 - late.mean() <= 0.7          # about every other late step is rejected
    # Adagrad's implicit radius eta ||g||_{A^-1} falls with the gradient, far below the TR radius
    assert adagrad.radii[40] < 1e-3 * tr.radii[40]


# Fig. 5 analogue: iterations until f < 1e-8 from w0 = (2, 1), paper rules.
D65 = {
    ("tr_sphere", 1.0): (110, 65, 36),
    ("tr_sphere", 100.0): (646, 597, 557),
    ("tr_adagrad", 1.0): (125, 77, 39),
    ("tr_adagrad", 100.0): (145, 94, 49),
}
D65_GD = {1.0: (14, 1, 14, 92), 100.0: (1907, 951, 633, 499)}
D65_ADAGRAD = {1.0: (1033, 139, 17, 10), 100.0: (1033, 139, 17, 11)}


def _iterations_to(tr, target: float = 1e-8) -> int | None:
    below = np.nonzero(tr.values < target)[0]
    return int(below[0]) if len(below) else None


def test_d65_first_order_tr_iterations_and_slowdown() -> None:
    """The spherical 1st-order TR slows 6-15x from kappa 1 to 100; the Adagrad ellipse barely changes."""
    counts = {}
    for (method, kappa), expected in D65.items():
        problem = make_quadratic(kappa)
        for radius0, n_expected in zip((1e-4, 1e-2, 1.0), expected):
            tr = run_method(problem, method, radius0, int(1.2 * n_expected) + 5, (2.0, 1.0))
            n = _iterations_to(tr)
            assert n is not None, (method, kappa, radius0)
            assert abs(n - n_expected) <= 0.2 * n_expected, (method, kappa, radius0, n, n_expected)
            counts[method, kappa, radius0] = n
    for radius0 in (1e-4, 1e-2, 1.0):
        sphere = counts["tr_sphere", 100.0, radius0] / counts["tr_sphere", 1.0, radius0]
        ellipse = counts["tr_adagrad", 100.0, radius0] / counts["tr_adagrad", 1.0, radius0]
        assert 6 * 0.8 <= sphere <= 15 * 1.2, (radius0, sphere)
        assert ellipse <= 1.5, (radius0, ellipse)
        assert sphere > 3 * ellipse


def test_d65_gd_and_adagrad_iterations() -> None:
    for kappa in (1.0, 100.0):
        problem = make_quadratic(kappa)
        for eta_l, n_expected in zip((0.5, 1.0, 1.5, 1.9), D65_GD[kappa]):
            tr = run_method(problem, "gd", eta_l / problem.L, int(1.2 * n_expected) + 5, (2.0, 1.0))
            n = _iterations_to(tr)
            assert n is not None and abs(n - n_expected) <= 0.2 * n_expected + 1, (kappa, eta_l, n)
        for eta, n_expected in zip((0.1, 0.3, 1.0, 3.0), D65_ADAGRAD[kappa]):
            tr = run_method(problem, "adagrad", eta, int(1.2 * n_expected) + 5, (2.0, 1.0))
            n = _iterations_to(tr)
            assert n is not None and abs(n - n_expected) <= 0.2 * n_expected + 1, (kappa, eta, n)


# ------------------------------------------------------------------------------------------------
# divergence is data, never an exception


@pytest.mark.parametrize("eta_l", [2.2, 3.0])
def test_gd_divergence_is_reported_at_the_right_iteration(eta_l: float) -> None:
    problem = make_quadratic(100.0)
    eta = eta_l / problem.L
    w0 = np.array([-2.5, 1.5])
    tr = run_method(problem, "gd", eta, 200, w0)
    assert tr.diverged
    # closed form: first t with f(w_t) > DIVERGENCE_GROWTH * f(w_0)
    M = np.eye(2) - eta * problem.Q
    f0 = problem.value(w0)
    t_expected = next(t for t in range(1, 200)
                      if problem.value(np.linalg.matrix_power(M, t) @ w0) > DIVERGENCE_GROWTH * f0)
    assert tr.diverged_at == t_expected
    assert tr.message == (f"GD diverged at iteration {t_expected}: step size above 2/L = {2 / problem.L:.4g} "
                          f"(η = {eta:.4g})")
    assert len(tr.iterates) == t_expected + 1 and np.all(np.isfinite(tr.iterates))
    assert tr.n_steps == t_expected


def test_gd_just_below_two_over_l_converges_and_just_above_is_flagged() -> None:
    problem = make_quadratic(100.0)
    stable = run_method(problem, "gd", 1.95 / problem.L, 40, (-2.5, 1.5))
    assert not stable.diverged and not stable.notes and stable.message is None
    unstable = run_method(problem, "gd", 2.05 / problem.L, 40, (-2.5, 1.5))
    assert not unstable.diverged
    assert unstable.notes and "above 2/L" in unstable.notes[0]


@pytest.mark.parametrize("method,lr", [("gd", 1e200), ("adam", 1e300), ("rmsprop", 1e3),
                                       ("adagrad_full", 1e250)])
def test_overflow_and_blow_up_never_raise(method: str, lr: float) -> None:
    problem = make_quadratic(1e4, 30.0)
    tr = run_method(problem, method, lr, 50, (-2.5, 1.5))
    assert tr.diverged and tr.message and "diverged at iteration" in tr.message
    assert np.all(np.isfinite(tr.iterates)) and np.all(np.isfinite(tr.values))
    assert len(tr.iterates) == tr.n_steps + 1


def test_trust_region_methods_never_diverge() -> None:
    problem = make_quadratic(1e4, 60.0)
    for method in TR_METHODS:
        tr = run_method(problem, method, 10.0, 60, (-2.5, 1.5))
        assert not tr.diverged
        assert np.all(np.diff(tr.values) <= 1e-12 * tr.values[:-1] + 1e-300)   # monotone (rejections)


def test_exact_convergence_leaves_a_zero_gradient_and_check_says_so() -> None:
    problem = make_quadratic(1.0)
    tr = run_method(problem, "gd", 1.0, 3, (1.0, -1.0))      # eta = 1/L: one step to w*
    assert np.allclose(tr.iterates[1], 0.0)
    with pytest.raises(ValueError, match="zero or non-finite gradient"):
        check_theorem1(tr, 1)


# ------------------------------------------------------------------------------------------------
# batches and random starts (Fig. 1 bottom)


def test_batch_equals_closed_form_gd() -> None:
    problem = make_quadratic(20.0, 10.0)
    eta = 0.7 / problem.L
    starts = random_starts((0.0, 0.0), 2.0, 8, seed=3)
    batch = run_batch(problem, "gd", eta, 15, starts)
    M = np.eye(2) - eta * problem.Q
    for b, w0 in enumerate(starts):
        expected = [problem.value(np.linalg.matrix_power(M, t) @ w0) for t in range(16)]
        assert np.allclose(batch.values[b], expected, rtol=1e-10)


def test_random_starts_are_seeded_and_on_the_circle() -> None:
    a = random_starts((1.0, -1.0), 2.5, 30, seed=4)
    b = random_starts((1.0, -1.0), 2.5, 30, seed=4)
    c = random_starts((1.0, -1.0), 2.5, 30, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(np.linalg.norm(a - [1.0, -1.0], axis=1), 2.5)


def test_suboptimality_band_matches_closed_form_statistics() -> None:
    problem = make_quadratic(30.0)
    eta = 0.5 / problem.L
    bands = suboptimality_bands(problem, {"gd": eta}, 20, n_starts=30, start_radius=2.0, seed=11)
    starts = random_starts((0.0, 0.0), 2.0, 30, seed=11)
    M = np.eye(2) - eta * problem.Q
    logs = np.array([[math.log10(problem.value(np.linalg.matrix_power(M, t) @ w0)) for t in range(21)]
                     for w0 in starts])
    band = bands["gd"]
    assert np.allclose(band.mean, logs.mean(axis=0), rtol=1e-9)
    assert np.allclose(band.low, np.quantile(logs, 0.05, axis=0), rtol=1e-9)
    assert np.allclose(band.high, np.quantile(logs, 0.95, axis=0), rtol=1e-9)
    assert band.n_runs == 30 and band.n_diverged == 0


def test_suboptimality_band_drops_diverged_runs() -> None:
    problem = make_quadratic(100.0)
    bands = suboptimality_bands(problem, {"gd": 3.0 / problem.L}, 30, n_starts=10, seed=0)
    assert bands["gd"].n_diverged == 10
    assert np.isnan(bands["gd"].mean[-1])


def test_adagrad_beats_gd_on_the_ill_conditioned_quadratic() -> None:
    """Fig. 1 centre: on an axis-aligned ill-conditioned quadratic Adagrad ends far below GD."""
    problem = make_quadratic(100.0)
    bands = suboptimality_bands(problem, {"gd": 1.0 / problem.L, "adagrad": 1.0}, 40, seed=0)
    assert bands["adagrad"].mean[-1] < bands["gd"].mean[-1] - 2.0


# ------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("kwargs,exc,word", [
    ({"method": "sgd"}, ValueError, "method"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"n_iter": -1}, ValueError, "n_iter"),
    ({"n_iter": 2.5}, TypeError, "n_iter"),
    ({"w0": (1.0, 2.0, 3.0)}, ValueError, "shape"),
    ({"w0": (1.0, float("inf"))}, ValueError, "finite"),
    ({"beta": 0.9}, TypeError, "unexpected option"),
    ({"method": "rmsprop", "beta": 1.0}, ValueError, "beta"),
    ({"method": "adagrad", "eps": -1.0}, ValueError, "eps"),
    ({"method": "tr_sphere", "lr": 20.0}, ValueError, "max_radius"),
])
def test_invalid_arguments_are_named(kwargs: dict, exc: type, word: str) -> None:
    args = {"method": "gd", "lr": 0.01, "n_iter": 5, "w0": (1.0, 1.0)} | kwargs
    with pytest.raises(exc, match=word):
        run_method(make_quadratic(10.0), args.pop("method"), args.pop("lr"), args.pop("n_iter"),
                   args.pop("w0"), **args)


def test_check_theorem1_validates_the_iteration() -> None:
    tr = run_method(make_quadratic(10.0), "adagrad", 0.3, 4, (1.0, 1.0))
    with pytest.raises(ValueError, match="iteration"):
        check_theorem1(tr, 4)
    with pytest.raises(TypeError, match="Trajectory"):
        check_theorem1("not a run", 0)  # type: ignore[arg-type]


def test_theorem1_check_is_still_importable_from_first_order() -> None:
    from etr_core.toy import first_order, theorem1

    assert first_order.check_theorem1 is theorem1.check_theorem1
    assert first_order.Theorem1Check is theorem1.Theorem1Check
    with pytest.raises(AttributeError, match="no_such_name"):
        first_order.no_such_name  # noqa: B018
