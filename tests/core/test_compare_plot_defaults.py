"""`etr compare` and `etr plot` show the paper's picture by default: budgets in backprops long
enough for Table 1's radius to grow, and the best step size per method."""

from __future__ import annotations

import json
import math

import pytest

from etr_core.cli import DEFAULT_COMPARE_BACKPROPS, main


def test_default_budget_lets_table1_radius_grow():
    # Table 1: radius 1e-4, gamma1 = 1.1; reaching radius 1 takes log(1e4)/log(1.1) ~ 97 very
    # successful steps, each at least 2 backprops (one gradient, one Hessian-vector product)
    steps_to_grow = math.log(1e4) / math.log(1.1)
    assert DEFAULT_COMPARE_BACKPROPS >= 5 * 2 * steps_to_grow


@pytest.mark.slow
def test_compare_without_a_budget_flag_runs_the_default_backprops_and_leaves_the_plateau(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--methods",
                "TR_rms",
                "--seeds",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--eval-every",
                "50",
                "--html-only",
            ]
        )
        == 0
    )
    summary = json.loads((out / "TR_rms" / "seed0" / "summary.json").read_text())
    assert summary["stop_reason"] == "max_backprops" and summary["backprops"] >= DEFAULT_COMPARE_BACKPROPS
    first = json.loads((out / "TR_rms" / "seed0" / "evals.jsonl").read_text().splitlines()[0])
    assert summary["train_loss"] < 0.5 * first["train_loss"]  # no longer at the initial loss


@pytest.mark.slow
def test_plot_draws_the_best_step_size_unless_all(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--methods",
        "Adam",
        "--lr-grid",
        "Adam=1e-4,3e-2",
        "--seeds",
        "1",
        "--max-backprops",
        "60",
        "--out",
        str(out),
        "--no-progress",
        "--html-only",
    ]
    assert main(argv) == 0
    losses = {
        lr: json.loads((out / f"Adam_lr{lr}" / "seed0" / "summary.json").read_text())["train_loss"]
        for lr in ("0.0001", "0.03")
    }
    best = min(losses, key=losses.get)
    capsys.readouterr()
    assert main(["plot", str(out), "--out", str(tmp_path / "fig"), "--x", "backprops", "--html-only"]) == 0
    html = (tmp_path / "fig" / "train_loss_vs_backprops.html").read_text()
    assert f"Adam (lr={float(best):g})" in html
    assert f"Adam (lr={float(max(losses, key=losses.get)):g})" not in html
    plot_all = ["plot", str(out), "--all", "--out", str(tmp_path / "all"), "--x", "backprops", "--html-only"]
    assert main(plot_all) == 0
    html = (tmp_path / "all" / "train_loss_vs_backprops.html").read_text()
    assert "Adam (lr=0.0001)" in html and "Adam (lr=0.03)" in html
