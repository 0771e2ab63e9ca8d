"""The Hutchinson/Bekas Hessian-diagonal ellipsoid against the exact Hessian of small networks."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from etr_core.curvature import exact_hessian, network_hvp
from etr_core.hessian_diagonal import (
    HessianDiagonalEllipsoid,
    block_mean,
    hutchinson_diagonal_estimate,
    probe_generator,
)


def _net(seed: int = 0, sizes=(4, 5, 3)) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.Tanh()]
    model = nn.Sequential(*layers[:-1]).double()
    x = torch.randn(16, sizes[0], dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (16,))
    return model, x, y


def _shapes(model: nn.Module) -> list[torch.Size]:
    return [p.shape for p in model.parameters()]


def test_all_sign_vectors_give_the_exact_diagonal():
    """E over all 2^d Rademacher vectors of z * Hz is diag(H) exactly (unbiasedness, no sampling)."""
    torch.manual_seed(1)
    A = torch.randn(8, 8, dtype=torch.float64)
    H = A + A.T
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=8)), dtype=torch.float64)
    est = (signs * (signs @ H)).mean(0)  # the estimator's summand z * Hz, averaged over every z
    assert torch.allclose(est, torch.diagonal(H), atol=1e-12)
    # the library estimator is that same average over the probes it draws, all of them +-1
    seen = []

    def hvp(z):
        seen.append(z)
        return H @ z

    out = hutchinson_diagonal_estimate(hvp, [(8,)], 64, generator=probe_generator(0, 0), dtype=torch.float64)
    Z = torch.stack(seen)
    assert torch.allclose(out, (Z * (Z @ H)).mean(0), atol=1e-12)
    assert set(Z.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.slow
def test_error_falls_like_one_over_sqrt_probes_on_a_network_hessian():
    model, x, y = _net()
    H = exact_hessian(model, x, y).matrix
    exact = torch.diagonal(H)

    def hvp(v):
        return H @ v

    counts = [4, 16, 64, 256, 1024]
    errors = []
    for k in counts:
        errs = [
            float((hutchinson_diagonal_estimate(hvp, _shapes(model), k, generator=probe_generator(s, k),
                                                dtype=torch.float64) - exact).norm())
            for s in range(8)
        ]
        errors.append(np.sqrt(np.mean(np.square(errs))))
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert -0.6 < slope < -0.4
    # the predicted RMS error sqrt(sum_i sum_{j != i} H_ij^2 / k) (Hutchinson variance), within 25%
    off = float((H**2).sum() - (exact**2).sum())
    for k, err in zip(counts, errors):
        assert err == pytest.approx(math.sqrt(off / k), rel=0.25)


def test_retained_graph_products_match_the_exact_diagonal_in_expectation():
    model, x, y = _net(3)
    exact = torch.diagonal(exact_hessian(model, x, y).matrix)
    hvp = network_hvp(model, x, y)
    k = 800
    est = hutchinson_diagonal_estimate(hvp, _shapes(model), k, generator=probe_generator(5, 0),
                                       dtype=torch.float64)
    H = exact_hessian(model, x, y).matrix
    se = torch.sqrt(((H**2).sum(1) - exact**2) / k)  # per-entry standard error
    assert bool(((est - exact).abs() <= 5 * se + 1e-12).all())
    assert hvp.calls == k


@pytest.mark.parametrize("block", ["layer", "unit"])
def test_block_variants_equal_block_means_of_the_exact_diagonal(block):
    model, x, y = _net(2)
    H = exact_hessian(model, x, y).matrix
    exact = torch.diagonal(H)
    shapes = _shapes(model)
    # expectation over all probes is linear: the block mean of the exact diagonal (closed form below)
    expected = []
    for chunk, shape in zip(exact.split([math.prod(s) for s in shapes]), shapes):
        if block == "layer":
            expected.append(torch.full_like(chunk, float(chunk.mean())))
        elif len(shape) >= 2:
            rows = chunk.reshape(shape[0], -1)
            expected.append(rows.mean(1, keepdim=True).expand_as(rows).reshape(-1))
        else:
            expected.append(chunk)
    expected = torch.cat(expected)
    assert torch.allclose(block_mean(exact, shapes, block), expected)
    # 4000 probes as four calls of 1000 (a call's probe count is capped), averaged
    est = sum(hutchinson_diagonal_estimate(lambda v: H @ v, shapes, 1000, generator=probe_generator(0, 1 + i),
                                           dtype=torch.float64, block=block) for i in range(4)) / 4
    assert float((est - expected).norm()) < 0.1 * float(expected.norm())
    # one value per block
    first = shapes[0]
    w = est[: math.prod(first)].reshape(first[0], -1)
    assert torch.unique(w).numel() == (1 if block == "layer" else first[0])


def test_ellipsoid_keeps_its_floor_and_converges_to_the_exact_diagonal_on_a_quadratic():
    H = torch.diag(torch.tensor([4.0, 0.0, -9.0, 1e-3], dtype=torch.float64))
    ell = HessianDiagonalEllipsoid(beta=0.5, eps=1e-10, probes=1)
    like = torch.zeros(4, dtype=torch.float64)
    for step in range(60):
        assert ell.update_curvature(lambda v: H @ v, [(4,)], like, step) == 1
    m = ell.diag()
    # a diagonal H is estimated exactly by every probe: m = sqrt(diag^2 + eps)
    assert torch.allclose(m, torch.sqrt(torch.diagonal(H) ** 2 + 1e-10), rtol=1e-12)
    assert float(m.min()) >= math.sqrt(1e-10)  # the zero-curvature coordinate keeps the floor
    # a long run of zero curvature never erodes the floor
    for step in range(60, 600):
        ell.update_curvature(lambda v: torch.zeros_like(v), [(4,)], like, step)
    assert float(ell.diag().min()) == pytest.approx(math.sqrt(1e-10), rel=1e-12)


def test_probes_are_deterministic_and_leave_the_global_rng_alone():
    H = torch.randn(6, 6, dtype=torch.float64)
    H = H + H.T
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = hutchinson_diagonal_estimate(lambda v: H @ v, [(6,)], 3, generator=probe_generator(7, 4),
                                     dtype=torch.float64)
    b = hutchinson_diagonal_estimate(lambda v: H @ v, [(6,)], 3, generator=probe_generator(7, 4),
                                     dtype=torch.float64)
    c = hutchinson_diagonal_estimate(lambda v: H @ v, [(6,)], 3, generator=probe_generator(7, 5),
                                     dtype=torch.float64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(before, torch.get_rng_state())


def test_state_dict_round_trip_and_bad_options():
    ell = HessianDiagonalEllipsoid(probes=3, block="unit", seed=4)
    ell.update_curvature(lambda v: 2 * v, [(2, 3)], torch.zeros(6), 0)
    other = HessianDiagonalEllipsoid()
    other.load_state_dict(ell.state_dict())
    assert (other.probes, other.block, other.seed) == (3, "unit", 4)
    assert torch.equal(other.diag(), ell.diag())
    with pytest.raises(ValueError, match="probes"):
        HessianDiagonalEllipsoid(probes=0)
    with pytest.raises(ValueError, match="block"):
        HessianDiagonalEllipsoid(block="row")
    with pytest.raises(ValueError, match="NaN"):
        ell.update_curvature(lambda v: v * float("nan"), [(2, 3)], torch.zeros(6), 1)


# -- in the optimisers: EllipsoidalTR(ellipsoid="hessian") and EllipsoidalARC ----------------------------


def _quadratic(h, b):
    x = nn.Parameter(torch.zeros(len(h), dtype=torch.float64))
    ht, bt = torch.tensor(h, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return x, lambda: 0.5 * (ht * x * x).sum() + bt @ x


def test_tr_hessian_ellipsoid_is_the_exact_diagonal_on_a_diagonal_quadratic():
    from etr_core.optim import EllipsoidalTR

    h, b = [4.0, 0.25, 9.0], [1.0, -2.0, 0.5]
    x, closure = _quadratic(h, b)
    opt = EllipsoidalTR([x], ellipsoid="hessian", beta=0.5, radius=0.1)
    steps, model_products = 5, 0
    for _ in range(steps):
        opt.step(closure)
        model_products += opt.last_step.hvp_calls
    # a diagonal H is estimated exactly by every Rademacher probe: v = (1 - 0.5^t) h^2
    expected = torch.sqrt((1 - 0.5**steps) * torch.tensor(h, dtype=torch.float64) ** 2 + 1e-10)
    assert torch.allclose(opt.ellipsoid.diag(), expected, rtol=1e-12)
    # the estimator's products (one probe per step) are counted besides the solver's
    assert opt.counters["hvp"] == model_products + steps * 1
    assert opt.state_dict()["param_groups"][0]["ellipsoid"] == "hessian"
    assert opt.param_groups[0]["hessian_probes"] == 1


def test_tr_hessian_options_live_in_param_groups():
    from etr_core.optim import EllipsoidalTR

    x, closure = _quadratic([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0])
    opt = EllipsoidalTR([x], ellipsoid="hessian", hessian_probes=3, hessian_block="layer", radius=0.1)
    opt.step(closure)
    assert opt.counters["hvp"] == opt.last_step.hvp_calls + 3
    assert torch.unique(opt.ellipsoid.diag()).numel() == 1  # one tensor, one block
    opt.param_groups[0]["hessian_probes"] = 2  # edits take effect at the next step
    before = opt.counters["hvp"]
    opt.step(closure)
    assert opt.counters["hvp"] - before == opt.last_step.hvp_calls + 2
    with pytest.raises(ValueError, match="hessian_block"):
        EllipsoidalTR([x], ellipsoid="hessian", hessian_block="row")


def test_tr_hessian_state_dict_resumes_identically_and_first_order_refuses_it():
    from etr_core.optim import EllipsoidalTR, FirstOrderTR

    model, x, y = _net(4)
    twin = copy.deepcopy(model)

    def loss(m):
        return nn.functional.cross_entropy(m(x), y)

    opt = EllipsoidalTR(model.parameters(), ellipsoid="hessian", radius=0.05)
    for _ in range(3):
        opt.step(lambda: loss(model))
    other = EllipsoidalTR(twin.parameters(), ellipsoid="hessian", radius=0.05)
    with torch.no_grad():
        for p, q in zip(twin.parameters(), model.parameters()):
            p.copy_(q)
    other.load_state_dict(opt.state_dict())
    for _ in range(3):
        opt.step(lambda: loss(model))
        other.step(lambda: loss(twin))
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="hessian"):
        FirstOrderTR(model.parameters(), ellipsoid="hessian")


def test_hessian_closure_probes_the_hessian_batch():
    from etr_core.optim import EllipsoidalTR

    h = [2.0, 3.0]
    x, closure = _quadratic(h, [1.0, 1.0])
    opt = EllipsoidalTR([x], ellipsoid="hessian", beta=1e-9, radius=0.1)
    other = torch.tensor([5.0, 7.0], dtype=torch.float64)  # the Hessian batch has another curvature
    opt.step(closure, hessian_closure=lambda: 0.5 * (other * x * x).sum())
    assert opt.last_step.ellipsoid_updated
    assert torch.allclose(opt.ellipsoid.diag(), torch.tensor([5.0, 7.0], dtype=torch.float64), rtol=1e-6)


def test_arc_with_the_block_hessian_ellipsoid_counts_its_probes():
    from etr_core.arc import EllipsoidalARC

    model, x, y = _net(6)
    opt = EllipsoidalARC(model.parameters(), ellipsoid="hessian", hessian_probes=3, hessian_block="layer",
                         max_krylov=4)
    solver, others = 0, []
    for _ in range(4):
        opt.step(lambda: nn.functional.cross_entropy(model(x), y))
        solver += opt.last_step.hvp_calls
        others.append(opt.last_step.other_hvp_calls)
    assert others == [3 + 1, 3, 3, 3]  # the probes; at the first step also the automatic sigma's product
    assert opt.counters["hvp"] == solver + 4 * 3 + 1
    m = opt.ellipsoid.diag()
    first = next(model.parameters())
    assert torch.unique(m[: first.numel()]).numel() == 1  # one value per layer
    with pytest.raises(ValueError, match="hessian_block"):
        EllipsoidalARC(model.parameters(), ellipsoid="hessian", hessian_block="row")


def test_an_ellipsoid_object_and_a_state_saved_before_the_hessian_options():
    from etr_core.optim import EllipsoidalTR

    x, closure = _quadratic([1.0, 2.0], [1.0, -1.0])
    opt = EllipsoidalTR([x], ellipsoid=HessianDiagonalEllipsoid(probes=2, block="layer", beta=0.5))
    group = opt.param_groups[0]
    assert (group["ellipsoid"], group["hessian_probes"], group["hessian_block"], group["beta"]) == (
        "hessian", 2, "layer", 0.5)
    rms = EllipsoidalTR([x], ellipsoid="rms")
    rms.step(closure)
    old = rms.state_dict()
    for g in old["param_groups"]:  # as saved before the options existed
        del g["hessian_probes"], g["hessian_block"]
    fresh = EllipsoidalTR([x], ellipsoid="rms")
    fresh.load_state_dict(old)
    assert fresh.config.hessian_probes == 1 and fresh.config.hessian_block == "element"
    fresh.step(closure)


@pytest.mark.parametrize("probes", [1, 4])
def test_squared_estimate_has_the_row_norm_expectation_that_m_follows(probes):
    """E[d_hat_i^2] = H_ii^2 + (1/k) sum_{j != i} H_ij^2 for k Rademacher probes (all 2^d sign vectors
    enumerated for k = 1; the k-probe mean of independent probes divides the off-diagonal part by k).
    The ellipsoid's EMA of d_hat^2 therefore tends to the squared Hessian row norm with one probe."""
    torch.manual_seed(2)
    A = torch.randn(6, 6, dtype=torch.float64)
    H = A + A.T
    diag2 = torch.diagonal(H) ** 2
    off2 = (H**2).sum(1) - diag2
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=6)), dtype=torch.float64)
    single = signs * (signs @ H)  # every one-probe estimate
    assert torch.allclose((single**2).mean(0), diag2 + off2, atol=1e-12)  # = squared row norm
    # k independent probes: mean over all k-tuples of sign vectors, in closed form from the one-probe moments
    var1 = (single**2).mean(0) - torch.diagonal(H) ** 2
    expected = diag2 + off2 / probes
    assert torch.allclose(diag2 + var1 / probes, expected, atol=1e-12)
    # the ellipsoid (slow EMA, many steps) lands on sqrt(expected) within Monte-Carlo error
    ell = HessianDiagonalEllipsoid(beta=0.998, eps=1e-12, probes=probes)
    like = torch.zeros(6, dtype=torch.float64)
    for step in range(1500):  # about 900 effective samples in the EMA: a few per cent of Monte-Carlo error
        ell.update_curvature(lambda v: H @ v, [(6,)], like, step)
    m2 = ell.diag() ** 2 / (1 - 0.998**1500)  # the EMA started from 0: undo its bias
    torch.testing.assert_close(m2, expected, rtol=0.15, atol=0.0)
    assert not torch.allclose(m2, diag2, rtol=0.15)  # one probe is not |diag H|: off-diagonals count
