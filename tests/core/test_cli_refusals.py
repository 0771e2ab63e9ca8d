"""Every ``etr`` subcommand refuses the same kinds of bad input the same way: one line, exit 2, naming
the flag and the fix. Kinds: settings a method would not run (ARC's trust-region values, TR_hess's
authors' preset), absurd counts, empty lists, a missing dataset, an unusable ``--out``; plus the
device ``etr reproduce`` reports and what an ARC run records in config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from etr_core.cli import main
from etr_core.cli.options import MAX_SEED_COUNT
from etr_core.reproduce.protocol import MAX_SEEDS, problems_for
from etr_core.training import TrainConfig
from etr_core.training.method_settings import ARC_TR_OPTIONS
from tests.core.cli_support import error_line, run_cli

QUICK = ["--max-train", "100", "--eval-every", "2", "--device", "cpu", "--no-progress", "--threads", "1"]
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
       "t10k-labels-idx1-ubyte")






# --- settings a method would not run ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--methods", "ARC_rms", "--preset", "fast"], "--preset fast"),
        (["--methods", "TR_rms,ARC_rms", "--preset", "authors"], "--preset authors"),
        (["--methods", "TR_rms,ARC_rms", "--tr-option", "radius=0.1"], "--tr-option radius"),
        (["--methods", "ARC_rms", "--tr-option", "hessian_fraction=0.5"], "--tr-option hessian_fraction"),
        (["--methods", "TR_hess", "--preset", "authors"], "--preset authors"),
    ],
)
def test_compare_refuses_settings_a_method_would_not_run(argv, named, tmp_path, capsys):
    code, err = run_cli(["compare", *argv, "--seeds", "1", "--max-steps", "1", *QUICK, "--html-only",
                         "--out", str(tmp_path / "cmp")], capsys)
    line = error_line(err)
    assert code == 2 and named in line and "--methods" in line
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("preset", ["fast", "authors"])
def test_train_refuses_a_trust_region_preset_for_arc_and_says_what_arc_accepts(preset, tmp_path, capsys):
    code, err = run_cli(["train", "--method", "ARC_rms", "--preset", preset, "--max-steps", "1", *QUICK,
                         "--out", str(tmp_path / "run")], capsys)
    line = error_line(err)
    assert code == 2 and f"--preset {preset}" in line and "--preset paper" in line
    assert all(key in line for key in ARC_TR_OPTIONS)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tr_options", [{"radius": 0.1}, {"eta2": 0.5}, {"gamma2": 3.0},
                                        {"auto_radius": True}, {"max_radius": 5.0}, {"solver": "lanczos"},
                                        {"hessian_probes": 2}])
def test_library_refuses_arc_settings_that_would_not_run(tr_options):
    with pytest.raises(ValueError, match=f"'{next(iter(tr_options))}'.*would not run"):
        TrainConfig(method="ARC_rms", tr_options=tr_options)
    with pytest.raises(ValueError, match="preset='fast'"):
        TrainConfig(method="ARC_rms", preset="fast")
    with pytest.raises(ValueError, match=r"preset='authors'.*TR_rms"):
        TrainConfig(method="TR_hess", preset="authors")


@pytest.mark.slow
def test_arc_runs_the_options_it_accepts_and_records_only_those(tmp_path):
    """Each accepted option reaches EllipsoidalARC (its param group, as config.json records it)."""
    chosen = {"beta": 0.7, "eps": 1e-9, "eps_mode": "authors", "krylov_tol": 0.2, "max_krylov": 7,
              "theta": 0.4, "batch_size": 16, "ellipsoid": "rms"}
    assert set(chosen) == set(ARC_TR_OPTIONS)
    out = tmp_path / "run"
    assert main(["train", "--method", "ARC_rms", *[a for k, v in chosen.items()
                                                    for a in ("--tr-option", f"{k}={v}")],
                 "--max-steps", "1", *QUICK, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["tr_config"] is None  # no trust-region values that did not run
    arc = config["arc_options"]
    for key, value in chosen.items():
        assert (config["batch_size_resolved"] if key == "batch_size" else arc[key]) == value, key


# --- absurd counts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--seeds", str(2**40)],
        ["compare", "--seeds", str(MAX_SEED_COUNT + 1)],
        ["compare", "--seed-list", ",".join(str(i) for i in range(MAX_SEED_COUNT + 1))],
        ["reproduce", "fig3", "--seeds", str(2**40)],
        ["reproduce", "fig2", "--seeds", str(MAX_SEED_COUNT + 1)],
        ["hessian", "--seeds", str(2**40)],
    ],
    ids=["compare", "compare_max_plus_1", "compare_seed_list", "reproduce", "reproduce_fig2", "hessian"],
)
def test_a_seed_count_above_the_maximum_is_one_line_naming_the_option_and_the_maximum(argv, tmp_path, capsys):
    code, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
    line = error_line(err)
    assert code == 2 and ("--seeds" in line or "--seed-list" in line) and str(MAX_SEED_COUNT) in line
    assert not (tmp_path / "out").exists()


def test_the_library_bounds_the_seed_count_before_building_a_range():
    assert MAX_SEEDS == MAX_SEED_COUNT
    with pytest.raises(ValueError, match=f"seeds must be <= {MAX_SEEDS}"):
        problems_for("fig3", "digits", seeds=2**40)
    assert len(problems_for("fig3", "digits", seeds=MAX_SEEDS, networks=("mlp",))[0].seeds) == MAX_SEEDS


# --- empty lists ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["compare", "--methods", ""], "--methods"),
        (["compare", "--methods", " , "], "--methods"),
        (["compare", "--methods", "TR_rms,,SGD"], "--methods"),
        (["compare", "--seed-list", ""], "--seed-list"),
        (["compare", "--seed-list", ","], "--seed-list"),
        (["compare", "--methods", "SGD", "--lr-grid", "SGD="], "--lr-grid"),
        (["reproduce", "fig3", "--methods", ""], "--methods"),
        (["reproduce", "fig3", "--networks", ""], "--networks"),
        (["reproduce", "fig4", "--networks", "mlp,"], "--networks"),
        (["hessian", "--archs", ""], "--archs"),
        (["plot", ""], "RUN_DIR"),
        (["plot", "somewhere", "--x", ""], "--x"),
        (["train", "--tr-option", ""], "--tr-option"),
    ],
)
def test_an_empty_list_is_refused_not_replaced_by_the_default(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path must not mean the current folder
    code, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and flag in error_line(err)
    assert not (tmp_path / "out").exists()


def test_download_with_an_empty_root_is_refused(capsys):
    code, err = run_cli(["download", "mnist", "--root", ""], capsys)
    assert code == 2 and "--root" in error_line(err)


# --- a missing dataset --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "dataset"),
    [
        (["train", "--dataset", "mnist", "--max-steps", "1"], "mnist"),
        (["compare", "--methods", "SGD", "--dataset", "fashion_mnist", "--max-steps", "1"], "fashion_mnist"),
        (["reproduce", "fig3", "--quick", "--networks", "mlp"], "fashion_mnist"),
        (["reproduce", "fig6", "--quick", "--dataset", "mnist"], "mnist"),
        (["hessian", "--dataset", "mnist", "--seeds", "1", "--steps", "1", "--quiet"], "mnist"),
    ],
    ids=["train", "compare", "reproduce_fig3", "reproduce_fig6", "hessian"],
)
def test_a_missing_dataset_names_the_folder_and_every_file_to_put_there(argv, dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli([*argv, "--data-root", str(empty), "--out", str(tmp_path / "out")], capsys)
    line = error_line(err)
    assert code == 2 and f"in {empty / dataset}," in line
    assert all(f"{stem}.gz" in line for stem in IDX)
    assert f"etr download {dataset} --root {empty}" in line


# --- an unusable --out ------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self").exists() or os.name != "posix", reason="needs Linux /proc")
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--max-steps", "1", *QUICK],
        ["compare", "--methods", "SGD", "--seeds", "1", "--max-steps", "1", *QUICK],
        ["reproduce", "fig3", "--quick", "--dataset", "digits", "--seeds", "1", "--budget", "10",
         "--networks", "mlp", "--methods", "TR_rms", "--device", "cpu", "--no-progress"],
        ["reproduce", "fig2", "--quick", "--dataset", "digits", "--seeds", "1", "--device", "cpu",
         "--no-progress"],
        ["hessian", "--seeds", "1", "--steps", "1", "--archs", "4", "--max-train", "64", "--quiet"],
        ["plot", "somewhere", "--html-only"],
    ],
    ids=["train", "compare", "reproduce_fig3", "reproduce_fig2", "hessian", "plot"],
)
def test_an_unwritable_out_is_the_same_cannot_use_sentence_everywhere(argv, tmp_path, capsys):
    if argv[0] == "plot":  # a real run folder to plot
        run = ["train", "--method", "SGD", "--max-steps", "2", *QUICK, "--out", str(tmp_path / "r")]
        assert main(run) == 0
        argv = ["plot", str(tmp_path / "r"), *argv[2:]]
    code, err = run_cli([*argv, "--out", "/proc/nope"], capsys)
    assert code == 2
    assert error_line(err) == f"etr {argv[0]}: error: cannot use /proc/nope: no such file or folder"


# --- the device etr reproduce reports -----------------------------------------------------------------------
def test_the_reproduce_header_names_the_device_the_runs_use():
    from etr_core.reproduce.figures import _device_used

    assert _device_used("cpu") == "cpu"
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert _device_used("auto").split(" ")[0] == expected


def test_the_app_gives_arc_only_the_settings_it_runs():
    """The live page's TR knobs and preset apply to the trust regions; ARC_rms gets the paper preset."""
    from etr_core.live.settings import comparison_configs

    tr, arc = comparison_configs(["TR_rms", "ARC_rms"], preset="fast", max_steps=5,
                                 tr_options={"radius": 0.01, "eta1": 0.2, "beta": 0.7})
    assert (tr.preset, tr.tr_options) == ("fast", {"radius": 0.01, "eta1": 0.2, "beta": 0.7})
    assert (arc.preset, arc.tr_options) == ("paper", {"beta": 0.7})
