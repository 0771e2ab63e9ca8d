"""Named presets: EllipsoidalTR(params, preset="paper" | "fast" | "authors:<dataset>:<model>"), the
trainer's and the CLI's --preset fast.

Oracles: paper Table 1 (appendix C, B.1) as printed, the authors' table through
etr_core.config.authors, and the closed-form Cauchy radius on a quadratic.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from etr_core.cli import main
from etr_core.config import authors, fast
from etr_core.optim import EllipsoidalTR
from etr_core.training import TrainConfig, resolve_tr_config, train

TABLE1 = dict(radius=1e-4, max_radius=10.0, eta1=1e-4, eta2=0.95, gamma1=1.1, krylov_tol=0.1, theta=0.5,
              max_krylov=50, solver="cg")


def _param():
    return torch.zeros(3, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("preset", [None, "paper", "PAPER"])
def test_paper_is_table1_and_the_default(preset):
    group = EllipsoidalTR([_param()], preset=preset).param_groups[0]
    assert {k: group[k] for k in TABLE1} == TABLE1
    assert group["gamma2"] == 1.75 and group["auto_radius"] is False and group["hessian_fraction"] == 1.0


@pytest.mark.parametrize("kind", ["uniform", "adagrad", "rms"])
def test_fast_is_table1_with_the_automatic_initial_radius(kind):
    group = EllipsoidalTR([_param()], preset="fast", ellipsoid=kind).param_groups[0]
    assert {k: group[k] for k in TABLE1} == TABLE1
    assert group["ellipsoid"] == kind and group["gamma2"] == (1.75 if kind == "rms" else 1.5)
    assert group["auto_radius"] is True and group["hessian_fraction"] == 1.0
    assert fast(kind).auto_radius and fast(kind).hessian_fraction == 1.0


def test_authors_preset_by_name_equals_the_table():
    group = EllipsoidalTR([_param()], preset="authors:fashion_mnist:fc").param_groups[0]
    ref = authors("fashion_mnist", "fc", "rms")
    for key in ("radius", "max_radius", "eta1", "eta2", "gamma1", "stop_rule", "eps_mode", "eps"):
        assert group[key] == getattr(ref, key), key


@pytest.mark.parametrize("name", ["fastest", "authors", "authors:fashion_mnist", ""])
def test_unknown_preset_names_are_refused_with_the_choices(name):
    with pytest.raises(ValueError, match=r"preset.*'authors:<dataset>:<model>'"):
        EllipsoidalTR([_param()], preset=name)


def test_explicit_options_override_the_preset():
    group = EllipsoidalTR([_param()], preset="fast", radius=0.5, hessian_fraction=0.25).param_groups[0]
    assert group["radius"] == 0.5 and group["hessian_fraction"] == 0.25 and group["auto_radius"] is True


def test_fast_works_with_a_plain_closure():
    """A plain closure: the first step starts at the closed-form Cauchy radius (uniform:
    (g^T g)^{3/2} / g^T A g); with hessian_fraction added and no batch_fraction argument the whole
    batch serves the Hessian products (warned once)."""
    A = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    b = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    w = _param()
    opt = EllipsoidalTR([w], preset="fast", ellipsoid="uniform", hessian_fraction=0.5)
    with pytest.warns(UserWarning, match="batch_fraction"):
        for _ in range(5):
            opt.step(lambda: 0.5 * w @ A @ w - b @ w)
    g = -b
    expected = float((g @ g) ** 1.5 / (g @ A @ g))
    assert opt.state[w]["auto_radius"] == pytest.approx(expected, rel=1e-12)
    f = float(0.5 * w.detach() @ A @ w.detach() - b @ w.detach())
    f_star = float(-0.5 * b @ torch.linalg.solve(A, b))
    assert f - f_star < 1e-6 * abs(f_star)  # five steps of a Newton-type method on a 3-d quadratic


def test_trainer_resolves_fast_and_hands_the_sub_batch_to_the_optimiser():
    config = TrainConfig(method="TR_rms", preset="fast", dataset="digits", model="mlp_small", max_steps=3,
                         device="cpu", eval_every=3, data_options={"max_train": 256})
    tr = resolve_tr_config(config)
    assert tr.auto_radius and tr.hessian_fraction == 1.0 and tr.batch_size == 512
    result = train(config.replace(batch_size=128, tr_options={"hessian_fraction": 0.25}))
    assert result.stop_reason == "max_steps"
    # per step two backward passes: the gradient of the batch at w and the Hessian sub-batch's graph
    assert result.summary["backward"] == 6
    # the Hessian products: each step's own, plus one for the automatic initial radius
    assert result.summary["hvp"] == sum(r["hvp_calls"] for r in result.steps) + 1
    assert math.isfinite(result.steps[-1]["loss"])


def test_cli_accepts_preset_fast(tmp_path):
    out = tmp_path / "run"
    quick = ["--max-train", "200", "--eval-every", "2", "--device", "cpu", "--no-progress"]
    assert main(["train", "--method", "TR_rms", "--preset", "fast", "--max-steps", "2", "--batch-size", "64",
                 "--out", str(out), *quick]) == 0
    assert "fast" in json.dumps(json.loads((out / "summary.json").read_text()))
