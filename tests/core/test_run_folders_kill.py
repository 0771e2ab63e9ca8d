"""Real kills: a training process is SIGKILLed during a checkpoint write or before its first checkpoint.

The oracle is an uninterrupted in-process run of the same configuration: the continued run must equal
it bit for bit, and the folder must be usable without deleting anything by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from etr_core import results
from etr_core.cli import main
from etr_core.results import read_jsonl, run_state
from etr_core.training import TrainConfig, train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = dict(
    method="SGD", device="cpu", max_steps=9, eval_every=3, checkpoint_every=4, data_options={"max_train": 200}
)

# Runs CONFIG into a folder and SIGKILLs itself at the moment MODE names:
#   write:  halfway through writing the second checkpoint (step 8)
#   rename: after checkpoint.pt became checkpoint.prev.pt, before the new file takes its place
#   early:  at step 3, before the first checkpoint (step 4)
_CHILD = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from etr_core.training import TrainConfig, train
config, run_dir, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
saves = {"n": 0}
real_save, real_replace = torch.save, os.replace
def save(obj, handle, *args, **kwargs):
    saves["n"] += 1
    if mode == "write" and saves["n"] == 2:
        handle.write(b"\0" * 65536)
        handle.flush()
        die()
    return real_save(obj, handle, *args, **kwargs)
def replace(src, dst):
    real_replace(src, dst)
    if mode == "rename" and saves["n"] == 2 and str(dst).endswith("checkpoint.prev.pt"):
        die()
torch.save, os.replace = save, replace
callbacks = [lambda r: die() if mode == "early" and r.get("event") == "step" and r["step"] == 3 else None]
train(TrainConfig(**config), run_dir=run_dir, callbacks=callbacks)
"""


def _killed_run(run_dir: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(CONFIG), str(run_dir), mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return train(TrainConfig(**CONFIG), run_dir=tmp_path_factory.mktemp("ref") / "run")


def _assert_equal_runs(a, b) -> None:
    assert a.losses == b.losses
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("mode", ["write", "rename"])
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path, reference, mode):
    run = tmp_path / "run"
    _killed_run(run, mode)
    stale = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0
    assert (run / "checkpoint.pt").exists() == (mode == "write")
    resumed = train(TrainConfig(**CONFIG), run_dir=run, resume=True)
    assert resumed.summary["resumed_from_step"] == 4
    _assert_equal_runs(resumed, reference)
    assert not list(run.glob(".*.tmp"))
    ref_rows = read_jsonl(reference.run_dir / results.METRICS_FILE)
    assert [r["loss"] for r in read_jsonl(run / results.METRICS_FILE)] == [r["loss"] for r in ref_rows]


def test_sigkill_before_the_first_checkpoint_leaves_a_folder_that_starts_again(tmp_path, reference, capsys):
    run = tmp_path / "run"
    _killed_run(run, "early")
    assert run_state(run) == "unstarted"
    again = tmp_path / "again"
    shutil.copytree(run, again)
    # continue with the folder's own configuration: it starts from step 0, nothing to delete by hand
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    metrics = read_jsonl(run / results.METRICS_FILE)
    assert [r["step"] for r in metrics] == list(range(1, 10))
    assert [r["loss"] for r in metrics] == reference.losses
    # or start it afresh with the same command line
    argv = ["train", "--method", "SGD", "--max-steps", "9", "--eval-every", "3", "--checkpoint-every", "4"]
    assert main([*argv, "--max-train", "200", "--device", "cpu", "--no-progress", "--out", str(again)]) == 0
    assert [r["loss"] for r in read_jsonl(again / results.METRICS_FILE)] == reference.losses
