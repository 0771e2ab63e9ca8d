"""Hostile-user variants for run folders, the CLI's flags and data files.

Each test is an input a careless user or a broken file system produces (absurd flag values, a
checkpoint that is a symlink loop or a dangling link, ...) with the outcome the docs promise
(docs/training.md, "The run folder" and "Errors"): one line, exit 2, nothing lost.
"""

from __future__ import annotations

import os

import pytest
import torch

from etr_core.checkpoints import read_checkpoint, save_checkpoint
from etr_core.cli import main
from etr_core.data import load_dataset
from etr_core.errors import user_message
from etr_core.results import ResultsWarning, read_json_object, read_jsonl, run_state
from etr_core.training import TrainConfig
from tests.core.cli_support import error_line, run_cli

QUICK = ["--max-train", "200", "--eval-every", "2", "--device", "cpu", "--no-progress", "--threads", "1"]






# -- flags with absurd values ---------------------------------------------------------------------


def test_thread_count_beyond_the_machine_is_refused_before_any_work(tmp_path, capsys):
    """``--threads 100000`` used to start 100000 OpenMP threads: the process died with SIGSEGV
    (exit 139) after writing config.json, and exhausted the machine's process limit meanwhile."""
    out = tmp_path / "run"
    code, err = run_cli(["train", "--threads", "100000", "--max-steps", "2", "--out", str(out)], capsys)
    line = error_line(err)
    assert code == 2
    assert "--threads" in line and "100000" in line
    assert not out.exists()


def test_thread_count_beyond_the_machine_is_refused_by_the_library():
    with pytest.raises(ValueError, match="num_threads"):
        TrainConfig(num_threads=100000)


@pytest.mark.parametrize("seed", [2**32, 2**40, 99999999999999999999])
def test_seed_beyond_2_32_is_refused_naming_the_flag(seed, tmp_path, capsys):
    """A seed scikit-learn cannot take gave its own error ("The 'random_state' parameter of
    train_test_split must be ...") instead of naming --seed."""
    out = tmp_path / "run"
    code, err = run_cli(["train", "--seed", str(seed), "--max-steps", "2", "--out", str(out), *QUICK], capsys)
    line = error_line(err)
    assert code == 2
    assert "--seed" in line and "random_state" not in line
    assert not out.exists()


def test_seed_beyond_2_32_is_refused_by_the_library():
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=2**40)
    with pytest.raises(ValueError, match="seed") as info:
        load_dataset("digits", seed=2**40)
    assert "random_state" not in str(info.value)
    assert load_dataset("digits", seed=2**32 - 1).n_train > 0  # the largest seed still works


# -- checkpoints that are links ---------------------------------------------------------------------


@pytest.fixture
def sgd_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "SGD", "--max-steps", "4", "--checkpoint-every", "2", "--out", str(out)]
    assert main([*argv, *QUICK]) == 0
    capsys.readouterr()
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    return out


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_broken_checkpoint_link_without_previous_is_refused_not_restarted(sgd_run, link, capsys):
    """A checkpoint.pt that is a symlink loop or a dangling link counted as absent: the folder was
    "unstarted", a resume started it again from step 0 and deleted its logs."""
    ckpt = sgd_run / "checkpoint.pt"
    ckpt.unlink()
    (sgd_run / "checkpoint.prev.pt").unlink()
    os.symlink("checkpoint.pt" if link == "loop" else "elsewhere.pt", ckpt)
    rows = read_jsonl(sgd_run / "metrics.jsonl")
    assert run_state(sgd_run) == "resumable"
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "6", *QUICK[-2:]], capsys)
    line = error_line(err)
    assert code == 2
    assert "checkpoint.pt" in line
    assert read_jsonl(sgd_run / "metrics.jsonl") == rows  # nothing lost


def test_checkpoint_link_loop_falls_back_to_the_previous_one_with_a_warning(sgd_run, capsys):
    """With checkpoint.prev.pt present, a looping checkpoint.pt was skipped without a word."""
    ckpt = sgd_run / "checkpoint.pt"
    ckpt.unlink()
    os.symlink("checkpoint.pt", ckpt)
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "6", *QUICK[-2:]], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("checkpoint.pt" in w and "checkpoint.prev.pt" in w for w in warnings), err
    assert [row["step"] for row in read_jsonl(sgd_run / "metrics.jsonl")] == list(range(1, 7))


# -- JSON files that are valid text but hostile --------------------------------------------------------


def test_deeply_nested_metrics_line_is_skipped_and_reported(tmp_path):
    """``[[[[...]]]]`` 100,000 deep made json raise RecursionError: a traceback from every reader."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n' + "[" * 100_000 + "]" * 100_000 + '\n{"step": 2}\n')
    with pytest.warns(ResultsWarning, match=r"line 2"):
        rows = read_jsonl(path)
    assert rows == [{"step": 1}, {"step": 2}]


def test_deeply_nested_config_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"config\.json") as info:
        read_json_object(path)
    assert user_message(info.value) is not None


def test_resume_of_a_folder_with_a_deeply_nested_config_is_one_line(sgd_run, capsys):
    (sgd_run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "6", *QUICK[-2:]], capsys)
    line = error_line(err)
    assert code == 2 and "config.json" in line


@pytest.mark.parametrize("command", ["train", "plot", "compare"])
def test_empty_out_is_refused_not_replaced_by_the_default_folder(command, tmp_path, capsys, monkeypatch):
    """``--out "$UNSET"`` trained into runs/digits-mlp_small-... of the current folder, silently."""
    monkeypatch.chdir(tmp_path)
    argv = {"train": ["train", "--max-steps", "2", *QUICK], "plot": ["plot", str(tmp_path)],
            "compare": ["compare", "--methods", "SGD", "--seeds", "1", "--max-steps", "2", *QUICK]}[command]
    code, err = run_cli([*argv, "--out", ""], capsys)
    line = error_line(err)
    assert code == 2 and "--out" in line
    assert list(tmp_path.iterdir()) == []


# -- checkpoints with a valid checksum that do not belong to the run ---------------------------------------


def _set(key, value):
    return lambda s: s.__setitem__(key, value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["model"].__setitem__(next(iter(s["model"])), torch.zeros(3, 3)),  # another model
        lambda s: s["model"].pop(next(iter(s["model"]))),
        lambda s: s["model"].__setitem__("extra.weight", torch.zeros(1)),
        _set("optimizer", {}),
        _set("optimizer", [1, 2]),
        lambda s: s.pop("sampler"),
        lambda s: s.pop("counters"),
        _set("torch_rng", torch.zeros(10, dtype=torch.uint8)),
        _set("pivot", 3),
        _set("step", -5),
        _set("step", "8"),
        _set("seconds", float("nan")),
    ],
    ids=[
        "model_shape", "model_missing", "model_extra", "optimizer_empty", "optimizer_list", "no_sampler",
        "no_counters", "rng_size", "pivot_int", "step_negative", "step_str", "seconds_nan",
    ],
)
def test_checkpoint_that_does_not_fit_the_run_is_one_line_naming_it(sgd_run, mutate, capsys):
    """A checkpoint copied from another run (or edited and re-checksummed) passed the checksum and
    ended in torch's multi-line RuntimeError, a bare KeyError, "'int' object is not subscriptable",
    or was accepted with a negative step."""
    state = read_checkpoint(sgd_run / "checkpoint.pt")
    mutate(state)
    (sgd_run / "checkpoint.pt").unlink()
    (sgd_run / "checkpoint.prev.pt").unlink()
    save_checkpoint(sgd_run, state)
    (sgd_run / "checkpoint.prev.pt").unlink(missing_ok=True)
    rows = read_jsonl(sgd_run / "metrics.jsonl")
    code, err = run_cli(["train", "--resume", str(sgd_run), "--max-steps", "6", *QUICK[-2:]], capsys)
    line = error_line(err)
    assert code == 2
    assert "checkpoint.pt" in line
    assert read_jsonl(sgd_run / "metrics.jsonl") == rows
