"""Hostile use of the CLI for the new methods and figures: ``etr train --method TR_hess|ARC_rms``,
``--preset fast|authors``, ``etr compare`` with them, ``etr reproduce FIGURE`` with absurd flags and
broken data, ``etr plot`` on empty or half-written folders, a kill during ``etr reproduce`` and the
rerun, and a few steps of the paper's networks on the real data when the data folder is present.

The promise under test (docs/training.md, "Errors"): a bad input gives exit 2 and one line naming the
flag or file and the fix, never a traceback, and nothing written is corrupted. Known defects are
``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import etr_core.reproduce as reproduce_pkg
from etr_core.cli import main
from tests.core.cli_support import error_line, run_cli
from tests.core.test_data_files import idx_bytes

QUICK = ["--max-train", "200", "--eval-every", "2", "--device", "cpu", "--no-progress", "--threads", "1"]
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"






@pytest.fixture
def no_runs(monkeypatch):
    """Any reproduce that gets past its checks fails at once instead of training for minutes."""

    def reached(problem, *args, **kwargs):
        raise AssertionError(f"reproduce started training {problem}")

    monkeypatch.setattr(reproduce_pkg, "_train_problem", reached)


# --- etr reproduce: absurd flags ----------------------------------------------------------------------
REPRO = ["reproduce", "fig3", "--quick", "--dataset", "digits", "--no-progress"]
BAD_REPRODUCE = [
    (["--budget", "0"], "--budget"),
    (["--budget", "-5"], "--budget"),
    (["--budget", "1e3"], "--budget"),
    (["--budget", "nan"], "--budget"),
    (["--seeds", ""], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "2.5"], "--seeds"),
    (["--threads", "0"], "--threads"),
    (["--methods", "TR_hess"], "methods"),
    (["--methods", "Adam"], "methods"),
    (["--networks", "resnet18"], "resnet18"),
    (["--dataset", "imagenet"], "dataset"),
    (["--device", "tpu"], "--device"),
    (["--out", ""], "--out"),
    (["--data-root", ""], "--data-root"),
]


@pytest.mark.parametrize(("flags", "name"), BAD_REPRODUCE, ids=[" ".join(f) for f, _ in BAD_REPRODUCE])
def test_reproduce_bad_flags_are_one_line_exit_2_naming_the_flag(flags, name, tmp_path, capsys, no_runs):
    code, err = run_cli([*REPRO, "--out", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and name in error_line(err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def test_reproduce_unknown_figure_lists_the_figures(tmp_path, capsys, no_runs):
    code, err = run_cli(["reproduce", "fig5", "--out", str(tmp_path)], capsys)
    line = error_line(err)
    assert code == 2 and "fig5" in line and "fig3" in line and "fig11" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_reproduce_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    code, err = run_cli([*REPRO, "--device", "cuda", "--out", str(tmp_path / "out")], capsys)
    line = error_line(err)
    assert code == 2 and "cuda" in line and "cpu" in line
    assert not list((tmp_path / "out").rglob("*.json")) if (tmp_path / "out").exists() else True


def test_reproduce_an_absurd_seed_count_is_one_line(tmp_path, capsys, no_runs):
    code, err = run_cli([*REPRO, "--seeds", str(2**40), "--out", str(tmp_path)], capsys)
    assert code == 2 and "--seeds" in error_line(err)


@pytest.mark.parametrize("flag", ["--methods", "--networks"])
def test_reproduce_an_empty_list_is_refused_not_replaced_by_all(flag, tmp_path, capsys, no_runs):
    code, err = run_cli([*REPRO, flag, "", "--out", str(tmp_path)], capsys)
    assert code == 2 and flag in error_line(err)


def test_compare_an_empty_seed_list_is_refused(tmp_path, capsys):
    code, err = run_cli(["compare", "--methods", "TR_hess", "--seed-list", "", "--max-steps", "1", *QUICK,
                         "--html-only", "--out", str(tmp_path / "cmp")], capsys)
    assert code == 2 and "--seed-list" in error_line(err)


# --- etr reproduce: broken data ---------------------------------------------------------------------------
_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _write_fashion(root: Path, overrides: dict[str, bytes] | None = None, n_train: int = 64) -> Path:
    """A small valid fashion_mnist folder (gzip IDX), with ``overrides[key]`` raw bytes for one file."""
    rng = np.random.default_rng(0)
    folder = root / "fashion_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (16, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 16, dtype=np.uint8),
    }
    for key, stem in _STEMS.items():
        data = gzip.compress(idx_bytes(arrays[key]), mtime=0)
        if overrides and key in overrides:
            data = overrides[key]
        (folder / f"{stem}.gz").write_bytes(data)
    return folder


def _truncated_gzip() -> bytes:
    images = np.random.default_rng(1).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    full = gzip.compress(idx_bytes(images), mtime=0)
    return full[: len(full) // 2]


@pytest.mark.parametrize(
    ("key", "payload"),
    [
        ("train_x", _truncated_gzip()),
        ("train_x", gzip.compress(b"\x13\x37" * 200, mtime=0)),  # gzip of garbage
        ("train_y", b"not gzip at all"),
        ("test_x", gzip.compress(idx_bytes(np.zeros((16, 28, 27), dtype=np.uint8)), mtime=0)),  # wrong shape
        ("train_y", gzip.compress(idx_bytes(np.full(64, 200, dtype=np.uint8)), mtime=0)),  # label range
    ],
    ids=["truncated_gzip", "garbage", "not_gzip", "wrong_shape", "bad_labels"],
)
def test_reproduce_with_a_broken_idx_file_names_the_file(key, payload, tmp_path, capsys):
    folder = _write_fashion(tmp_path / "data", {key: payload})
    out = tmp_path / "out"
    code, err = run_cli(["reproduce", "fig3", "--quick", "--data-root", str(tmp_path / "data"), "--networks",
                         "mlp", "--methods", "TR_rms", "--seeds", "1", "--budget", "20", "--no-progress",
                         "--device", "cpu", "--out", str(out)], capsys)
    line = error_line(err)
    assert code == 2 and str(folder / f"{_STEMS[key]}.gz") in line
    assert not list(out.rglob("*.json")) if out.exists() else True


def test_reproduce_without_the_dataset_names_the_folder_to_fill(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(["reproduce", "fig3", "--quick", "--data-root", str(empty), "--networks", "mlp",
                         "--out", str(tmp_path / "out")], capsys)
    line = error_line(err)
    assert code == 2 and str(empty / "fashion_mnist") in line and "train-images-idx3-ubyte" in line


@pytest.mark.parametrize("kind", ["file", "file_parent"])
def test_reproduce_out_that_is_a_file_is_one_line_and_the_file_is_untouched(kind, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    out = target if kind == "file" else target / "sub"
    code, err = run_cli([*REPRO, "--networks", "mlp", "--methods", "TR_rms", "--seeds", "1", "--budget", "10",
                         "--device", "cpu", "--out", str(out)], capsys)
    assert code == 2 and str(target) in error_line(err)
    assert target.read_text() == "keep me\n"


@pytest.mark.slow
def test_reproduce_table_names_the_device_the_runs_used(tmp_path):
    result = reproduce_pkg.reproduce(reproduce_pkg.ReproduceRequest(
        "fig3", dataset="digits", seeds=1, budget=10, networks=("mlp",), methods=("TR_rms",),
        out=str(tmp_path), progress=False, device="auto", png=False, threads=1))
    used = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"Device: {used}" in result.markdown


# --- etr train / compare with the new methods -------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["--method", "TR_hess", "--tr-option", "hessian_probes=0"], "hessian_probes"),
        (["--method", "TR_hess", "--tr-option", "hessian_probes=nan"], "hessian_probes"),
        (["--method", "TR_hess", "--tr-option", "hessian_block=row"], "hessian_block"),
        (["--method", "TR_rms", "--tr-option", "hessian_fraction=0"], "hessian_fraction"),
        (["--method", "TR_rms", "--tr-option", "hessian_fraction=2"], "hessian_fraction"),
        (["--method", "TR_rms", "--tr-option", "ellipsoid=hessian"], "ellipsoid"),
        (["--method", "TR_hess", "--preset", "quick"], "--preset"),
        (["--method", "ARC_rms", "--tr-option", "sigma"], "sigma"),
        (["--method", "SGD", "--preset", "fast"], "preset"),
        (["--method", "ARC", "--max-steps", "1"], "--method"),
    ],
)
def test_train_bad_options_for_the_new_methods_are_one_line(argv, name, tmp_path, capsys):
    code, err = run_cli(["train", *argv, "--max-steps", "1", *QUICK, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and name in error_line(err)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_train_tr_hess_with_the_authors_preset_names_the_flags(tmp_path, capsys):
    code, err = run_cli(["train", "--method", "TR_hess", "--preset", "authors", "--max-steps", "1", *QUICK,
                         "--out", str(tmp_path / "run")], capsys)
    line = error_line(err)
    assert code == 2 and "--preset" in line and "TR_hess" in line


@pytest.mark.parametrize(
    "argv",
    [["--preset", "fast"], ["--tr-option", "radius=0.1"], ["--tr-option", "eta1=0.5"],
     ["--tr-option", "gamma1=3"]],
    ids=["preset_fast", "radius", "eta1", "gamma1"],
)
def test_arc_refuses_trust_region_settings_it_does_not_use(argv, tmp_path, capsys):
    code, err = run_cli(["train", "--method", "ARC_rms", *argv, "--max-steps", "1", *QUICK,
                         "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and argv[-1].split("=")[0] in error_line(err)


@pytest.mark.slow
def test_compare_with_tr_hess_and_arc_writes_a_row_per_method(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--methods", "TR_hess,ARC_rms", "--seeds", "1", "--max-backprops", "40",
                 *QUICK, "--html-only", "--out", str(out)])
    assert code == 0
    text = (out / "summary.md").read_text()
    assert "| TR_hess |" in text and "| ARC_rms |" in text
    for method in ("TR_hess", "ARC_rms"):
        summary = json.loads((out / method / "seed0" / "summary.json").read_text())
        assert summary["backprops"] == summary["backward"] + summary["hvp"] >= 40


# --- etr plot on empty and half-written folders ------------------------------------------------------------
def test_plot_on_an_empty_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    argv = ["plot", str(tmp_path / "runs"), "--html-only", "--out", str(tmp_path / "fig")]
    code, err = run_cli(argv, capsys)
    assert code == 2 and str(tmp_path / "runs") in error_line(err)


@pytest.fixture
def two_runs(tmp_path):
    root = tmp_path / "runs"
    for method in ("TR_hess", "ARC_rms"):
        argv = ["train", "--method", method, "--max-steps", "3", *QUICK, "--out", str(root / method)]
        assert main(argv) == 0
    return root


@pytest.mark.slow
def test_plot_a_run_with_a_half_written_config_names_the_file(two_runs, tmp_path, capsys):
    config = two_runs / "ARC_rms" / "config.json"
    config.write_text(config.read_text()[:40])
    code, err = run_cli(["plot", str(two_runs), "--html-only", "--out", str(tmp_path / "fig")], capsys)
    assert code == 2 and str(config) in error_line(err)


@pytest.mark.slow
def test_plot_a_run_whose_metrics_end_in_a_torn_line_still_plots(two_runs, tmp_path, capsys):
    metrics = two_runs / "TR_hess" / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 25])  # a kill in the middle of the last line
    (two_runs / "TR_hess" / "summary.json").unlink()
    code, _ = run_cli(["plot", str(two_runs), "--html-only", "--out", str(tmp_path / "fig")], capsys)
    assert code == 0 and (tmp_path / "fig" / "train_loss_vs_backprops.html").exists()
    assert metrics.read_text() == text[: len(text) - 25]  # plotting never rewrites a run


# --- a real kill during etr reproduce, then the same command again -----------------------------------------
_REPRODUCE_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from etr_core.reproduce import ReproduceRequest, reproduce
reproduce(ReproduceRequest("fig3", dataset="digits", seeds=1, budget=int(sys.argv[2]), networks=("mlp",),
          methods=("TR_rms",), out=sys.argv[1], progress=False, device="cpu", png=False, threads=1))
"""


@pytest.mark.slow
def test_sigkill_during_reproduce_then_rerun_ends_where_an_uninterrupted_run_ends(tmp_path):
    """SIGKILL (no handler runs) once the first checkpoint is on disk; the rerun resumes from it. The
    rerun's metrics equal an uninterrupted run's, line for line, apart from the clock."""
    budget = 300
    killed = tmp_path / "killed"
    run = killed / "runs" / "digits-mlp_small" / "TR_rms" / "seed0"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _REPRODUCE_SCRIPT, str(killed), str(budget)], env=env)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before the kill; lower the poll interval"

    request = dict(dataset="digits", seeds=1, budget=budget, networks=("mlp",), methods=("TR_rms",),
                   progress=False, device="cpu", png=False, threads=1)
    reproduce_pkg.reproduce(reproduce_pkg.ReproduceRequest("fig3", out=str(killed), **request))
    reproduce_pkg.reproduce(reproduce_pkg.ReproduceRequest("fig3", out=str(tmp_path / "clean"), **request))
    clean = tmp_path / "clean" / "runs" / "digits-mlp_small" / "TR_rms" / "seed0"

    def lines(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert lines(run) == lines(clean)
    a, b = (json.loads((f / "summary.json").read_text()) for f in (run, clean))
    assert a["resumed_from_step"] is not None
    for key in ("step", "backprops", "train_loss", "train_acc", "test_loss", "accepted"):
        assert a[key] == b[key], key


# --- the real data, when present ---------------------------------------------------------------------------
def _need(dataset: str) -> None:
    if not (SHARED_DATA / dataset).is_dir():
        pytest.skip(f"{SHARED_DATA / dataset} absent")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("method", ["TR_hess", "ARC_rms"])
def test_new_methods_take_a_few_steps_of_the_paper_mlp_on_real_data_via_etr_data(
    dataset, method, tmp_path, monkeypatch
):
    _need(dataset)
    monkeypatch.setenv("ETR_DATA", str(SHARED_DATA))
    out = tmp_path / "run"
    assert main(["train", "--method", method, "--dataset", dataset, "--model", "mlp_paper",
                 "--max-steps", "3", "--max-train", "1024", "--eval-every", "3", "--device", "cpu",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"] == 101_770 and summary["step"] == 3
    assert summary["backprops"] == summary["backward"] + summary["hvp"] and summary["hvp"] >= 3
    assert np.isfinite(summary["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["fashion_mnist"])
def test_reproduce_on_real_data_through_data_root_labels_the_data(dataset, tmp_path):
    _need(dataset)
    result = reproduce_pkg.reproduce(reproduce_pkg.ReproduceRequest(
        "fig3", dataset=dataset, quick=True, seeds=1, budget=20, networks=("mlp",), methods=("TR_rms",),
        data_root=str(SHARED_DATA), out=str(tmp_path), progress=False, device="cpu", png=False, threads=1))
    label = result.markdown.split("Data: ", 1)[1].split(". Protocol", 1)[0]
    if dataset == "fashion_mnist":
        assert label == "Fashion-MNIST (reconstructed split)"
    else:
        assert "MNIST" in label and "Fashion" not in label and "reconstructed" not in label
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["parameters"] == 101_770 and summary["backprops"] >= 20
