"""A rolling CPU budget per browser: how much worker CPU one user may use in a time window.

The Hessian page caps each setting (30 s of CPU, 2 GB) and the live page each run (its time
limit), but a user could still submit setting after setting. :class:`CpuBudget` keeps, per owner
(one browser, see ``ui.owner``), the CPU seconds its computations used with the time they were
used, and refuses new work while the owner used at least ``seconds`` within the last ``window``
seconds. It is charged with *measured* CPU as the work runs (worker processes' CPU time): the Hessian
page's background jobs after every unit, live runs about once a second. A computation already
running is not cut by the Hessian page (its own 30 s cap bounds it); a live run is stopped when its
owner's budget runs out, keeping what it computed. Results computed earlier (cached, finished runs)
always still display.

Limits (environment, read when the process-wide budget is first used; bad values raise
``ValueError`` naming the variable):

* ``ETR_SESSION_CPU_SECONDS`` -- CPU seconds per owner per window (default :data:`DEFAULT_SECONDS`);
* ``ETR_SESSION_CPU_WINDOW_SECONDS`` -- the window's length (default :data:`DEFAULT_WINDOW`).

No UI framework is imported here; the clock is injectable for tests.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_SECONDS", "DEFAULT_WINDOW", "SECONDS_ENV", "WINDOW_ENV", "CpuBudget", "default_budget",
           "describe_wait"]

SECONDS_ENV = "ETR_SESSION_CPU_SECONDS"
WINDOW_ENV = "ETR_SESSION_CPU_WINDOW_SECONDS"
# CPU seconds one browser may use in any 15 minutes: the live page's longest run (300 s on one
# core) and a few Hessian-page settings (30 s each at most), so no widget value is cut short
DEFAULT_SECONDS = 420.0
DEFAULT_WINDOW = 900.0
_MERGE_S = 1.0  # charges closer together than this are kept as one entry (bounded memory)


def _env_seconds(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number of seconds in [{low:g}, {high:g}], got {raw!r}")
    return value


def describe_wait(seconds: float) -> str:
    """``"2 min 5 s"`` / ``"40 s"`` for a wait of ``seconds`` (rounded up to whole seconds)."""
    total = max(0, math.ceil(seconds))
    minutes, rest = divmod(total, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class CpuBudget:
    """Rolling per-owner CPU budget: at most ``seconds`` of CPU in any ``window`` seconds (thread-safe).

    ``charge(owner, cpu)`` records CPU used now; :meth:`exhausted` says whether the owner used at
    least ``seconds`` within the last ``window``; :meth:`available_in` how long until it used less
    (the oldest charges age out). ``clock`` (default ``time.monotonic``) gives the current time in
    seconds. Raises ``ValueError`` for non-positive or non-finite limits.
    """

    def __init__(self, seconds: float = DEFAULT_SECONDS, window: float = DEFAULT_WINDOW, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("seconds", seconds), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.seconds = float(seconds)
        self.window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._charges: dict[Hashable, deque[list[float]]] = {}

    @classmethod
    def from_environment(cls) -> CpuBudget:
        """A budget with the limits of ``ETR_SESSION_CPU_SECONDS`` / ``ETR_SESSION_CPU_WINDOW_SECONDS``."""
        return cls(_env_seconds(SECONDS_ENV, DEFAULT_SECONDS, 1.0, 1e7),
                   _env_seconds(WINDOW_ENV, DEFAULT_WINDOW, 1.0, 7 * 86400.0))

    def _expire(self, owner: Hashable, now: float) -> deque[list[float]]:
        entries = self._charges.get(owner)
        if entries is None:
            return deque()
        while entries and entries[0][0] <= now - self.window:
            entries.popleft()
        if not entries:
            del self._charges[owner]
        return entries

    def charge(self, owner: Hashable, cpu_seconds: float) -> None:
        """Record ``cpu_seconds`` (>= 0; NaN, inf and negatives are ignored) used by ``owner`` now."""
        if owner is None or not isinstance(cpu_seconds, (int, float)) or not (
                math.isfinite(cpu_seconds) and cpu_seconds > 0):
            return
        now = self._clock()
        with self._lock:
            self._expire(owner, now)
            entries = self._charges.setdefault(owner, deque())
            if entries and now - entries[-1][0] < _MERGE_S:
                entries[-1][1] += float(cpu_seconds)
            else:
                entries.append([now, float(cpu_seconds)])

    def used(self, owner: Hashable) -> float:
        """CPU seconds ``owner`` used within the last ``window`` seconds."""
        with self._lock:
            return sum(amount for _, amount in self._expire(owner, self._clock()))

    def remaining(self, owner: Hashable) -> float:
        """CPU seconds ``owner`` may still use now (0 when exhausted)."""
        return max(0.0, self.seconds - self.used(owner))

    def exhausted(self, owner: Hashable) -> bool:
        """Whether ``owner`` used at least ``seconds`` of CPU within the last ``window``."""
        return owner is not None and self.used(owner) >= self.seconds

    def available_in(self, owner: Hashable) -> float:
        """Seconds until ``owner`` has used less than ``seconds`` in the window (0 when it has now)."""
        with self._lock:
            now = self._clock()
            entries = [(at, amount) for at, amount in self._expire(owner, now)]
        total = sum(amount for _, amount in entries)
        for at, amount in entries:  # oldest first: each charge leaves the window at `at + window`
            if total < self.seconds:
                break
            total -= amount
            if total < self.seconds:
                return max(0.0, at + self.window - now)
        return 0.0

    def message(self, owner: Hashable, now_wall: float | None = None) -> str:
        """One line for a user whose budget is used up: how much, the cap, and when work can start."""
        wait = self.available_in(owner)
        at = time.strftime("%H:%M:%S", time.gmtime((time.time() if now_wall is None else now_wall) + wait))
        return (f"This browser has used {self.used(owner):.0f} s of the server's CPU in the last "
                f"{describe_wait(self.window)} (at most {self.seconds:g} s, {SECONDS_ENV}); new "
                f"computations can start again in {describe_wait(wait)} (at {at} UTC). Results computed "
                "earlier still show.")


_DEFAULT: CpuBudget | None = None
_DEFAULT_LOCK = threading.Lock()


def default_budget() -> CpuBudget:
    """The budget of this server process, shared by the Hessian page and live runs (created on first
    use from the environment)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = CpuBudget.from_environment()
        return _DEFAULT
