"""`etr reproduce --jobs N`: runs in parallel processes give the sequential command's results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from etr_core.reproduce import ReproduceRequest, reproduce
from etr_core.reproduce.pool import MAX_JOBS, RunError, run_jobs, threads_per_job
from etr_core.reproduce.protocol import problems_for
from etr_core.reproduce.runner import RunOptions, config_for, run_folder
from tests.core.cli_support import error_line, run_cli


def _summaries(root: Path) -> dict[str, dict]:
    paths = sorted((root / "runs").rglob("summary.json"))
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in paths}


def _loss_cells(markdown: str) -> list[list[str]]:
    """Method, seeds, final and min loss of every table row (the seconds columns differ)."""
    rows = [row for row in markdown.splitlines() if row.startswith("| ") and not row.startswith("| method")]
    return [[c.strip() for c in row.strip("|").split("|")][:4] for row in rows]


@pytest.mark.slow
def test_parallel_runs_equal_the_sequential_command_bit_for_bit(tmp_path):
    def request(out: Path, jobs: int) -> ReproduceRequest:
        return ReproduceRequest(
            "fig4", dataset="digits", seeds=2, budget=40, networks=("mlp",), out=str(out), progress=False,
            device="cpu", png=False, methods=("TR_rms", "Adagrad"), jobs=jobs, threads=1,
        )

    sequential = reproduce(request(tmp_path / "one", 1))
    parallel = reproduce(request(tmp_path / "three", 3))
    one, three = _summaries(tmp_path / "one"), _summaries(tmp_path / "three")
    assert sorted(one) == sorted(three) and len(one) == 2 + 2 + 6  # TR_rms, Adagrad, Adagrad's grid
    for name, summary in one.items():
        for key in ("train_loss", "backprops", "step", "stop_reason"):
            assert three[name][key] == summary[key], (name, key)
    steps = [json.loads((tmp_path / d / "runs" / "digits-mlp_small" / "step_sizes.json").read_text())
             for d in ("one", "three")]
    assert steps[0] == steps[1]
    cells = _loss_cells(sequential.markdown)
    assert len(cells) == 2 and cells == _loss_cells(parallel.markdown)
    stamps = {p: os.path.getmtime(p) for p in (tmp_path / "three").rglob("summary.json")}
    reproduce(request(tmp_path / "three", 3))  # a rerun skips every finished run
    assert {p: os.path.getmtime(p) for p in stamps} == stamps


@pytest.mark.slow
def test_a_failing_run_names_its_folder_and_the_others_finish(tmp_path):
    problem = problems_for("fig3", "digits", seeds=1, budget=20, networks=("mlp",))[0]
    options = RunOptions(tmp_path, device="cpu", progress=False, threads=1)
    good = config_for(problem, "TR_rms", 0, None, options)
    bad = config_for(problem, "TR_uni", 0, None, options)
    import dataclasses

    bad = dataclasses.replace(bad, dataset="mnist", model="mlp_paper", data_root=str(tmp_path / "no-data"))
    jobs = [(good, run_folder(tmp_path, "TR_rms", None, 0), "good"), (bad, tmp_path / "bad" / "seed0", "bad")]
    with pytest.raises(RunError, match=r"run .*bad.*seed0: FileNotFoundError"):
        run_jobs(jobs, 2, show=False)
    summary = json.loads((run_folder(tmp_path, "TR_rms", None, 0) / "summary.json").read_text())
    assert summary["stop_reason"] == "max_backprops" and summary["backprops"] >= 20


def test_threads_per_job_shares_the_cores():
    cores = os.cpu_count() or 1
    assert threads_per_job(1, None) is None
    assert threads_per_job(4, 3) == 3
    assert threads_per_job(2 * cores, None) == 1
    assert threads_per_job(2, None) == max(1, cores // 2)
    with pytest.raises(ValueError, match="jobs must be between 1 and"):
        run_jobs([], 0)


@pytest.mark.parametrize("value", ["0", "-2", str(MAX_JOBS + 1), "many"])
def test_cli_rejects_bad_job_counts_in_one_line(value, capsys):
    code, err = run_cli(["reproduce", "fig3", "--dataset", "digits", "--jobs", value], capsys)
    assert code == 2
    assert "--jobs" in error_line(err)


@pytest.mark.slow
def test_sigterm_to_the_command_stops_every_worker(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cmd = [
        sys.executable, "-m", "etr_core.cli", "reproduce", "fig3", "--dataset", "digits", "--networks", "mlp",
        "--methods", "TR_rms", "--seeds", "2", "--budget", "200000", "--jobs", "2", "--threads", "1",
        "--device", "cpu", "--out", str(tmp_path), "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "runs" / "digits-mlp_small" / "TR_rms" / f"seed{s}" / "metrics.jsonl" for s in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(p.exists() and p.stat().st_size > 0 for p in logs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to continue" in err
    sizes = [p.stat().st_size for p in logs]
    time.sleep(3)
    assert [p.stat().st_size for p in logs] == sizes  # no worker trains on
    assert not any((p.parent / "summary.json").exists() for p in logs)
