"""The ``etr`` command line end to end on digits, and its argument checking."""

from __future__ import annotations

import json

import pytest

from etr_core.cli import main
from etr_core.results import load_run

QUICK = ["--max-train", "200", "--eval-every", "2", "--device", "cpu", "--no-progress"]


def test_train_writes_a_run_folder_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--method",
                "TR_ada",
                "--batch-size",
                "64",
                "--max-steps",
                "3",
                "--out",
                str(out),
                *QUICK,
            ]
        )
        == 0
    )
    assert "stop=max_steps" in capsys.readouterr().out
    run = load_run(out)
    assert run.summary["step"] == 3 and run.config["method"] == "TR_ada"
    assert (
        main(
            [
                "train",
                "--method",
                "TR_ada",
                "--batch-size",
                "64",
                "--max-steps",
                "5",
                "--out",
                str(out),
                "--resume",
                *QUICK,
            ]
        )
        == 0
    )
    run = load_run(out)
    assert list(run.metrics["step"]) == [1, 2, 3, 4, 5] and run.summary["resumed_from_step"] == 3


def test_compare_then_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--methods",
        "TR_rms,SGD",
        "--lr-grid",
        "SGD=0.05,0.5",
        "--seeds",
        "2",
        "--tr-batch-size",
        "64",
        "--max-steps",
        "3",
        "--out",
        str(out),
        *QUICK,
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "SGD (lr=0.05)" in table and "SGD (lr=0.5)" in table and "TR_rms" in table
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["SGD_lr0.05", "SGD_lr0.5", "TR_rms"]
    assert (out / "summary.md").exists() and (out / "loss_vs_backprops.html").exists()
    seeds = sorted(json.loads((d / "config.json").read_text())["seed"] for d in (out / "TR_rms").iterdir())
    assert seeds == [0, 1]

    figs = tmp_path / "figs"
    assert main(["plot", str(out), "--out", str(figs), "--x", "backprops", "epoch"]) == 0
    names = {p.name for p in figs.iterdir()}
    assert {"train_loss_vs_backprops.html", "train_loss_vs_epoch.html", "tr_traces.html"} <= names


def test_plot_draws_autoencoder_reconstructions(tmp_path):
    run = tmp_path / "ae"
    assert (
        main(
            [
                "train",
                "--model",
                "autoencoder_small",
                "--method",
                "Adam",
                "--max-steps",
                "2",
                "--out",
                str(run),
                *QUICK,
            ]
        )
        == 0
    )
    assert main(["plot", str(run), "--out", str(tmp_path / "figs"), "--x", "epoch"]) == 0
    assert (tmp_path / "figs" / "reconstructions.html").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--method", "Newton"], "invalid choice"),
        (["train", "--max-steps", "0"], "positive integer"),
        (["train", "--lr", "0.1"], "lr applies to first-order methods"),
        (["train", "--method", "SGD", "--lr", "-1"], "--lr"),
        (["train", "--tr-option", "radius"], "KEY=VALUE"),
        (["train", "--tr-option", "radius=-2"], "radius must be > 0"),
        (["train", "--dataset", "moons", "--model", "cnn_small"], "needs an image dataset"),
        (["train", "--device", "tpu"], "invalid choice"),
        (["compare", "--methods", "TR_rms,Foo", "--out", "x"], "unknown"),
        (["compare", "--lr-grid", "TR_rms=0.1", "--out", "x"], "not a first-order method"),
        (["compare", "--methods", "SGD", "--lr-grid", "SGD=abc", "--out", "x"], "must be numbers"),
        (["compare", "--methods", "SGD"], "--out"),
        (["plot", "/nonexistent/run", "--out", "x"], "neither a run folder"),
        (["download", "digits"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_files_exit_2_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--dataset",
                "fashion_mnist",
                "--model",
                "mlp_paper",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "etr download fashion_mnist" in err
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--method", "SGD", "--max-steps", "1", "--out", str(out), *QUICK])
    with pytest.raises(SystemExit) as info:
        main(["train", "--method", "SGD", "--max-steps", "1", "--out", str(out), *QUICK])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "torchrun" in text


def test_resume_run_dir_takes_the_configuration_from_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "TR_rms", "--batch-size", "64", "--max-steps", "3", "--out", str(out)]
    argv += QUICK
    assert main(argv) == 0
    # Only the folder and a longer budget: method, batch size and data come from the saved configuration.
    assert main(["train", "--resume", str(out), "--max-steps", "6", "--no-progress"]) == 0
    run = load_run(out)
    assert run.config["method"] == "TR_rms" and run.config["batch_size"] == 64
    assert list(run.metrics["step"]) == [1, 2, 3, 4, 5, 6] and run.summary["resumed_from_step"] == 3


def test_resume_without_a_checkpoint_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "missing"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(missing)])
    assert exc.value.code == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", "--out", str(missing), *QUICK])
    assert exc.value.code == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not missing.exists()
