"""Live training for the app: runs that belong to the server (paper section 5, Figs. 3, 4, 9, 10).

* :mod:`~etr_core.live.registry` -- the server's runs by id, owners, the caps (CPU budget included),
  the queue, retention;
* :mod:`~etr_core.live.run` -- one run as the server sees it (state, CPU meter, owner);
* :mod:`~etr_core.live.control` -- starting, watching and stopping a run's worker process;
* :mod:`~etr_core.live.worker` / :mod:`~etr_core.live.engine` -- the worker process and the
  interleaved multi-method training inside it;
* :mod:`~etr_core.live.monitor` -- converged / stalled methods, counted optimiser warnings;
* :mod:`~etr_core.live.history` / :mod:`~etr_core.live.summary` -- columnar histories, snapshots,
  the summary table, the race sentence and the CSV.

Nothing here imports a UI framework.
"""

from __future__ import annotations

from etr_core.live.engine import SCHEDULES, RunEngine
from etr_core.live.history import EVAL_COLUMNS, STEP_COLUMNS, STEP_EXTRAS, History, LiveSnapshot
from etr_core.live.monitor import MethodMonitor, StallRule, WarningCounter, loss_floor_for
from etr_core.live.registry import RunRefused, RunRegistry, default_registry, valid_run_id
from etr_core.live.run import LiveRun, new_run_id, stop_all_runs
from etr_core.live.settings import (
    LIMITS,
    MAX_RUNS_ENV,
    MAX_STEPS_CAP_ENV,
    TIME_LIMITS_S,
    comparison_configs,
    env_limit,
    local_dataset_status,
    max_concurrent_runs,
    max_steps_cap,
)
from etr_core.live.summary import (
    SUMMARY_COLUMNS,
    describe_race,
    metrics_csv,
    read_metrics_csv,
    summarize,
    target_reached,
)
from etr_core.live.worker import mp_context

__all__ = [
    "EVAL_COLUMNS",
    "LIMITS",
    "MAX_RUNS_ENV",
    "MAX_STEPS_CAP_ENV",
    "SCHEDULES",
    "STEP_COLUMNS",
    "STEP_EXTRAS",
    "SUMMARY_COLUMNS",
    "TIME_LIMITS_S",
    "History",
    "LiveRun",
    "LiveSnapshot",
    "MethodMonitor",
    "RunEngine",
    "RunRefused",
    "RunRegistry",
    "StallRule",
    "WarningCounter",
    "comparison_configs",
    "default_registry",
    "describe_race",
    "env_limit",
    "local_dataset_status",
    "loss_floor_for",
    "max_concurrent_runs",
    "max_steps_cap",
    "metrics_csv",
    "new_run_id",
    "read_metrics_csv",
    "start_worker_server",
    "stop_all_runs",
    "summarize",
    "target_reached",
    "valid_run_id",
]


def start_worker_server() -> float:
    """Start the fork server that live-run workers fork from (it imports torch and the training code
    once), so the first Start does not wait for it; returns the seconds spent. Nothing is imported
    into, or computed in, the calling process."""
    import multiprocessing.forkserver
    import time

    started = time.perf_counter()
    if mp_context().get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()
    return time.perf_counter() - started
