"""The worker process of one live run: trains outside the server's Python process.

The server starts :func:`worker_main` with the ``forkserver`` start method (``spawn`` where that
does not exist): the fork server imports torch and the training code once (``PRELOAD``), and every
run forks from it in milliseconds. A worker never touches the server's interpreter, so its
``torch.set_num_threads`` and its warnings stay its own. It lowers its CPU priority (``nice``, and
on Linux the ``SCHED_IDLE`` policy: :func:`lower_priority`) so page loads win over training on a
busy machine, pauses between steps while the server draws a page
(:mod:`etr_core.live.foreground`), loads the data set once and shares it read-only between all
methods of the run, and sends its records to the server in batches over a pipe.
"""

from __future__ import annotations

import importlib.machinery
import multiprocessing
import os
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

from etr_core.errors import user_message
from etr_core.live.engine import RunEngine
from etr_core.live.foreground import foreground_pause
from etr_core.live.history import FAILED
from etr_core.live.monitor import StallRule, WarningCounter

__all__ = ["PRELOAD", "WorkerSpec", "lower_priority", "mp_context", "shared_dataset", "start_process",
           "worker_main"]

PRELOAD = ["etr_core.live.worker", "etr_core.training", "etr_core.optim", "torch._dynamo",
           "sklearn.model_selection"]


@dataclass
class WorkerSpec:
    """What a worker needs, all picklable: the configs, the limits and how to behave."""

    run_id: str
    configs: list[Any]
    max_seconds: float | None = None
    max_backprops: int | None = None
    schedule: str = "backprops"
    torch_threads: int | None = 1
    nice: int = 10
    sched_idle: bool = True
    stall_rule: StallRule | None = field(default_factory=StallRule)
    train_fn: Any = None
    share_data: bool = True
    foreground: str | None = None
    yield_max_wait: float = 5.0


def mp_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (with :data:`PRELOAD` imported once in the fork server) where available, else
    ``spawn``. Never ``fork``: the server has threads, and a forked copy of a threaded process may hang."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


_MAIN_LOCK = threading.Lock()


def start_process(process: Any) -> None:
    """``process.start()`` without the parent's ``__main__`` script.

    ``spawn`` and ``forkserver`` children re-run the parent's main script (as ``__mp_main__``) before
    the target. Under Streamlit that is the page being rendered, so every worker would render the page
    in bare mode. For the moment of the start, ``__main__`` is replaced by an empty module whose name
    the child skips (a ``*.__main__`` module, as multiprocessing does for ``python -m package``)."""
    stub = types.ModuleType("__main__")
    stub.__spec__ = importlib.machinery.ModuleSpec("etr_core.live.__main__", None)
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = stub
        try:
            process.start()
        finally:
            if sys.modules.get("__main__") is stub:
                sys.modules["__main__"] = main


def shared_dataset(configs: list[Any]) -> Any:
    """One dataset for every config when they all read the same data (dataset, root, seed, options,
    task), on their device and dtype, else ``None`` (each method then loads its own). ``max_train``
    keeps a copy of the first examples, so the full file's arrays are freed."""
    from etr_core import devices
    from etr_core.models import is_autoencoder
    from etr_core.training import DTYPES, dataset_for

    def key(c: Any) -> tuple:
        return (c.dataset, c.data_root, c.seed, sorted(c.data_options.items()), is_autoencoder(c.model),
                str(devices.device(c.device)), c.dtype)

    if not configs or any(key(c) != key(configs[0]) for c in configs[1:]):
        return None
    first = configs[0]
    data = dataset_for(first)
    device, dtype = devices.device(first.device), DTYPES[first.dtype]
    from dataclasses import replace

    import torch

    def move(t: Any, floating: bool) -> Any:
        return t.to(device, dtype if floating else t.dtype)

    auto = data.task == "autoencoder"
    return replace(data, train_x=move(data.train_x, True), test_x=move(data.test_x, True),
                   train_y=move(data.train_y, auto) if auto else data.train_y.to(device, torch.int64),
                   test_y=move(data.test_y, auto) if auto else data.test_y.to(device, torch.int64))


class PipeSink:
    """Sends engine events over a pipe: step/eval rows in batches (every ``interval`` seconds, or at
    ``max_rows``), any other event at once and after the rows before it, so order is kept; and every
    ``cpu_every`` seconds (and at the end) ``("cpu", seconds)``, the worker process's CPU time so far,
    which the server charges to the run's owner (:mod:`etr_core.cpu_budget`)."""

    def __init__(self, conn: Any, interval: float = 0.1, max_rows: int = 500, cpu_every: float = 1.0) -> None:
        self.conn = conn
        self.interval = interval
        self.max_rows = max_rows
        self.cpu_every = cpu_every
        self._lock = threading.Lock()
        self._rows: dict[str, list[dict]] = {"steps": [], "evals": []}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="etr-live-sink", daemon=True)
        self._thread.start()

    def __call__(self, event: tuple) -> None:
        with self._lock:
            if event[0] in self._rows:
                self._rows[event[0]].extend(event[1])
                if len(self._rows[event[0]]) >= self.max_rows:
                    self._flush_locked()
                return
            self._flush_locked()
            self.conn.send(event)

    def _flush_locked(self) -> None:
        for kind, rows in self._rows.items():
            if rows:
                self.conn.send((kind, rows))
                self._rows[kind] = []

    def _flush_loop(self) -> None:
        reported = time.monotonic()
        while not self._done.wait(self.interval):
            with self._lock:
                self._flush_locked()
                if time.monotonic() - reported >= self.cpu_every:
                    self.conn.send(("cpu", time.process_time()))
                    reported = time.monotonic()

    def close(self) -> None:
        self._done.set()
        self._thread.join(1.0)
        with self._lock:
            self._flush_locked()
            self.conn.send(("cpu", time.process_time()))


def lower_priority(nice: int, sched_idle: bool = True) -> str:
    """Lower the calling thread's CPU priority (threads it starts afterwards inherit it).

    ``nice`` (0..19) is added to the nice value; 0 leaves the priority alone. Where ``nice > 0`` and
    ``sched_idle``, the thread also takes Linux's ``SCHED_IDLE`` policy: it then runs only when no
    normal process wants the CPU (its weight is below that of nice 19) and is preempted at once when
    one wakes, whatever its nice value. Returns what took effect: ``"idle"``, ``"nice"`` or
    ``"normal"``; a refused change (``OSError``) is skipped, never raised.
    """
    if nice <= 0:
        return "normal"
    applied = "normal"
    if hasattr(os, "nice"):
        try:
            os.nice(nice)
            applied = "nice"
        except OSError:  # not permitted here: keep the normal nice value
            pass
    if sched_idle and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            applied = "idle"
        except OSError:  # refused (e.g. by a seccomp or container policy): nice only
            pass
    return applied


def worker_main(conn: Any, stop_event: Any, spec: WorkerSpec) -> None:
    """Entry point of the worker process: set up, train every method, report, exit."""
    sink = None
    try:
        lower_priority(spec.nice, spec.sched_idle)
        import torch

        if spec.torch_threads is not None:
            torch.set_num_threads(spec.torch_threads)
        counter = WarningCounter(spec.run_id)
        counter.install()
        sink = PipeSink(conn)
        started = time.perf_counter()
        data = shared_dataset(spec.configs) if spec.share_data and spec.train_fn is None else None
        sink(("loaded", time.perf_counter() - started))
        engine = RunEngine(spec.configs, sink, stop_event, max_seconds=spec.max_seconds,
                           max_backprops=spec.max_backprops, schedule=spec.schedule, train_fn=spec.train_fn,
                           stall_rule=spec.stall_rule, data=data, warnings=counter,
                           pause=foreground_pause(spec.foreground, spec.yield_max_wait))
        engine.run()
    except BaseException as exc:  # the server shows it; the process ends either way
        event = ("run", FAILED, user_message(exc) or f"the worker failed: {type(exc).__name__}: {exc}")
        if sink is not None:
            sink(("traceback", "run", traceback.format_exc()))
            sink(event)
        else:
            conn.send(event)
    finally:
        if sink is not None:
            sink.close()
        conn.close()
