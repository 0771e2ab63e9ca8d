"""EllipsoidalTR (Algorithm 1) against closed forms, independent solvers and its own invariants."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from etr_core.config import authors, paper_table1
from etr_core.optim import EllipsoidalTR, StepRecord
from etr_core.subproblem import steihaug_toint_pcg

# --- problems ---------------------------------------------------------------------------------------

class Quadratic(nn.Module):
    """f(w) = 1/2 w^T B w + b^T w with B SPD: the quadratic model of Eq. 8 is exact."""

    def __init__(self, d: int, dtype=torch.float64, seed: int = 0, indefinite: bool = False):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        eig = torch.logspace(-1, 1, d, dtype=torch.float64)
        if indefinite:
            eig[0] = -0.5
        self.register_buffer("B", (Q * eig) @ Q.T)
        self.register_buffer("b", torch.randn(d, generator=gen, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(d, generator=gen, dtype=torch.float64))
        self.to(dtype)

    def forward(self) -> torch.Tensor:
        return 0.5 * self.w @ (self.B @ self.w) + self.b @ self.w


def _mlp_task(dtype=torch.float32, seed: int = 0, n: int = 128):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 8, generator=gen).to(dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)
    return model, X, y


def _params_copy(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- Algorithm 1 on an exact quadratic -----------------------------------------------------------
@pytest.mark.parametrize("ellipsoid", ["uniform", "adagrad", "rms"])
@pytest.mark.parametrize("solver", ["cg", "lanczos"])
def test_rho_is_one_on_exact_quadratic(ellipsoid, solver):
    q = Quadratic(12, seed=1)
    opt = EllipsoidalTR(q.parameters(), ellipsoid=ellipsoid, radius=0.05, solver=solver)
    f0 = float(q().detach())
    for _ in range(8):
        opt.step(q)
        rec = opt.last_step
        assert abs(rec.rho - 1.0) <= 1e-8, rec
        assert rec.accepted and rec.quality == "very_successful"
        # pred computed by the solver equals the exact model decrease -(g^T s + 1/2 s^T B s)
        assert rec.actual_reduction == pytest.approx(rec.pred_reduction, rel=1e-8)
    assert float(q().detach()) < f0
    # radius grew by gamma1 = 1.1 at every very successful step (capped at max_radius = 10)
    assert opt.radius == pytest.approx(0.05 * 1.1**8, rel=1e-12)


def test_large_radius_quadratic_converges_in_one_step():
    """With a huge radius and kappa ~ 0, one outer step lands on the minimiser -B^-1 b."""
    q = Quadratic(10, seed=2)
    opt = EllipsoidalTR(
        q.parameters(), ellipsoid="uniform", radius=10.0, max_radius=100.0, krylov_tol=1e-12, max_krylov=100
    )
    opt.step(q)
    w_star = -torch.linalg.solve(q.B, q.b)
    torch.testing.assert_close(q.w.detach(), w_star, rtol=1e-8, atol=1e-10)
    assert opt.last_step.exit == "converged"


def test_negative_curvature_step_on_indefinite_quadratic_is_still_exact():
    q = Quadratic(6, seed=3, indefinite=True)
    opt = EllipsoidalTR(q.parameters(), ellipsoid="rms", radius=0.5)
    for _ in range(4):
        opt.step(q)
        assert abs(opt.last_step.rho - 1.0) <= 1e-8
        assert opt.last_step.step_m_norm <= opt.last_step.radius_before * (1 + 1e-10)


# --- step against an independent computation of the same quantities -----------------------------
def test_one_step_matches_hand_built_algorithm_1():
    model, X, y = _mlp_task(dtype=torch.float64, seed=4)
    params = list(model.parameters())
    w0 = torch.cat([p.detach().reshape(-1) for p in params])
    shapes = [p.shape for p in params]

    def loss_of(w):
        ts, i = [], 0
        for s in shapes:
            n = math.prod(s)
            ts.append(w[i : i + n].view(s))
            i += n
        return nn.functional.cross_entropy(torch.tanh(X @ ts[0].T + ts[1]) @ ts[2].T + ts[3], y)

    w = w0.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_of(w), w)[0]
    H = torch.autograd.functional.hessian(loss_of, w0)
    m = torch.sqrt(0.2 * g * g + 1e-16)  # RMS ellipsoid after one update, closed form
    expected = steihaug_toint_pcg(g, lambda v: H @ v, 0.05, m, kappa=0.1, theta=0.5, max_iter=50)
    rho = (float(loss_of(w0)) - float(loss_of(w0 + expected.step))) / expected.pred_reduction

    opt = EllipsoidalTR(params, ellipsoid="rms", radius=0.05)
    opt.step(lambda: nn.functional.cross_entropy(model(X), y))
    rec = opt.last_step
    assert rec.rho == pytest.approx(rho, rel=1e-9)
    assert rec.cg_iterations == expected.iterations
    w1 = torch.cat([p.detach().reshape(-1) for p in params])
    if rec.accepted:
        torch.testing.assert_close(w1 - w0, expected.step, rtol=1e-9, atol=1e-12)
    else:
        assert torch.equal(w1, w0)


# --- bitwise restore ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rejected_step_restores_parameters_bitwise(dtype):
    model, X, y = _mlp_task(dtype=dtype, seed=5)

    def closure():
        loss = nn.functional.cross_entropy(model(X), y)
        if not torch.is_grad_enabled():  # the trial evaluation: make every step look bad
            loss = loss + 1.0
        return loss

    opt = EllipsoidalTR(model.parameters(), ellipsoid="adagrad", radius=0.3)
    before = _params_copy(model)
    for k in range(3):
        opt.step(closure)
        rec = opt.last_step
        assert not rec.accepted and rec.quality == "unsuccessful" and rec.step_l2_norm > 0
        assert rec.radius_after == pytest.approx(rec.radius_before / 1.5, rel=1e-15)
        for p, b in zip(model.parameters(), before):
            assert torch.equal(p.detach(), b), f"step {k}: parameters not restored bitwise"
    assert opt.counters["accepted"] == 0


# --- counters -------------------------------------------------------------------------------------
def test_counters_are_exact_running_totals():
    model, X, y = _mlp_task(seed=6)
    calls = {"closure": 0, "hidden_backward": 0}

    def count_backward(grad):
        calls["hidden_backward"] += 1
        return grad

    def closure():
        calls["closure"] += 1
        h = model[0](X)
        if h.requires_grad:
            h.register_hook(count_backward)
        return nn.functional.cross_entropy(model[2](model[1](h)), y)

    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
    records: list[StepRecord] = []
    for _ in range(6):
        opt.step(closure)
        records.append(opt.last_step)
    c = opt.counters
    assert c["steps"] == 6
    assert c["forward"] == calls["closure"] == 12  # loss at w and trial loss, every step
    assert c["backward"] == 6
    assert c["hvp"] == sum(r.hvp_calls for r in records) > 0
    # each gradient and each Hessian-vector product backpropagates through the hidden layer once
    assert calls["hidden_backward"] == c["backward"] + c["hvp"]
    assert c["accepted"] == sum(r.accepted for r in records)


# --- state_dict round trip --------------------------------------------------------------------------
@pytest.mark.parametrize("ellipsoid_update", ["every_iteration", "after_accept"])
def test_state_dict_round_trip_gives_identical_continuation(ellipsoid_update):
    model, X, y = _mlp_task(seed=7, n=256)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(256, generator=gen)[:64] for _ in range(10)]

    def run(model, opt, idx_list):
        for idx in idx_list:
            opt.step(lambda idx=idx: nn.functional.cross_entropy(model(X[idx]), y[idx]))

    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.5, ellipsoid_update=ellipsoid_update)
    run(model, opt, batches[:4])
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    run(model, opt, batches[4:])

    model2, _, _ = _mlp_task(seed=99)
    model2.load_state_dict(saved_model)
    opt2 = EllipsoidalTR(model2.parameters())  # different defaults: everything comes from the state
    opt2.load_state_dict(saved_opt)
    assert opt2.config.ellipsoid_update == ellipsoid_update and opt2.config.radius == 0.5
    run(model2, opt2, batches[4:])
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt2.radius == opt.radius
    assert opt2.counters == opt.counters
    assert opt2.last_step == opt.last_step
    with pytest.raises(ValueError, match="FirstOrderTR"):
        from etr_core.optim import FirstOrderTR

        FirstOrderTR(model2.parameters()).load_state_dict(saved_opt)


# --- faults -----------------------------------------------------------------------------------------
def test_nonfinite_loss_at_w_does_not_move_and_keeps_radius():
    model, X, y = _mlp_task(seed=8)
    opt = EllipsoidalTR(model.parameters(), radius=0.1)
    before = _params_copy(model)
    with pytest.warns(RuntimeWarning, match="nonfinite_loss"):
        opt.step(lambda: nn.functional.cross_entropy(model(X), y) * float("nan"))
    rec = opt.last_step
    assert rec.fault == "nonfinite_loss" and not rec.accepted and rec.radius_after == rec.radius_before == 0.1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert opt.counters == {"forward": 1, "backward": 0, "hvp": 0, "steps": 1, "accepted": 0}
    # the ellipsoid never saw the bad point: the accumulator is still the fresh v = 0
    assert all(torch.equal(opt.state[p]["v"], torch.zeros_like(p)) for p in model.parameters())
    # the same fault again is counted, not warned again (one line per optimiser and kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: nn.functional.cross_entropy(model(X), y) + float("inf"))
    assert opt.last_step.fault == "nonfinite_loss" and opt.fault_counts["nonfinite_loss"] == 2


def test_nonfinite_gradient_does_not_move():
    model, X, y = _mlp_task(seed=8)
    opt = EllipsoidalTR(model.parameters(), radius=0.1)
    before = _params_copy(model)

    def closure():  # finite value, infinite slope: sqrt at 0
        return nn.functional.cross_entropy(model(X), y) + torch.sqrt(
            (model[2].bias - model[2].bias.detach())[0]
        )

    with pytest.warns(RuntimeWarning, match="nonfinite_gradient"):
        opt.step(closure)
    assert opt.last_step.fault == "nonfinite_gradient" and opt.radius == 0.1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_nonfinite_trial_loss_rejects_restores_and_shrinks():
    model, X, y = _mlp_task(seed=9, dtype=torch.float64)

    def closure():
        loss = nn.functional.cross_entropy(model(X), y)
        return loss if torch.is_grad_enabled() else loss * float("nan")

    opt = EllipsoidalTR(model.parameters(), ellipsoid="uniform", radius=0.2)
    before = _params_copy(model)
    with pytest.warns(RuntimeWarning, match="nonfinite_trial_loss"):
        opt.step(closure)
    rec = opt.last_step
    assert rec.rho == -math.inf and not rec.accepted and rec.fault == "nonfinite_trial_loss"
    assert rec.radius_after == pytest.approx(0.2 / 1.5)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_nonfinite_hessian_products_fall_back_to_the_first_order_step():
    """NaN curvature with a finite gradient: the step is Theorem 1's s = -radius M^-1 g / ||g||_{M^-1}
    in the same (RMS) ellipsoid, judged by a trial evaluation like any step; warned once."""
    model, X, y = _mlp_task(seed=10)
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.2)
    before = _params_copy(model)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(
        nn.functional.cross_entropy(model(X), y), list(model.parameters()))])
    m = torch.sqrt(0.2 * g * g + 1e-16)  # RMS ellipsoid after one update, beta = 0.8
    s = -0.2 * (g / m) / torch.sqrt(torch.dot(g, g / m))
    with pytest.warns(RuntimeWarning, match="Hessian-vector product was NaN/Inf"):
        opt.step(
            lambda: nn.functional.cross_entropy(model(X), y),
            hessian_closure=lambda: nn.functional.cross_entropy(model(X), y) * float("nan"),
        )
    rec = opt.last_step
    assert rec.exit == "hvp_fallback" and rec.fault is None and opt.fault_counts["hvp_fallback"] == 1
    assert rec.pred_reduction == pytest.approx(0.2 * float(torch.sqrt(torch.dot(g, g / m))), rel=1e-5)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    start = torch.cat([b.reshape(-1) for b in before])
    expected = s if rec.accepted else torch.zeros_like(s)
    torch.testing.assert_close(after - start, expected, rtol=1e-4, atol=1e-6)
    assert opt.counters["forward"] == 3 and opt.counters["backward"] == 2  # w, Hessian batch, trial


def test_zero_gradient_records_no_move():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = EllipsoidalTR([w], radius=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: (0.0 * w).sum() + 3.0)
    rec = opt.last_step
    assert rec.exit == "zero_gradient" and rec.fault is None and not rec.accepted and rec.grad_norm == 0.0
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0])) and opt.radius == 0.1
    assert opt.counters["forward"] == 1 and opt.counters["hvp"] == 0


def test_parameters_without_grad_and_closures_calling_backward_are_rejected():
    frozen = torch.zeros(3)
    with pytest.raises(ValueError, match=r"params\[1\].*does not require grad"):
        EllipsoidalTR([nn.Parameter(torch.zeros(2)), frozen])
    with pytest.raises(ValueError, match="empty"):
        EllipsoidalTR([])
    model, X, y = _mlp_task(seed=11)
    opt = EllipsoidalTR(model.parameters())

    def bad_closure():
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward(retain_graph=True)
        return loss

    with pytest.raises(RuntimeError, match="called backward"):
        opt.step(bad_closure)
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: model(X))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"radius": -1.0}, "radius"),
        ({"radius": 20.0}, "radius"),
        ({"max_radius": 0.0}, "max_radius"),
        ({"eta1": 0.0}, "eta1"),
        ({"eta2": 1.5}, "eta2"),
        ({"eta1": 0.5, "eta2": 0.4}, "eta1"),
        ({"gamma1": 1.0}, "gamma1"),
        ({"gamma2": 0.5}, "gamma2"),
        ({"krylov_tol": 1.0}, "krylov_tol"),
        ({"theta": -0.1}, "theta"),
        ({"max_krylov": -1}, "max_krylov"),
        ({"solver": "newton"}, "solver"),
        ({"ellipsoid": "diagonal"}, "ellipsoid"),
        ({"stop_rule": "nope"}, "stop_rule"),
        ({"residual_norm": "l1"}, "residual_norm"),
        ({"root": "smallest"}, "root"),
        ({"ellipsoid_update": "never"}, "ellipsoid_update"),
        ({"beta": 1.0}, "beta"),
        ({"eps": 0.0}, "eps"),
        ({"eps_mode": "x"}, "eps_mode"),
        ({"tiny_pred": -1.0}, "tiny_pred"),
        ({"solver": "lanczos", "stop_rule": "model_decrease"}, "stop_rule"),
    ],
)
def test_invalid_options_name_the_parameter(kwargs, name):
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises((ValueError, TypeError), match=name):
        EllipsoidalTR([w], **kwargs)


def test_presets_and_table1_defaults():
    w = nn.Parameter(torch.zeros(3))
    opt = EllipsoidalTR([w])
    c = opt.config
    assert (c.radius, c.max_radius, c.eta1, c.eta2, c.gamma1, c.gamma2_value, c.krylov_tol, c.max_krylov) == (
        1e-4,
        10.0,
        1e-4,
        0.95,
        1.1,
        1.75,
        0.1,
        50,
    )
    assert EllipsoidalTR([w], ellipsoid="adagrad").config.gamma2_value == 1.5
    assert EllipsoidalTR([w], preset=paper_table1("rms"), ellipsoid="uniform").config.gamma2_value == 1.5
    a = EllipsoidalTR([w], preset=authors("mnist", "fc", "rms"), radius=0.01).config
    assert (a.radius, a.gamma1, a.gamma2_value, a.eta1, a.stop_rule, a.eps_mode) == (
        0.01,
        1.01,
        1.75,
        0.01,
        "model_decrease",
        "authors",
    )


# --- Hessian batch and solver variants ---------------------------------------------------------------
def test_hessian_closure_uses_the_hessian_batch():
    model, X, y = _mlp_task(dtype=torch.float64, seed=12, n=96)
    Xh, yh = X[:32], y[:32]  # a smaller Hessian batch S_B
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    w0 = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_on(w, Xb, yb):
        ts, i = [], 0
        for s in shapes:
            n = math.prod(s)
            ts.append(w[i : i + n].view(s))
            i += n
        return nn.functional.cross_entropy(torch.tanh(Xb @ ts[0].T + ts[1]) @ ts[2].T + ts[3], yb)

    w = w0.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_on(w, X, y), w)[0]
    H_b = torch.autograd.functional.hessian(lambda v: loss_on(v, Xh, yh), w0)
    m = torch.sqrt(torch.full_like(g, 1e-16) + g * g)  # Adagrad after one update
    expected = steihaug_toint_pcg(g, lambda v: H_b @ v, 0.02, m, kappa=0.1, theta=0.5, max_iter=50)

    opt = EllipsoidalTR(params, ellipsoid="adagrad", radius=0.02)
    opt.step(
        lambda: nn.functional.cross_entropy(model(X), y),
        hessian_closure=lambda: nn.functional.cross_entropy(model(Xh), yh),
    )
    rec = opt.last_step
    assert rec.pred_reduction == pytest.approx(expected.pred_reduction, rel=1e-9)
    assert rec.hvp_calls == expected.hvp_calls
    assert opt.counters["forward"] == 3 and opt.counters["backward"] == 2
    if rec.accepted:
        w1 = torch.cat([p.detach().reshape(-1) for p in params])
        torch.testing.assert_close(w1 - w0, expected.step, rtol=1e-9, atol=1e-12)


def test_lanczos_solver_trains_and_keeps_feasibility():
    model, X, y = _mlp_task(seed=13)
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05, solver="lanczos", max_krylov=10)
    loss0 = float(nn.functional.cross_entropy(model(X), y).detach())
    for _ in range(10):
        opt.step(lambda: nn.functional.cross_entropy(model(X), y))
        rec = opt.last_step
        assert rec.step_m_norm <= rec.radius_before * (1 + 1e-5)
        assert rec.hvp_calls <= 10 and rec.pred_reduction >= 0
    assert float(nn.functional.cross_entropy(model(X), y).detach()) < loss0


# --- the digits claim -------------------------------------------------------------------
def test_digits_ellipsoidal_beats_uniform():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = sklearn_datasets.load_digits()
    X = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    results = {}
    for kind in ("uniform", "adagrad", "rms"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
        opt = EllipsoidalTR(model.parameters(), preset=paper_table1(kind))
        gen = torch.Generator().manual_seed(1)
        for _ in range(100):
            idx = torch.randperm(X.shape[0], generator=gen)[:512]
            opt.step(lambda idx=idx, model=model: nn.functional.cross_entropy(model(X[idx]), y[idx]))
        with torch.no_grad():
            out = model(X)
            results[kind] = (
                float(nn.functional.cross_entropy(out, y)),
                float((out.argmax(1) == y).float().mean()),
            )
    assert results["rms"][0] < results["uniform"][0], results
    assert results["adagrad"][0] < results["uniform"][0], results
    assert results["rms"][1] >= 0.95 and results["adagrad"][1] >= 0.95, results


@pytest.mark.cuda
def test_cuda_step_matches_cpu():
    """One float32 TR step on CUDA equals the CPU step to float32 accuracy."""
    torch.backends.cuda.matmul.allow_tf32 = False
    steps, records = [], []
    for device in ("cpu", "cuda"):
        model, X, y = _mlp_task(seed=14, n=256)
        model.to(device)
        X, y = X.to(device), y.to(device)
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
        opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
        for _ in range(2):
            opt.step(lambda model=model, X=X, y=y: nn.functional.cross_entropy(model(X), y))
        after = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
        steps.append(after - before)
        records.append(opt.last_step)
        assert opt._saved.device.type == device
    cpu, gpu = records
    assert (cpu.exit, cpu.cg_iterations, cpu.accepted) == (gpu.exit, gpu.cg_iterations, gpu.accepted)
    # the CUDA loop reads its exit flag every four iterations: up to 3 products past the exit, counted
    assert cpu.hvp_calls <= gpu.hvp_calls <= cpu.hvp_calls + 3
    assert float((steps[0] - steps[1]).norm() / steps[0].norm()) < 1e-3


def test_config_presets_round_trip_and_authors_table():
    from etr_core.config import AUTHORS_PRESETS, TRConfig

    assert len(AUTHORS_PRESETS) == 8  # 8 dataset/model pairs, 24 TR parameter files
    for dataset, model in AUTHORS_PRESETS:
        for kind in ("uniform", "adagrad", "rms"):
            c = authors(dataset, model, kind)
            assert c.stop_rule == "model_decrease" and c.eps_mode == "authors" and c.max_krylov == 50
            assert c.warmup is not None and c.warmup.epochs == c.warmup.epochs_key + 1
            assert TRConfig.from_dict(c.to_dict()) == c
    cifar = authors("cifar10", "conv", "adagrad")
    assert (cifar.radius, cifar.warmup.epochs, cifar.warmup.optimizer) == (0.005, 21, "Adagrad")
    ae = authors("mnist", "autoencoder", "adagrad")
    assert (ae.batch_size, ae.max_radius, ae.eta1, ae.gamma1, ae.gamma2_value, ae.l2_alpha) == (
        128,
        5.0,
        1e-7,
        1.25,
        1.5,
        0.0,
    )
    assert paper_table1("uniform").gamma2_value == 1.5 and paper_table1("rms").gamma2_value == 1.75
    with pytest.raises(ValueError, match="dataset"):
        authors("imagenet", "fc")
    with pytest.raises(ValueError, match="cifar10/autoencoder"):
        authors("cifar10", "autoencoder")
    with pytest.raises(ValueError, match="kind"):
        paper_table1("adam")
    with pytest.raises(TypeError):
        paper_table1().replace(learning_rate=0.1)


def test_retained_graph_is_freed_before_the_trial_forward() -> None:
    """The create_graph gradient's graph (needed only by the Hessian products) must not stay alive
    while the trial point is evaluated: on a large network it doubles the step's peak memory."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.1)
    activations: list[weakref.ref] = []
    alive_at_trial: list[bool] = []

    def closure():
        hidden = torch.tanh(model[0](x))
        if torch.is_grad_enabled():
            activations.append(weakref.ref(hidden))
        else:
            gc.collect()
            alive_at_trial.append(any(ref() is not None for ref in activations))
        return nn.functional.cross_entropy(model[2](hidden), y)

    opt.step(closure)
    assert opt.last_step.hvp_calls >= 1
    assert alive_at_trial == [False]


# --- the recipes of docs/optimizer-recipes.md ---------------------------------------------------------
def _recipe_data(n: int = 256):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=gen)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)), X, y


def _accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean())


def _full_loss(model, X, y) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(X), y))


def test_recipe_plain_loop():
    model, X, y = _recipe_data()
    loss0 = _full_loss(model, X, y)
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=64, shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    for _ in range(4):
        for x, t in loader:
            def closure(x=x, t=t):
                return nn.functional.cross_entropy(model(x), t)

            loss = opt.step(closure)
            assert loss.requires_grad is False and loss.shape == ()
    assert opt.counters["steps"] == 16 and opt.counters["accepted"] >= 12
    assert _full_loss(model, X, y) < 0.7 * loss0 and _accuracy(model, X, y) >= 0.7


def test_recipe_gradient_accumulation_equals_the_full_batch():
    model, X, y = _recipe_data(n=192)
    model.double()
    X = X.double()
    twin = copy.deepcopy(model)
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.1)
    full = EllipsoidalTR(twin.parameters(), ellipsoid="rms", radius=0.1)
    micro = list(zip(X.split(64), y.split(64)))
    for _ in range(3):
        opt.step(
            lambda: sum(nn.functional.cross_entropy(model(xb), yb, reduction="sum") for xb, yb in micro)
            / len(X)
        )
        full.step(lambda: nn.functional.cross_entropy(twin(X), y))
        assert opt.last_step.hvp_calls == full.last_step.hvp_calls
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_recipe_bfloat16_autocast_trains():
    model, X, y = _recipe_data()
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(X)
        assert logits.dtype == torch.bfloat16
        return nn.functional.cross_entropy(logits.float(), y)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fault on the way
        for _ in range(20):
            opt.step(closure)
    assert opt.counters["hvp"] > 0 and opt.counters["accepted"] >= 15
    assert _accuracy(model, X, y) >= 0.9


@pytest.mark.slow
def test_recipe_lightning_manual_optimisation(tmp_path):
    lightning = pytest.importorskip("lightning")

    class Classifier(lightning.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.automatic_optimization = False
            self.net = net

        def training_step(self, batch, batch_idx):
            x, t = batch
            loss = self.optimizers().step(closure=lambda: nn.functional.cross_entropy(self.net(x), t))
            self.log("train_loss", loss)

        def configure_optimizers(self):
            return EllipsoidalTR(self.parameters(), ellipsoid="rms", radius=0.05)

    net, X, y = _recipe_data()
    loss0 = _full_loss(net, X, y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)
    trainer = lightning.Trainer(
        max_steps=12, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )
    module = Classifier(net)
    trainer.fit(module, loader)
    opt = trainer.optimizers[0]
    assert isinstance(opt, EllipsoidalTR)
    assert opt.counters["steps"] == 12 and opt.counters["forward"] == 24  # loss at w and at w + s
    assert opt.counters["accepted"] >= 9 and _full_loss(net, X, y) < 0.7 * loss0
    trainer.save_checkpoint(tmp_path / "last.ckpt")  # Lightning stores opt.state_dict()
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["optimizer_states"][0]
    assert saved["state"][0]["radius"] == opt.radius and saved["state"][0]["counters"]["steps"] == 12
