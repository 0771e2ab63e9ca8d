"""The ``etr`` command line end to end on digits, and its argument checking."""

from __future__ import annotations

import json

import pytest

from etr_core.cli import main
from etr_core.results import load_run
from tests.core.cli_support import error_line, run_cli

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
        "--html-only",
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
    plot = ["plot", str(out), "--out", str(figs), "--x", "backprops", "epoch", "--all", "--html-only"]
    assert main(plot) == 0
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
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


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


# -- one error style, resume flags, files that cannot be trusted ----------------------------------------






@pytest.fixture
def sgd_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "SGD", "--max-steps", "2", "--checkpoint-every", "1", "--out", str(out)]
    assert main([*argv, *QUICK]) == 0
    capsys.readouterr()
    return out


def test_resume_refuses_each_flag_that_would_change_the_run(sgd_run, capsys):
    code, err = run_cli(["train", "--resume", str(sgd_run), "--batch-size", "64", "--no-progress"], capsys)
    assert code == 2 and "--batch-size (run has 32, flag asks 64)" in error_line(err)
    argv = ["train", "--resume", str(sgd_run), "--method", "Adam", "--lr", "0.5", "--max-steps", "3"]
    code, err = run_cli(argv, capsys)
    line = error_line(err)
    assert code == 2 and "--method (run has 'SGD', flag asks 'Adam')" in line and "--lr (run has 0.1" in line
    assert list(load_run(sgd_run).metrics["step"]) == [1, 2]  # nothing ran


def test_resume_applies_budget_flags_and_records_them(sgd_run, capsys):
    # repeating saved values (--method, the resolved --batch-size and --lr) is not a change
    argv = ["train", "--resume", str(sgd_run), "--method", "SGD", "--batch-size", "32", "--lr", "0.1"]
    code, err = run_cli([*argv, "--max-steps", "4", "--eval-every", "1", "--no-progress"], capsys)
    assert code == 0, err
    run = load_run(sgd_run)
    assert list(run.metrics["step"]) == [1, 2, 3, 4] and run.config["eval_every"] == 1
    changes = {"max_steps": {"before": 2, "after": 4}, "eval_every": {"before": 2, "after": 1}}
    assert run.config["resumes"] == [{"step": 2, "changes": changes}]


def _write_mnist(root, train_labels):
    import gzip
    import struct

    import numpy as np

    folder = root / "mnist"
    folder.mkdir(parents=True)
    n = len(train_labels)
    files = {
        "train-images-idx3-ubyte": (np.zeros((n, 28, 28), np.uint8)),
        "train-labels-idx1-ubyte": np.asarray(train_labels, np.uint8),
        "t10k-images-idx3-ubyte": np.zeros((2, 28, 28), np.uint8),
        "t10k-labels-idx1-ubyte": np.zeros(2, np.uint8),
    }
    for stem, array in files.items():
        header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
        with gzip.open(folder / f"{stem}.gz", "wb") as handle:
            handle.write(header + array.tobytes())
    return folder


def test_bad_data_file_is_one_line_and_writes_no_run_folder(tmp_path, capsys):
    folder = _write_mnist(tmp_path / "data", [0, 1, 10, 3])
    out = tmp_path / "run"
    argv = ["train", "--dataset", "mnist", "--model", "mlp_paper", "--data-root", str(tmp_path / "data")]
    code, err = run_cli([*argv, "--out", str(out), *QUICK], capsys)
    line = error_line(err)
    assert code == 2 and "label 10 at position 2" in line
    assert line.startswith(f"etr train: error: {folder / 'train-labels-idx1-ubyte.gz'}: ")
    assert not out.exists()


def test_out_that_is_a_file_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("not a folder")
    argv = ["train", "--method", "SGD", "--max-steps", "1", "--out", str(out), *QUICK]
    code, err = run_cli(argv, capsys)
    assert code == 2 and f"{out} is a file, not a folder" in error_line(err)
    with pytest.raises(NotADirectoryError):
        main([*argv, "--debug"])


def test_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    real_mkdir = Path.mkdir
    denied = tmp_path / "readonly"

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(denied)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = run_cli(["train", "--method", "SGD", "--out", str(denied / "run"), *QUICK], capsys)
    line = error_line(err)
    assert code == 2 and f"cannot use {denied / 'run'}: permission denied" in line


def test_full_disk_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    import errno

    import torch

    out = tmp_path / "run"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    argv = ["train", "--method", "SGD", "--max-steps", "2", "--checkpoint-every", "1", "--out", str(out)]
    code, err = run_cli([*argv, *QUICK], capsys)
    line = error_line(err)
    assert code == 2 and f"{out / 'checkpoint.pt'}: no space left on the device" in line
    monkeypatch.undo()
    code, err = run_cli(["train", "--resume", str(out), "--no-progress"], capsys)  # no checkpoint: step 0
    assert code == 0, err
    assert list(load_run(out).metrics["step"]) == [1, 2]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"])
def test_unusable_checkpoint_on_resume_is_one_line(sgd_run, capsys, content):
    (sgd_run / "checkpoint.prev.pt").unlink()
    (sgd_run / "checkpoint.pt").write_bytes(content)
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "3", "--no-progress"], capsys)
    assert code == 2 and error_line(err).startswith(f"etr train: error: {sgd_run / 'checkpoint.pt'}: ")


def test_damaged_checkpoint_warns_in_one_line_and_uses_the_previous_one(sgd_run, capsys):
    (sgd_run / "checkpoint.pt").write_bytes(b"")
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "3", "--no-progress"], capsys)
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"{sgd_run / 'checkpoint.pt'}: the file is empty" in warning[0]
    assert "checkpoint.prev.pt" in warning[0]


def test_second_writer_is_refused_in_one_line(sgd_run, tmp_path, capsys):
    from etr_core.files import RunLock

    with RunLock(sgd_run):
        code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "3", "--no-progress"], capsys)
    assert code == 2 and "is being written by another process" in error_line(err)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with RunLock(fresh):  # another fresh run into the same folder is still running
        code, err = run_cli(["train", "--method", "SGD", "--out", str(fresh), *QUICK], capsys)
    assert code == 2 and f"{fresh} is being written by another process" in error_line(err)
    assert sorted(p.name for p in fresh.iterdir()) == [".lock"]


def test_plot_never_runs_code_from_a_checkpoint(tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    run = tmp_path / "ae"
    argv = ["train", "--model", "autoencoder_small", "--method", "Adam", "--max-steps", "1"]
    assert main([*argv, "--out", str(run), *QUICK]) == 0
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        torch.save({"step": 1, "model": Payload()}, run / name)
    code, err = run_cli(["plot", str(run), "--out", str(tmp_path / "figs"), "--x", "epoch"], capsys)
    assert code == 0 and "not a safe checkpoint" in err
    assert not marker.exists()


def test_user_message_is_the_cli_sentence_for_the_app(tmp_path):
    import errno

    from etr_core.errors import user_message

    assert user_message(RuntimeError("bug")) is None
    assert user_message(IndexError("bug")) is None
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    expected = f"cannot use {tmp_path / 'x'}: permission denied; choose a folder you can write, or fix its"
    assert user_message(denied) == expected + " permissions"
    assert user_message(ValueError("a\nb")) == "a; b"
