"""The Fig. 2 / Fig. 6 experiment (`etr hessian`): tiny runs, files, summary statistics, CLI validation."""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd
import pytest
import torch
from scipy import stats

from etr_core.curvature import diagonal_mass, wigner_mass_closed_form
from etr_core.hessian_cli import add_parser, main
from etr_core.hessian_experiment import (
    HessianExperimentConfig,
    HessianExperimentResult,
    analyse_network,
    mlp_sizes,
    parameter_count,
    parse_arch,
    pooled_abs,
    run_hessian_experiment,
    summarize,
    write_results,
)


def _toy_data(n=80, features=6, classes=3, seed=0):
    # labels from a linear teacher, so a few RMSProp steps make progress
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    return x, (x @ torch.randn(features, classes, generator=gen)).argmax(1)


def test_arch_parsing_and_sizes():
    assert parse_arch("16") == (16,)
    assert parse_arch("16-8") == parse_arch("16x8") == (16, 8)
    assert mlp_sizes("8", 64, 10) == [64, 8, 10]
    assert parameter_count([64, 8, 10]) == 64 * 8 + 8 + 8 * 10 + 10
    for bad in ("", "a", "0", "1-2-3-4-5"):
        with pytest.raises(ValueError, match="arch"):
            parse_arch(bad)


def test_analyse_network_against_an_independent_hessian():
    x, y = _toy_data()
    res = analyse_network([6, 5, 3], x, y, seed=2, steps=6, batch=0, train_batch=32, lr=0.01)
    assert [s.phase for s in res.snapshots] == ["init", "middle", "end"]
    assert [s.step for s in res.snapshots] == [0, 3, 6]
    assert res.d == parameter_count([6, 5, 3]) == 53
    assert res.layer_bounds == [(0, 35), (35, 53)]
    # the init snapshot: rebuild the same network and take its Hessian with autograd.functional
    from etr_core.models import MLP

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(2)
        model = MLP([6, 5, 3]).double()
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    w0 = torch.cat([p.detach().reshape(-1) for p in params])

    def loss(w):
        parts = [t.view(s) for t, s in zip(w.split([s.numel() for s in shapes]), shapes)]
        h = torch.tanh(x.double() @ parts[0].T + parts[1])
        return torch.nn.functional.cross_entropy(h @ parts[2].T + parts[3], y)

    H = torch.autograd.functional.hessian(loss, w0)
    init = res.snapshots[0]
    assert init.comparison.delta_h == pytest.approx(diagonal_mass(H), rel=1e-10)
    assert init.comparison.delta_w_equal == pytest.approx(1 / 53)
    assert init.train_loss == pytest.approx(float(loss(w0)), rel=1e-10)
    eig = torch.linalg.eigvalsh(H)
    assert init.lambda_max == pytest.approx(float(eig[-1]), rel=1e-6)
    assert init.lambda_min == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-9)
    # training lowers the loss
    assert res.snapshots[-1].train_loss < init.train_loss


def test_analyse_network_rejects_oversized_networks_before_work():
    x, y = _toy_data()
    with pytest.raises(ValueError, match=r"d = 2,003 .*max_params = 1,000"):
        analyse_network([6, 200, 3], x, y, max_params=1000)
    with pytest.raises(ValueError, match="fraction of steps"):
        analyse_network([6, 4, 3], x, y, phases=(("late", 1.5),))


def test_pooled_abs_averages_tiles():
    H = torch.arange(16.0).reshape(4, 4) - 8
    pooled = pooled_abs(H, cells=2)
    assert pooled.shape == (2, 2)
    assert pooled[0, 0] == pytest.approx(float(H[:2, :2].abs().mean()))
    assert pooled_abs(H, cells=10).shape == (4, 4)


def test_summarize_uses_t_intervals_and_drops_diverged_runs():
    rows = []
    values = [0.01, 0.012, 0.015, 0.011]
    for seed, v in enumerate([*values, math.nan]):
        row = {"dataset": "digits", "arch": "8", "d": 610, "phase": "init", "step": 0, "seed": seed}
        for metric in ("delta_h", "delta_w_equal", "delta_w_rms", "ratio_equal", "ratio_rms",
                       "tensor_block_mass", "layer_block_mass", "lambda_min", "lambda_max", "train_loss"):
            row[metric] = v
        rows.append(row)
    (entry,) = summarize(rows)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=pd.Series(values).mean(), scale=stats.sem(values))
    assert entry["n"] == 4 and entry["n_diverged"] == 1
    assert entry["delta_h_mean"] == pytest.approx(sum(values) / 4)
    assert entry["delta_h_ci_low"] == pytest.approx(low)
    assert entry["delta_h_ci_high"] == pytest.approx(high)


def test_tiny_experiment_runs_and_writes_files(tmp_path):
    config = HessianExperimentConfig(dataset="digits", archs=("4",), seeds=2, steps=4, batch=32,
                                     max_train=200, lanczos_iter=10)
    calls = []
    result = run_hessian_experiment(config, progress=lambda done, total, msg: calls.append((done, total)))
    assert calls[-1] == (6, 6)
    assert len(result.rows) == 6 and len(result.summary) == 3
    d = parameter_count([64, 4, 10])
    for row in result.rows:
        assert row["d"] == d
        assert row["delta_w_equal"] == pytest.approx(1 / d)
        assert row["delta_w_rms"] == pytest.approx(
            wigner_mass_closed_form(d, row["sigma_off_rms"], row["sigma_diag_rms"]))
        assert row["ratio_equal"] == pytest.approx(row["delta_h"] * d)
        assert 0 < row["delta_h"] < 1
    paths = write_results(result, tmp_path / "out")
    names = sorted(p.name for p in paths.values())
    assert names == ["figure.html", "results.json", "rows.csv", "summary.csv"]
    payload = json.loads(paths["json"].read_text())
    assert payload["config"]["seeds"] == 2 and len(payload["rows"]) == 6
    assert "1/d" in payload["baselines"]["delta_w_equal"]
    frame = pd.read_csv(paths["summary"])
    assert list(frame["phase"]) == ["init", "middle", "end"]
    assert "plotly" in paths["figure"].read_text()[:5000].lower()


def test_config_validation():
    with pytest.raises(ValueError, match="dataset"):
        HessianExperimentConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="seeds"):
        HessianExperimentConfig(seeds=0)
    with pytest.raises(ValueError, match="archs"):
        HessianExperimentConfig(archs=())
    with pytest.raises(ValueError, match="activation"):
        HessianExperimentConfig(activation="swish")
    with pytest.raises(ValueError, match=r"arch '200' .*max_params"):
        run_hessian_experiment(HessianExperimentConfig(archs=("200",), max_params=5000, seeds=1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etr")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--archs", "abc"], "--archs"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--steps", "-3"], "--steps must be >= 0"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--dataset", "imagenet"], "invalid choice"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments_early(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["hessian", "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_oversized_network_with_a_clear_message(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--archs", "300", "--seeds", "1", "--max-params", "12000", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert "d = 22,510" in err and "max_params = 12,000" in err
    assert not any(tmp_path.iterdir())


def test_cli_tiny_run(tmp_path, capsys):
    code = main(["--archs", "4", "--seeds", "2", "--steps", "2", "--batch", "16", "--max-train", "100",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "delta_H/delta_W(1/d)" in out and "delta_H/delta_W(RMS)" in out
    assert (tmp_path / "results.json").exists() and (tmp_path / "figure.html").exists()
    parsed = _parser().parse_args(["hessian", "--out", str(tmp_path)])
    assert callable(parsed.func)


def test_zero_steps_puts_every_phase_at_initialisation():
    x, y = _toy_data()
    res = analyse_network([6, 4, 3], x, y, steps=0, batch=40)
    assert [(s.phase, s.step) for s in res.snapshots] == [("init", 0), ("middle", 0), ("end", 0)]
    assert len({s.comparison.delta_h for s in res.snapshots}) == 1


def test_non_finite_values_are_written_as_null_not_numbers(tmp_path):
    row = {"dataset": "digits", "arch": "8", "sizes": "64-8-10", "d": 610, "seed": 0, "phase": "init",
           "step": 0, "train_loss": 2.3, "delta_h": 0.01, "delta_w_equal": 1 / 610, "delta_w_rms": 0.005,
           "ratio_equal": 6.1, "ratio_rms": 2.0, "tensor_block_mass": 0.5, "layer_block_mass": 0.6,
           "lambda_min": -0.1, "lambda_max": 1.0, "sigma_off_rms": 0.01, "sigma_diag_rms": 0.1}
    diverged = {**row, "seed": 1, "train_loss": math.inf, "delta_h": math.nan, "ratio_rms": math.nan}
    rows = [row, diverged]
    config = HessianExperimentConfig(seeds=2)
    result = HessianExperimentResult(config, rows, summarize(rows), {"device": "cpu"})
    paths = write_results(result, tmp_path)
    text = paths["json"].read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = json.loads(text)
    assert payload["rows"][1]["delta_h"] is None and payload["rows"][1]["train_loss"] is None
    assert payload["summary"][0]["n"] == 1 and payload["summary"][0]["n_diverged"] == 1
    assert payload["summary"][0]["delta_h_mean"] == pytest.approx(0.01)
    assert pd.read_csv(paths["rows"])["delta_h"].isna().tolist() == [False, True]


def test_checkpoints_resume_bitwise_and_do_not_depend_on_later_steps():
    from etr_core.hessian_analysis import train_checkpoints

    x, y = _toy_data()
    kwargs = dict(activation="tanh", seed=3, train_batch=16, lr=0.01, dtype=torch.float32)
    direct = train_checkpoints([6, 5, 3], x, y, [7, 19], **kwargs)
    short = train_checkpoints([6, 5, 3], x, y, [7], **kwargs)
    resumed = train_checkpoints([6, 5, 3], x, y, [19], start=short[0], **kwargs)
    assert [c.step for c in direct] == [7, 19]
    assert torch.equal(direct[0].params, short[0].params)
    assert torch.equal(direct[1].params, resumed[0].params)
    assert not torch.equal(direct[0].params, direct[1].params)
    # an independent loop with torch's RMSprop and the same sampler gives the same weights
    from etr_core.models import MLP

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(3)
        model = MLP([6, 5, 3])
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(3)
    torch.randperm(len(x), generator=gen)
    for _ in range(7):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.parameters()).detach(), direct[0].params)
