"""Server-wide limits of live training (environment variables) and building a comparison.

Every limit is read from the environment when first needed, so an operator sets them where the
server starts (``ETR_LIVE_MAX_RUNS=1 streamlit run app.py``). Bad values raise ``ValueError`` naming
the variable, its value and the allowed range.

Worker priority: a worker lowers its priority by ``ETR_LIVE_NICE`` (0 keeps the normal priority)
and, where that is above 0 and ``ETR_LIVE_SCHED_IDLE`` is 1 (the default), on Linux also takes the
``SCHED_IDLE`` policy, so it only computes when nothing else wants the CPU (plain nice where that
policy does not exist or is refused); with ``ETR_LIVE_YIELD=1`` (default 0) workers also pause
between steps while the server draws a page (:mod:`etr_core.live.foreground`). Polling:
:func:`poll_seconds` spaces a page's polls by the ``ETR_LIVE_POLL_*`` settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from etr_core._validation import check_choice

__all__ = [
    "LIMITS",
    "TIME_LIMITS_S",
    "comparison_configs",
    "env_limit",
    "local_dataset_status",
    "max_concurrent_runs",
    "max_steps_cap",
    "poll_seconds",
]

# the live page's choices for a run's time limit (seconds of wall clock for the whole run; the
# worker uses one core, so at most this many seconds of CPU)
TIME_LIMITS_S = (5, 10, 20, 30, 60, 120, 300)

# variable -> (default, minimum, maximum, meaning); None as default means "no limit"
LIMITS: dict[str, tuple[int | None, int, int, str]] = {
    "ETR_LIVE_MAX_RUNS": (2, 1, 64, "runs that train at the same time on this server"),
    "ETR_LIVE_MAX_RUNS_PER_SESSION": (1, 1, 64, "runs one browser session may have training or queued"),
    "ETR_LIVE_MAX_QUEUE": (16, 0, 1000, "runs that may wait for a training slot"),
    "ETR_LIVE_KEEP_RUNS": (20, 1, 10_000, "finished runs kept for re-attaching"),
    "ETR_LIVE_KEEP_SECONDS": (3600, 1, 7 * 86400, "seconds a finished run is kept after it ended"),
    "ETR_LIVE_MAX_ROWS": (2_000_000, 1000, 10**9, "recorded rows kept over all finished runs"),
    "ETR_LIVE_QUEUE_SECONDS": (900, 1, 86400, "seconds a run may wait for a slot before it gives up"),
    "ETR_LIVE_UNWATCHED_SECONDS": (60, 1, 86400, "seconds a queued run nobody looks at is kept"),
    "ETR_LIVE_NICE": (10, 0, 19, "CPU priority decrease of worker processes (0: normal priority)"),
    "ETR_LIVE_SCHED_IDLE": (1, 0, 1, "1: workers with a nice above 0 also take Linux's SCHED_IDLE policy"),
    "ETR_LIVE_YIELD": (0, 0, 1, "1: live workers pause between steps while the server draws a page"),
    "ETR_LIVE_YIELD_TAIL_MS": (1500, 0, 60_000, "ms workers keep pausing after a page's script run"),
    "ETR_LIVE_YIELD_MAX_SECONDS": (5, 1, 600, "seconds a worker pauses for page loads at a stretch"),
    "ETR_LIVE_POLL_SECONDS": (1, 1, 60, "seconds between a training tab's polls while its run is alone"),
    "ETR_LIVE_POLL_MAX_SECONDS": (3, 1, 600, "seconds between a training tab's polls at most"),
    "ETR_LIVE_POLL_QUEUED_SECONDS": (5, 1, 600, "seconds between a queued tab's polls"),
    "ETR_LIVE_MAX_STEPS_CAP": (None, 1, 10**9, "steps per method at most"),
}
MAX_RUNS_ENV = "ETR_LIVE_MAX_RUNS"
MAX_STEPS_CAP_ENV = "ETR_LIVE_MAX_STEPS_CAP"


def env_limit(name: str) -> int | None:
    """The value of limit ``name`` (a key of :data:`LIMITS`) from the environment, else its default."""
    default, low, high, meaning = LIMITS[name]
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{name} ({meaning}) must be an integer in [{low}, {high}], got {raw!r}")
    return value


def max_steps_cap() -> int | None:
    """Server-wide cap on steps per method (``$ETR_LIVE_MAX_STEPS_CAP``); ``None`` when unset."""
    return env_limit(MAX_STEPS_CAP_ENV)


def max_concurrent_runs() -> int:
    """Runs that may train at once on this server (``$ETR_LIVE_MAX_RUNS``, 1..64, default 2)."""
    return int(env_limit(MAX_RUNS_ENV))


def poll_seconds(queued: bool, active_runs: int) -> float:
    """Seconds between two polls of a tab that watches an active run (queued, starting or training).

    A queued tab shows one status line and checks every ``$ETR_LIVE_POLL_QUEUED_SECONDS`` (default
    5). A training tab redraws its charts every ``$ETR_LIVE_POLL_SECONDS`` (default 1) while at most
    :func:`max_concurrent_runs` runs are active on the server, and one such interval more for each
    further ``max_concurrent_runs()`` active runs (``base * ceil(active_runs / max_runs)``), but
    never more than ``$ETR_LIVE_POLL_MAX_SECONDS`` (default 3). With the defaults and 2 slots: 1 s
    for 1-2 active runs, 2 s for 3-4, 3 s from 5 on. ``active_runs`` counts the server's queued and
    training runs (values below 1 count as 1). ``ValueError`` for a bad environment value.
    """
    if queued:
        return float(env_limit("ETR_LIVE_POLL_QUEUED_SECONDS"))
    base = int(env_limit("ETR_LIVE_POLL_SECONDS"))
    most = max(base, int(env_limit("ETR_LIVE_POLL_MAX_SECONDS")))
    per_step = max_concurrent_runs()
    steps = -(-max(1, int(active_runs)) // per_step)
    return float(min(most, base * steps))


def comparison_configs(
    methods: Sequence[str],
    *,
    dataset: str = "digits",
    model: str = "mlp_small",
    seed: int = 0,
    tr_batch_size: int | None = None,
    first_order_batch_size: int | None = None,
    learning_rates: dict[str, float] | None = None,
    tr_options: dict[str, Any] | None = None,
    gamma2: dict[str, float] | None = None,
    max_steps: int | None = 1000,
    eval_every: int = 5,
    device: str = "auto",
    data_options: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    preset: str = "paper",
) -> list[Any]:
    """One :class:`etr_core.training.TrainConfig` per method, sharing data, network, seed and budget.

    TR methods get ``tr_options`` (paper Table 1 names: ``radius``, ``max_radius``, ``eta1``,
    ``eta2``, ``gamma1``) plus their own ``gamma2[method]`` where given (Table 1: 1.5 for
    ``TR_uni``/``TR_ada``, 1.75 for ``TR_rms``) and ``tr_batch_size``; first-order methods get
    ``learning_rates[method]`` and ``first_order_batch_size`` (the paper fixes 32 and grid-searches
    the step, section 5). TR methods start from ``preset``: "paper" (Table 1, the default), "fast"
    (Table 1 with the automatic initial radius, ``radius="auto"``) or "authors" (the authors' files;
    pass no ``tr_options``/``gamma2``/``tr_batch_size`` to keep their values). ``ARC_rms`` has no trust
    region: it runs the "paper" preset and only the ``tr_options`` it uses
    (:data:`etr_core.training.method_settings.ARC_TR_OPTIONS`). ``max_steps`` is
    lowered to :func:`max_steps_cap` where that is set. File data sets are read from ``data_root``
    (resolved now: ``$ETR_DATA`` or ``./data``), so a worker process reads the same folder as the
    server. Every config is validated on construction.
    """
    from etr_core.data import FILE_DATASETS, default_root
    from etr_core.training import METHODS, PRESETS, TrainConfig

    check_choice("preset", preset, PRESETS)
    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one method, got an empty selection")
    cap = max_steps_cap()
    if cap is not None:
        max_steps = cap if max_steps is None else min(max_steps, cap)
    root = str(default_root(data_root).resolve()) if dataset in FILE_DATASETS else None
    configs = []
    for method in methods:
        check_choice("method", method, METHODS)
        common = dict(dataset=dataset, model=model, method=method, seed=seed, max_steps=max_steps,
                      eval_every=eval_every, device=device, data_options=dict(data_options or {}),
                      data_root=root)
        if METHODS[method].cubic:  # ARC has no trust region: the TR knobs and presets are not its settings
            from etr_core.training.method_settings import ARC_TR_OPTIONS

            options = {k: v for k, v in (tr_options or {}).items() if k in ARC_TR_OPTIONS}
            configs.append(TrainConfig(**common, batch_size=tr_batch_size, tr_options=options))
        elif METHODS[method].family == "tr":
            options = dict(tr_options or {})
            if gamma2 and method in gamma2:
                options["gamma2"] = gamma2[method]
            configs.append(TrainConfig(**common, batch_size=tr_batch_size, tr_options=options, preset=preset))
        else:
            lr = (learning_rates or {}).get(method)
            configs.append(TrainConfig(**common, batch_size=first_order_batch_size, lr=lr))
    return configs


_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def local_dataset_status(name: str, root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether a file dataset (``mnist``, ``fashion_mnist``, ``cifar10``) is on disk, without reading
    it, and a message naming the missing files and where they go (layout of :mod:`etr_core.data`).
    Bundled and generated datasets are always available."""
    from etr_core.data import FILE_DATASETS, default_root

    if name not in FILE_DATASETS:
        return True, f"{name} needs no files."
    base = default_root(root)
    if name == "cifar10":
        folder = base / "cifar10" / "cifar-10-batches-py"
        missing = [f for f in _CIFAR_FILES if not (folder / f).exists()]
    else:
        folder = base / name
        missing = [f"{stem}.gz" for stem in _IDX_STEMS
                   if not ((folder / stem).exists() or (folder / f"{stem}.gz").exists())]
    if not missing:
        return True, f"{name}: files found in {folder}."
    return False, (
        f"{name} is not on this server. Put {', '.join(missing)} into {folder} (or set ETR_DATA to the "
        f"folder that holds '{folder.relative_to(base).parts[0]}/'); `etr download {name}` fetches them "
        "where internet access is available."
    )
