"""How many torch CPU threads a run uses: a requested count, or "auto" (torch's count capped by the
cores the load leaves free), set for the run and restored afterwards."""

from __future__ import annotations

import os

import torch

from etr_core._validation import check_int

# More threads than this are refused: torch starting 100000 OpenMP threads exhausts the process limit
# and crashes (SIGSEGV); oversubscribing the cores never speeds a step up.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


def resolve_num_threads(
    requested: int | None, *, cores: int | None = None, load: float | None = None, current: int | None = None
) -> int:
    """The torch CPU thread count a run uses: ``requested`` if given, else "auto".

    Auto keeps torch's current count (``current``, default ``torch.get_num_threads()``, which honours
    ``OMP_NUM_THREADS`` and any earlier ``torch.set_num_threads``) but never more than the cores the
    1-minute load average leaves free: ``max(1, min(current, round(cores - load)))``. Busy-waiting
    OpenMP threads on cores that other processes hold made 30 steps of ``etr train`` take 11.4 s instead
    of 0.10 s with one thread on a loaded 2-core machine; with the cores idle, auto is torch's default.
    ``cores`` defaults to the CPUs this process may run on, ``load`` to ``os.getloadavg()[0]`` (0 where
    the platform has none).
    """
    if requested is not None:
        return check_int("num_threads", requested, minimum=1, maximum=MAX_THREADS)
    if current is None:
        current = torch.get_num_threads()
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(int(current), round(cores - load)))


class _Threads:
    """Sets the run's thread count (:func:`resolve_num_threads`) and restores the previous one."""

    def __init__(self, n: int | None) -> None:
        self.before = torch.get_num_threads()
        self.n = resolve_num_threads(n, current=self.before)

    def __enter__(self) -> None:
        if self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n != self.before:
            torch.set_num_threads(self.before)

