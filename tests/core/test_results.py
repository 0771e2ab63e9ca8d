"""Run folders: files written, kill-and-resume reproduces an uninterrupted run, atomic checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from etr_core import results
from etr_core.results import atomic_torch_save, load_run, read_jsonl
from etr_core.training import TrainConfig, train


class Killed(Exception):
    """Stands in for SIGKILL: the run stops abruptly, writing nothing more."""


class KillAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, record):
        if record["step"] == self.step:
            raise Killed


def _cfg(method: str, **kwargs) -> TrainConfig:
    base = dict(
        method=method,
        device="cpu",
        max_steps=9,
        eval_every=3,
        checkpoint_every=4,
        data_options={"max_train": 200},
    )
    if method.startswith("TR"):
        base["batch_size"] = 64
    base.update(kwargs)
    return TrainConfig(**base)


@pytest.mark.parametrize("method", ["TR_rms", "Adam"])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, method):
    cfg = _cfg(method)
    reference = train(cfg, run_dir=tmp_path / "ref")

    with pytest.raises(Killed):
        train(cfg, run_dir=tmp_path / "cut", callbacks=[KillAt(6)])  # last checkpoint at step 4
    assert not (tmp_path / "cut" / results.SUMMARY_FILE).exists()
    resumed = train(cfg, run_dir=tmp_path / "cut", resume=True)

    assert resumed.summary["resumed_from_step"] == 4
    assert resumed.losses == reference.losses  # bitwise: float equality of every batch loss
    for key in ("forward", "backward", "hvp", "samples", "train_loss", "test_loss", "train_acc"):
        assert resumed.summary[key] == reference.summary[key], key
    for a, b in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)
    ref_rows = read_jsonl(tmp_path / "ref" / results.METRICS_FILE)
    cut_rows = read_jsonl(tmp_path / "cut" / results.METRICS_FILE)
    assert [r["step"] for r in cut_rows] == list(range(1, 10))
    assert [r["loss"] for r in cut_rows] == [r["loss"] for r in ref_rows]
    assert [e["step"] for e in read_jsonl(tmp_path / "cut" / results.EVALS_FILE)] == [0, 3, 6, 9]
    if method.startswith("TR"):
        assert [r["radius"] for r in cut_rows] == [r["radius"] for r in ref_rows]


def test_run_folder_layout_and_load_run(tmp_path):
    train(_cfg("SGD", max_steps=4), run_dir=tmp_path)
    for name in (
        "config.json",
        "environment.json",
        "metrics.jsonl",
        "evals.jsonl",
        "summary.json",
        "checkpoint.pt",
    ):
        assert (tmp_path / name).exists(), name
    run = load_run(tmp_path)
    assert run.config["method"] == "SGD" and run.summary["stop_reason"] == "max_steps"
    assert list(run.metrics["step"]) == [1, 2, 3, 4]
    assert run.environment["torch"] == torch.__version__
    assert run.label == "SGD (lr=0.1)"


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(tmp_path):
    train(_cfg("SGD", max_steps=2), run_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        train(_cfg("SGD", max_steps=2), run_dir=tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train(_cfg("SGD", max_steps=4, lr=0.5), run_dir=tmp_path, resume=True)
    longer = train(_cfg("SGD", max_steps=4), run_dir=tmp_path, resume=True)  # a longer budget is allowed
    assert len(longer.steps) == 4 and longer.summary["resumed_from_step"] == 2


def test_nonfinite_values_are_written_as_null(tmp_path):
    path = tmp_path / "s.json"
    results.atomic_write_json(path, {"rho": -math.inf, "loss": float("nan"), "ok": 1.5})
    assert json.loads(path.read_text()) == {"rho": None, "loss": None, "ok": 1.5}


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 1, "w": torch.arange(3.0)}, path)
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_torn_last_log_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}]
