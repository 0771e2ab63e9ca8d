"""EllipsoidalARC: convergence on CUTEst-style problems, CGT's sigma rule, the optimiser contract."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from etr_core.arc import EllipsoidalARC
from etr_core.optim import EllipsoidalTR
from tests.core.test_cubic_subproblem import _oracle

F64 = torch.float64


def _rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def _arwhead(x):
    return ((-4 * x[:-1] + 3) + (x[:-1] ** 2 + x[-1] ** 2) ** 2).sum()


def _engval1(x):
    return ((x[:-1] ** 2 + x[1:] ** 2) ** 2 - 4 * x[:-1] + 3).sum()


def _powellsg(x):
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    return ((a + 10 * b) ** 2 + 5 * (c - d) ** 2 + (b - 2 * c) ** 4 + 10 * (a - d) ** 4).sum()


def _beale(x):
    return ((1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
            + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2)


CUTEST = {
    "rosenbrock_2": (_rosen, [-1.2, 1.0]),
    "rosenbrock_10": (_rosen, [-1.2, 1.0] * 5),
    "arwhead_10": (_arwhead, [1.0] * 10),
    "engval1_10": (_engval1, [2.0] * 10),
    "powellsg_12": (_powellsg, [3.0, -1.0, 0.0, 1.0] * 3),
    "beale": (_beale, [1.0, 1.0]),
}


def _run(fun, x0, steps, **options):
    x = nn.Parameter(torch.tensor(x0, dtype=F64))
    opt = EllipsoidalARC([x], **options)

    def closure():
        return fun(x)

    for _ in range(steps):
        opt.step(closure)
        g = torch.func.grad(fun)(x.detach())
        if float(g.norm()) <= 1e-6:
            break
    return x, opt, float(torch.func.grad(fun)(x.detach()).norm())


@pytest.mark.parametrize("name", sorted(CUTEST))
@pytest.mark.parametrize("ellipsoid", ["uniform", "rms"])
def test_converges_on_cutest_style_problems(name, ellipsoid):
    fun, x0 = CUTEST[name]
    x, opt, gnorm = _run(fun, x0, 400, ellipsoid=ellipsoid, max_krylov=len(x0), krylov_tol=1e-6)
    assert gnorm <= 1e-6, (name, gnorm, opt.counters)
    # a stationary point that is a local minimiser: the Hessian there is positive semidefinite
    H = torch.func.hessian(fun)(x.detach())
    assert float(torch.linalg.eigvalsh(H).min()) >= -1e-6
    # every step of a smooth problem is judged by one trial evaluation: two forwards, one backward
    assert opt.counters["forward"] == 2 * opt.counters["steps"] == 2 * opt.counters["backward"]


def test_first_step_is_the_global_minimiser_of_the_cubic_model():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 5))
    B = (A + A.T) / 2  # indefinite quadratic: the cubic term alone bounds the model
    b = rng.standard_normal(5)
    Bt, bt = torch.from_numpy(B), torch.from_numpy(b)
    x = nn.Parameter(torch.zeros(5, dtype=F64))
    opt = EllipsoidalARC([x], ellipsoid="uniform", sigma=2.0, krylov_tol=1e-12, max_krylov=5)
    opt.step(lambda: bt @ x + 0.5 * x @ Bt @ x)
    s_star, lam = _oracle(B, b, np.ones(5), 2.0)
    rec = opt.last_step
    assert rec.accepted
    np.testing.assert_allclose(x.detach().numpy(), s_star, rtol=1e-8, atol=1e-10)
    pred = -(b @ s_star + 0.5 * s_star @ B @ s_star + 2.0 / 3.0 * np.linalg.norm(s_star) ** 3)
    assert rec.pred_reduction == pytest.approx(pred, rel=1e-9)
    assert rec.step_m_norm == pytest.approx(lam / 2.0, rel=1e-8)


def test_sigma_follows_cgt_algorithm_2_1():
    """On a quadratic the actual decrease exceeds the cubic model's (rho = 1 + (sigma/3)||s||^3 / pred
    > 1): every step very successful and sigma halves; on f = 1e6 ||x||^4 a large step fails, sigma
    grows by gamma2 (4 by default, CGT's 2 when given) and the parameters are restored bitwise."""
    x = nn.Parameter(torch.tensor([3.0, -1.0], dtype=F64))
    opt = EllipsoidalARC([x], ellipsoid="uniform", sigma=1.0)
    for k in range(4):
        opt.step(lambda: (x * x).sum())
        assert opt.last_step.quality == "very_successful" and opt.last_step.rho > 1
        assert opt.sigma == pytest.approx(2.0 ** -(k + 1))
    y = nn.Parameter(torch.tensor([1.0, 1.0], dtype=F64))
    opt = EllipsoidalARC([y], ellipsoid="uniform", sigma=1e-3)
    before = y.detach().clone()
    opt.step(lambda: 1e6 * ((y - 0.999) ** 2).sum() ** 2 + (y * y).sum())
    assert opt.last_step.quality == "unsuccessful" and not opt.last_step.accepted
    assert opt.sigma == pytest.approx(4e-3)
    assert torch.equal(y.detach(), before)
    opt = EllipsoidalARC([y], ellipsoid="uniform", sigma=1e-3, gamma2=2.0)
    opt.step(lambda: 1e6 * ((y - 0.999) ** 2).sum() ** 2 + (y * y).sum())
    assert not opt.last_step.accepted and opt.sigma == pytest.approx(2e-3)
    # sigma_min / lr bounds the decrease, sigma_max the increase
    z = nn.Parameter(torch.tensor([1.0], dtype=F64))
    opt = EllipsoidalARC([z], ellipsoid="uniform", sigma=1e-3, sigma_min=1e-3)
    opt.step(lambda: (z * z).sum())
    assert opt.sigma == 1e-3


def test_counters_state_dict_deepcopy_and_pickle_continue_identically():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, Y = torch.randn(32, 4, dtype=F64), torch.randint(0, 3, (32,))

    def closure(m=model):
        return nn.functional.cross_entropy(m(X), Y)

    opt = EllipsoidalARC(model.parameters(), ellipsoid="rms", max_krylov=5)
    for _ in range(3):
        opt.step(closure)
    c = opt.counters
    assert c["steps"] == 3 and c["backward"] == 3 and c["forward"] == 6
    # at most max_krylov = 5 Lanczos products per step, and one for the automatic sigma at the first
    assert 3 + 1 <= c["hvp"] <= 15 + 1
    twin_model = copy.deepcopy(model)
    twin = EllipsoidalARC(twin_model.parameters(), ellipsoid="rms", max_krylov=5)
    twin.load_state_dict(opt.state_dict())
    clone_model, clone = copy.deepcopy((model, opt))
    pickled_model, pickled = pickle.loads(pickle.dumps((model, opt)))
    for _ in range(3):
        opt.step(closure)
        twin.step(lambda: closure(twin_model))
        clone.step(lambda: closure(clone_model))
        pickled.step(lambda: closure(pickled_model))
    for other in (twin_model, clone_model, pickled_model):
        for p, q in zip(model.parameters(), other.parameters()):
            assert torch.equal(p, q)
    assert twin.sigma == opt.sigma == clone.sigma == pickled.sigma
    assert opt.state_dict()["param_groups"][0]["sigma"] == 1.0
    assert opt.state_dict()["state"][0]["radius"] == opt.sigma
    assert twin.state[next(twin_model.parameters())]["auto_radius"] == opt.state[next(model.parameters())][
        "auto_radius"]  # chosen once: the continued runs did not choose again


def test_contract_errors_name_the_option():
    x = nn.Parameter(torch.zeros(2, dtype=F64))
    with pytest.raises(TypeError, match="radius"):
        EllipsoidalARC([x], radius=1.0)
    with pytest.raises(ValueError, match="sigma"):
        EllipsoidalARC([x], sigma=-1.0)
    with pytest.raises(ValueError, match="eta1"):
        EllipsoidalARC([x], eta1=0.95, eta2=0.9)
    y = nn.Parameter(torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="sigma differs"):
        EllipsoidalARC([{"params": [x], "sigma": 1.0}, {"params": [y], "sigma": 2.0}])
    opt = EllipsoidalARC([x])
    tr = EllipsoidalTR([nn.Parameter(torch.zeros(2, dtype=F64))])
    with pytest.raises(ValueError, match="not a EllipsoidalARC state"):
        opt.load_state_dict(tr.state_dict())
    opt.param_groups[0]["gamma2"] = 0.5
    with pytest.raises(ValueError, match="gamma2"):
        opt.step(lambda: (x * x).sum())


def test_lr_scheduler_raises_the_sigma_floor():
    x = nn.Parameter(torch.tensor([1.0], dtype=F64))
    opt = EllipsoidalARC([x], ellipsoid="uniform", sigma=1.0, sigma_min=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(lambda: (x * x).sum())
    sched.step()  # lr 0.5: sigma >= 0.1 / 0.5 = 0.2
    for _ in range(5):
        opt.step(lambda: (x * x).sum())
    assert opt.sigma == pytest.approx(0.2)


def test_nonfinite_curvature_falls_back_to_the_first_order_cubic_step():
    w = nn.Parameter(torch.tensor([2.0, -1.0], dtype=F64))
    z = nn.Parameter(torch.zeros(3, dtype=F64))

    def closure():
        return ((w - 1) ** 2).sum() + z.norm()  # ||z|| has NaN curvature at z = 0, gradient 0

    opt = EllipsoidalARC([w, z], ellipsoid="uniform")
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        for _ in range(30):
            opt.step(closure)
    assert opt.fault_counts["hvp_fallback"] == 30
    assert opt.counters["accepted"] >= 10
    assert float(((w.detach() - 1) ** 2).sum()) < 1e-3


def test_hessian_closure_and_p_grad():
    torch.manual_seed(1)
    model = nn.Linear(3, 2).double()
    X, Y = torch.randn(16, 3, dtype=F64), torch.randn(16, 2, dtype=F64)
    opt = EllipsoidalARC(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: ((model(X) - Y) ** 2).mean(),
                 hessian_closure=lambda: ((model(X[:8]) - Y[:8]) ** 2).mean())
    assert opt.counters["backward"] == 2
    assert all(p.grad is not None for p in model.parameters())
    assert math.isfinite(opt.last_step.rho)


@pytest.mark.parametrize("method", ["TR_hess", "ARC_rms"])
def test_training_methods_count_every_hessian_product(method, tmp_path):
    from etr_core.cli import main
    from etr_core.training import TrainConfig, train

    result = train(TrainConfig(method=method, max_steps=3, eval_every=3, device="cpu",
                               data_options={"max_train": 200}))
    s = result.summary
    solver = sum(step["hvp_calls"] for step in result.steps)
    # TR_hess: one Hutchinson probe per step; ARC_rms: one product for its automatic sigma at the first step
    others = 3 if method == "TR_hess" else 1
    assert s["hvp"] == solver + others == solver + sum(step["other_hvp_calls"] for step in result.steps)
    assert s["backprops"] == s["backward"] + s["hvp"]
    assert main(["train", "--method", method, "--max-steps", "2", "--device", "cpu", "--max-train", "200",
                 "--no-progress", "--out", str(tmp_path / method)]) == 0


def test_auto_sigma_is_the_cauchy_choice_and_the_first_step_is_0618_cauchy_lengths():
    """sigma="auto": sigma_0 = ||g||_{M^-1} / Delta_C^2 with Delta_C the M-length of the Cauchy step,
    i.e. kappa^2 / gamma^(5/2) for gamma = g^T M^-1 g, kappa = d^T B d, d = M^-1 g (closed form). With
    B = c M the cubic model is minimised along d at t with -gamma + t kappa + sigma t^2 gamma^(3/2) = 0,
    which for this sigma is t = (sqrt(5) - 1) / 2 * gamma / kappa: 0.618 of the Cauchy step."""
    rng = np.random.default_rng(3)
    b = rng.standard_normal(6)
    c = 2.5
    bt = torch.from_numpy(b)
    x = nn.Parameter(torch.zeros(6, dtype=F64))
    opt = EllipsoidalARC([x], sigma="auto", ellipsoid="uniform", krylov_tol=1e-12, max_krylov=6)
    assert opt.param_groups[0]["auto_sigma"] is True and opt.param_groups[0]["sigma"] == 1.0
    opt.step(lambda: bt @ x + 0.5 * c * (x * x).sum())
    gamma, kappa = float(b @ b), c * float(b @ b)
    assert opt.state[x]["auto_radius"] == pytest.approx(kappa**2 / gamma**2.5, rel=1e-12)
    t = (math.sqrt(5.0) - 1.0) / 2.0 * gamma / kappa
    np.testing.assert_allclose(x.detach().numpy(), -t * b, rtol=1e-9)
    assert opt.last_step.step_m_norm == pytest.approx(0.618034 * gamma**1.5 / kappa, rel=1e-5)
    # one product for the choice, counted among the step's other products; not chosen again
    assert opt.last_step.other_hvp_calls == 1
    assert opt.counters["hvp"] == opt.last_step.hvp_calls + 1
    before = opt.counters["hvp"]
    opt.step(lambda: bt @ x + 0.5 * c * (x * x).sum())
    assert opt.counters["hvp"] - before == opt.last_step.hvp_calls

    # the RMSProp norm: at the first step m = sqrt(0.2 b^2 + eps); B = c diag(m) makes B = c M again, and
    # gamma, kappa take M^-1 (d = M^-1 g)
    m = np.sqrt(0.2 * b * b + 1e-10)
    mt = torch.from_numpy(m)
    y = nn.Parameter(torch.zeros(6, dtype=F64))
    opt = EllipsoidalARC([y], sigma="auto", ellipsoid="rms", krylov_tol=1e-12, max_krylov=6)
    opt.step(lambda: bt @ y + 0.5 * c * (mt * y * y).sum())
    d = b / m
    gamma, kappa = float(b @ d), c * float(d @ (m * d))
    assert opt.state[y]["auto_radius"] == pytest.approx(kappa**2 / gamma**2.5, rel=1e-9)
    t = (math.sqrt(5.0) - 1.0) / 2.0 * gamma / kappa
    np.testing.assert_allclose(y.detach().numpy(), -t * d, rtol=1e-8)


def test_auto_sigma_keeps_the_given_sigma_without_positive_curvature_and_survives_a_state_dict():
    x = nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    opt = EllipsoidalARC([x], sigma="auto", ellipsoid="uniform")
    opt.step(lambda: x.sum() - 0.5 * (x * x).sum())  # concave: no Cauchy point
    assert opt.state[x]["auto_radius"] == 1.0  # the group's sigma stayed (then CGT's rule moved it)
    z = nn.Parameter(torch.tensor([3.0, 1.0], dtype=F64))
    opt = EllipsoidalARC([z], sigma="auto", ellipsoid="uniform")
    opt.step(lambda: (z**4).sum())
    clone = EllipsoidalARC([nn.Parameter(z.detach().clone())], sigma="auto", ellipsoid="uniform")
    clone.load_state_dict(opt.state_dict())
    assert clone.sigma == opt.sigma and clone.state[clone.param_groups[0]["params"][0]]["auto_radius"] > 0
    with pytest.raises(ValueError, match="sigma must be a positive number or 'auto'"):
        EllipsoidalARC([z], sigma="cauchy")
    with pytest.raises(TypeError, match="auto_sigma"):
        EllipsoidalARC([z], auto_sigma=1)
