"""Page loads before live training: workers pause between steps while the server draws a page.

On a shared class server the live workers already run at the lowest CPU priority (``SCHED_IDLE``,
:func:`etr_core.live.worker.lower_priority`), yet measured with 8 sessions on the live page another
page took about 1.8x its idle time to load, and 1.0x with the workers stopped for the whole load
(docs/benchmarks/live.md): a priority decides who gets a core, not the caches and memory bandwidth
(or the physical core of two virtual ones) that they share. This module lets the server tell its
workers when a page is being drawn, so that they wait. It is off by default
(``ETR_LIVE_YIELD=0``): measured on the 2-core benchmark, pausing for the server's script run plus
1.5 s did not change the ratio (1.80 against 1.81, 5 loads each), because most of a page load is
the browser's own work (starting the app, drawing the charts) that the server does not see; only
pausing training for the whole minute of loads brought it to 1.30.

The signal is one file per server process whose modification time is the wall-clock time until
which workers wait (:class:`ForegroundGate`, server side): a script run sets it ``hold`` seconds
ahead while it runs (refreshed by each new run) and, once no script run is left, ``tail`` seconds
after the end (the browser draws what it received). A worker reads it between two steps
(:func:`wait_for_foreground`, one ``stat`` call, about 2 microseconds) and sleeps while it lies in
the future, but never longer than ``max_wait`` seconds at a stretch: a class that clicks without a
pause slows training to one step per ``max_wait`` s, never to a halt, and a server that died leaves
at most ``hold`` seconds of waiting. Training's own clock (``seconds`` in the records) counts steps
only, so a pause does not change a method's seconds; the run's time limit is wall clock and does
include it.

Settings (environment, :data:`etr_core.live.settings.LIMITS`): ``ETR_LIVE_YIELD`` (1: on; 0: off,
the default), ``ETR_LIVE_YIELD_TAIL_MS`` (``tail``, default 1500) and
``ETR_LIVE_YIELD_MAX_SECONDS`` (``max_wait``, default 5).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from etr_core.live.settings import env_limit

__all__ = ["ForegroundGate", "default_gate", "foreground_pause", "max_wait_seconds", "wait_for_foreground"]

HOLD_S = 60.0  # a script run holds the workers at most this long (a longer run lets them go on)
MAX_TAIL_S = 60.0  # the longest tail a gate accepts (ETR_LIVE_YIELD_TAIL_MS allows at most this)
MAX_HOLD_S = 3600.0


class ForegroundGate:
    """The server's side: :meth:`busy` around every page's script run.

    ``path`` is the signal file (created empty); ``tail`` seconds (0..60) of waiting follow the last
    script run; ``hold`` (up to 3600 s) bounds the wait a script run asks for; ``ValueError``
    otherwise (NaN and infinity included). Thread-safe (one server, many sessions).
    """

    def __init__(self, path: str | os.PathLike, tail: float = 1.5, hold: float = HOLD_S) -> None:
        if not (0.0 <= tail <= MAX_TAIL_S and 0.0 < hold <= MAX_HOLD_S):
            raise ValueError(f"tail must be in [0, {MAX_TAIL_S:g}] and hold in (0, {MAX_HOLD_S:g}] seconds, "
                             f"got tail={tail!r}, hold={hold!r}")
        self.path = Path(path)
        self.tail = float(tail)
        self.hold = float(hold)
        self._count = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._mark(0.0)

    @property
    def active(self) -> int:
        """Script runs inside :meth:`busy` now."""
        return self._count

    def until(self) -> float:
        """The wall-clock time (``time.time()``) until which workers wait; in the past when they don't."""
        return os.stat(self.path).st_mtime

    def _mark(self, until: float) -> None:
        try:
            os.utime(self.path, (until, until))
        except OSError:  # the file was removed (a temp-folder clean-up): recreate it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            os.utime(self.path, (until, until))

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Workers wait while the block runs and ``tail`` seconds after the last such block ends."""
        with self._lock:
            self._mark(time.time() + self.hold)
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                self._mark(time.time() + (self.hold if self._count else self.tail))


def wait_for_foreground(
    path: str | os.PathLike | None, max_wait: float, should_stop: Callable[[], bool] = lambda: False,
    poll: float = 0.05,
) -> float:
    """The worker's side: sleep while ``path``'s time lies ahead, at most ``max_wait`` seconds.

    Returns the seconds waited (0.0 at once when ``path`` is ``None``, missing, or in the past).
    ``should_stop()`` is checked every ``poll`` seconds and ends the wait (Stop, time limit).
    """
    if path is None or max_wait <= 0.0:
        return 0.0
    start = time.monotonic()
    while True:
        try:
            until = os.stat(path).st_mtime
        except OSError:
            break
        now = time.time()
        waited = time.monotonic() - start
        if until <= now or waited >= max_wait or should_stop():
            break
        time.sleep(max(0.0, min(poll, until - now, max_wait - waited)))
    return time.monotonic() - start


def foreground_pause(
    path: str | os.PathLike | None, max_wait: float
) -> Callable[[Callable[[], bool]], float] | None:
    """``pause(should_stop) -> seconds waited`` for :class:`etr_core.live.engine.RunEngine`, or
    ``None`` when there is no gate (``path`` is ``None``)."""
    if path is None:
        return None

    def pause(should_stop: Callable[[], bool]) -> float:
        return wait_for_foreground(path, max_wait, should_stop)

    return pause


_DEFAULT: ForegroundGate | None = None
_DEFAULT_LOCK = threading.Lock()


def default_gate() -> ForegroundGate | None:
    """This server process's gate (a file in a fresh temporary folder), ``None`` with ``ETR_LIVE_YIELD=0``.

    ``ValueError`` naming the variable for a bad ``ETR_LIVE_YIELD*`` value.
    """
    global _DEFAULT
    if not env_limit("ETR_LIVE_YIELD"):
        return None
    tail = int(env_limit("ETR_LIVE_YIELD_TAIL_MS")) / 1000.0
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            folder = Path(tempfile.mkdtemp(prefix="etr-live-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _DEFAULT = ForegroundGate(folder / "foreground", tail=tail)
        elif not _DEFAULT.path.exists():  # a temp-folder clean-up: the same path, which runs hold
            _DEFAULT.path.parent.mkdir(parents=True, exist_ok=True)
            _DEFAULT.path.touch()
        _DEFAULT.tail = tail
        return _DEFAULT


def max_wait_seconds() -> float:
    """``$ETR_LIVE_YIELD_MAX_SECONDS``: how long a worker waits for page loads at a stretch."""
    return float(env_limit("ETR_LIVE_YIELD_MAX_SECONDS"))
