"""Hostile-user variants for ``etr reproduce --jobs N`` and the ``ETR_CG_LOOP`` setting.

Each test is something a researcher does to a long parallel reproduction (kills a worker, stops the
command, sets an environment variable with a typo or in another spelling) with the outcome the docs
promise (etr_core.reproduce.pool, etr_core.errors): one line and a non-zero exit for a failed run,
the other runs unharmed, a prompt stop, and every accepted ``ETR_CG_LOOP`` spelling meaning the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SLUG = "digits-mlp_small"


def _reproduce(out: Path, *, seeds: int, budget: int, jobs: int) -> list[str]:
    """``etr reproduce fig3`` of TR_rms on digits, CPU, one thread per run, no progress bars."""
    return [
        sys.executable, "-m", "etr_core.cli", "reproduce", "fig3", "--dataset", "digits",
        "--networks", "mlp", "--methods", "TR_rms", "--seeds", str(seeds), "--budget", str(budget),
        "--jobs", str(jobs), "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out),
    ]


def _popen(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run_dirs(out: Path, seeds: int) -> list[Path]:
    return [out / "runs" / SLUG / "TR_rms" / f"seed{s}" for s in range(seeds)]


def _wait_for_metrics(proc: subprocess.Popen, dirs: list[Path], timeout: float = 90.0) -> None:
    """Block until every folder of ``dirs`` has a non-empty metrics.jsonl (its run is training)."""
    deadline = time.monotonic() + timeout
    while not all((d / "metrics.jsonl").exists() and (d / "metrics.jsonl").stat().st_size > 0 for d in dirs):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "runs did not start"
        time.sleep(0.05)


def _workers(pid: int) -> list[int]:
    """Process ids of the pool's worker processes (spawned children), not the resource tracker."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, children):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"pipe_handle" in cmdline:
            found.append(child)
    return found


def _training(
    out: Path, *, seeds: int, budget: int, started: int
) -> tuple[subprocess.Popen, list[Path], list[int]]:
    """``etr reproduce --jobs 2`` of ``seeds`` runs, once the first ``started`` runs are training:
    the command, every run folder and the worker processes."""
    dirs = _run_dirs(out, seeds)
    proc = _popen(_reproduce(out, seeds=seeds, budget=budget, jobs=2))
    _wait_for_metrics(proc, dirs[:started])
    return proc, dirs, _workers(proc.pid)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_a_killed_worker_fails_only_its_run_in_one_line(tmp_path):
    proc, dirs, workers = _training(tmp_path, seeds=3, budget=1500, started=1)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode not in (0, None)
    assert "Traceback" not in err, err
    finished = [d for d in dirs if (d / "summary.json").exists()]
    assert len(finished) == 2, (finished, err)  # the killed run alone is missing
    for folder in finished:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["stop_reason"] == "max_backprops" and summary["backprops"] >= 1500


def test_a_bad_cg_loop_with_jobs_is_one_line_and_exit_2(tmp_path):
    proc = _popen(_reproduce(tmp_path, seeds=2, budget=20, jobs=2), ETR_CG_LOOP="gpu")
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "ETR_CG_LOOP" in lines[0], err


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> dict:
    """``etr reproduce --jobs 2`` of four long runs, SIGTERM to the command once two are training."""
    out = tmp_path_factory.mktemp("stopped")
    dirs = _run_dirs(out, 4)
    proc = _popen(_reproduce(out, seeds=4, budget=200_000, jobs=2))
    _wait_for_metrics(proc, dirs[:2])
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    return {"seconds": time.monotonic() - start, "code": proc.returncode, "err": err, "dirs": dirs}


def test_sigterm_stops_the_command_within_seconds(stopped):
    assert stopped["code"] == 130, stopped["err"]
    assert stopped["seconds"] < 10.0, stopped


def test_no_run_starts_after_the_command_was_stopped(stopped):
    assert stopped["code"] == 130, stopped["err"]
    started = [d.name for d in stopped["dirs"][2:] if d.exists()]
    assert started == [], stopped["err"]


@pytest.mark.parametrize("value", ["Compiled", " compiled", "COMPILED"])
def test_every_accepted_spelling_of_compiled_compiles(monkeypatch, value):
    from etr_core.subproblem import steihaug_device as sd

    monkeypatch.setattr(sd, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # no compiler needed to choose
    cuda = torch.device("cuda")
    monkeypatch.setenv("ETR_CG_LOOP", "compiled")
    assert sd.update_for(cuda) is not sd.cg_update  # the compiled wrapper
    monkeypatch.setattr(sd, "_COMPILED", {})
    monkeypatch.setenv("ETR_CG_LOOP", value)
    assert sd.cg_loop() == "compiled"  # accepted as compiled ...
    assert sd.update_for(cuda) is not sd.cg_update  # ... so it must select the compiled update


def test_a_damaged_checkpoint_in_one_run_leaves_the_others_running(tmp_path):
    first = _popen(_reproduce(tmp_path, seeds=2, budget=20, jobs=1))
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    bad, good = _run_dirs(tmp_path, 2)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (bad / name).exists():
            (bad / name).write_bytes(b"")  # e.g. a copy of the folders stopped half-way
    proc = _popen(_reproduce(tmp_path, seeds=2, budget=40, jobs=2))
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and "empty" in lines[0], err
    summary = json.loads((good / "summary.json").read_text())
    assert summary["stop_reason"] == "max_backprops" and summary["backprops"] >= 40


def test_a_bad_cg_loop_is_refused_by_etr_train_for_a_first_order_method(tmp_path):
    cmd = [
        sys.executable, "-m", "etr_core.cli", "train", "--dataset", "digits", "--method", "SGD",
        "--max-steps", "2", "--device", "cpu", "--threads", "1", "--no-progress",
        "--out", str(tmp_path / "r"),
    ]
    proc = _popen(cmd, ETR_CG_LOOP="gpu")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "ETR_CG_LOOP" in lines[0], err


def test_each_finished_run_line_has_one_counter(tmp_path):
    cmd = [a for a in _reproduce(tmp_path, seeds=2, budget=20, jobs=2) if a != "--no-progress"]
    proc = _popen(cmd)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.endswith(": done")]
    assert len(lines) == 2, err
    for line in lines:
        assert line.count("/2]") == 1, line


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param("DataFileError", id="DataFileError"),
        pytest.param("CheckpointError", id="CheckpointError"),
        pytest.param("RunFolderError", id="RunFolderError"),
        pytest.param("RunFolderBusyError", id="RunFolderBusyError"),
        pytest.param("RunError", id="RunError"),
    ],
)
def test_every_user_error_crosses_a_process_boundary(exc):
    """Workers send their errors back pickled: each keeps its class, message and fields."""
    import pickle

    from etr_core import errors

    cls = getattr(errors, exc)
    args = {"DataFileError": ("d/x.idx", "wrong magic"), "CheckpointError": ("r/checkpoint.pt", "empty file"),
            "RunError": ("run r/seed0: ValueError: bad", True)}.get(exc, ("r: in use",))
    original = cls(*args)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls and str(copy) == str(original)
    assert errors.user_message(copy) == errors.user_message(original)
    for field in ("path", "problem", "user_error"):
        assert getattr(copy, field, None) == getattr(original, field, None)


def test_a_run_error_is_one_line_only_when_every_failure_was_a_user_error():
    from etr_core.errors import RunError, user_message

    assert user_message(RunError("run r/seed0: FileNotFoundError: no data", user_error=True)) == (
        "run r/seed0: FileNotFoundError: no data"
    )
    assert user_message(RunError("run r/seed0: IndexError: 3")) is None  # a bug keeps its traceback


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_sighup_stops_the_command_and_its_workers_like_sigterm(tmp_path):
    proc, dirs, workers = _training(tmp_path, seeds=3, budget=200_000, started=2)
    proc.send_signal(signal.SIGHUP)  # the terminal was closed
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 20
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers)
    assert not dirs[2].exists()  # the queued run never started


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_workers_stop_when_the_command_is_killed_and_a_rerun_finishes(tmp_path):
    proc, _, workers = _training(tmp_path, seeds=2, budget=200_000, started=2)
    assert len(workers) == 2
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), "workers trained on after their command was killed"
    rerun = _popen(_reproduce(tmp_path, seeds=2, budget=60, jobs=2))
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err  # no folder left locked by an orphan


@pytest.mark.parametrize("content", ["", "[1, 2]", "{not json"], ids=["empty", "a list", "damaged"])
def test_a_damaged_summary_resumes_its_run_with_one_warning_line(tmp_path, content):
    first = _popen(_reproduce(tmp_path, seeds=2, budget=20, jobs=1))
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    summary = _run_dirs(tmp_path, 2)[1] / "summary.json"
    summary.write_text(content)
    proc = _popen(_reproduce(tmp_path, seeds=2, budget=20, jobs=2))
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "Traceback" not in err, err
    warned = [line for line in err.splitlines() if "summary.json" in line]
    assert warned and all(line.startswith("warning: ") for line in warned), err
    assert "ResultsWarning" not in err and "warnings.warn" not in err, err  # one line each, workers too
    data = json.loads(summary.read_text())
    assert data["stop_reason"] == "max_backprops" and data["backprops"] >= 20
