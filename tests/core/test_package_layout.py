"""The packages that replaced single modules keep their import surface and entry points.

``etr_core.training``, ``etr_core.cli``, ``etr_core.results`` and ``etr_core.config`` are packages with
one job per module; every name that code imports from the package itself, the ``etr`` console script named in
``pyproject.toml`` and ``python -m etr_core.cli`` (the form ``torchrun`` uses) must keep working.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# names imported from the package (not from its modules) anywhere in the project
SURFACE = {
    "etr_core.training": [
        "METHODS", "MethodSpec", "RunResult", "TrainConfig", "resolve_num_threads", "resolve_tr_config",
        "train", "dataset_for", "copy_config", "DTYPES", "PRESETS", "STOP_REASONS", "SNAPSHOT_EVERY",
        "MAX_THREADS", "_Trainer", "_Threads",
    ],
    "etr_core.cli": ["main", "build_parser", "write_compare_summary", "DEFAULT_COMPARE_BACKPROPS"],
    "etr_core.config": [
        "AUTHORS_DATASETS", "AUTHORS_MODELS", "AUTHORS_PRESETS", "ELLIPSOIDS", "PivotSpec", "TRConfig",
        "WarmupSpec", "authors", "default_gamma2", "fast", "paper_table1", "MAX_HESSIAN_PROBES",
        "BEYOND_PAPER_ELLIPSOIDS", "HESSIAN_BLOCKS", "SOLVERS", "STOP_RULES", "RESIDUAL_NORMS", "ROOTS",
        "ELLIPSOID_UPDATES", "EPS_MODES",
    ],
    "etr_core.results": [
        "LoadedRun", "ResultsWarning", "RunWriter", "atomic_torch_save", "atomic_write", "atomic_write_json",
        "dumps", "find_runs", "fsync_dir", "json_safe", "load_run", "read_jsonl", "run_state",
        "read_json_object", "environment_info", "CONFIG_FILE", "ENVIRONMENT_FILE", "METRICS_FILE",
        "EVALS_FILE", "SUMMARY_FILE", "CHECKPOINT_FILE", "PREVIOUS_CHECKPOINT_FILE",
        "DAMAGED_CHECKPOINT_FILE",
    ],
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_name_code_imports_from_the_package_resolves(module: str) -> None:
    package = importlib.import_module(module)
    missing = [name for name in SURFACE[module] if not hasattr(package, name)]
    assert missing == []
    assert all(hasattr(package, name) for name in getattr(package, "__all__", ()))


def test_console_script_target_is_the_cli_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["etr"].partition(":")
    from etr_core.cli import main

    assert getattr(importlib.import_module(module), attr) is main


@pytest.mark.slow
def test_python_dash_m_runs_the_command() -> None:
    """``python -m etr_core.cli`` (``torchrun ... -m etr_core.cli``): a bad flag is one line, status 2."""
    out = subprocess.run(
        [sys.executable, "-m", "etr_core.cli", "train", "--max-steps", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "etr train: error: argument --max-steps: expected a positive integer, got '0' (see etr train --help)"
    ]
