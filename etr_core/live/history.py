"""Columnar, append-only histories of a live run and the snapshots a page reads (paper section 5).

A run records one row per optimiser step and one per full-data evaluation. Rows are stored
column by column (``float64`` numpy buffers, text as small integer codes), about 8 bytes per number
instead of a Python dict per row, so a server can keep many finished runs in memory. Readers ask for
the rows *since* an index they already hold, so a polling page receives only what is new.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "EVAL_COLUMNS",
    "STEP_COLUMNS",
    "STEP_EXTRAS",
    "History",
    "LiveSnapshot",
    "plain",
]

STEP_COLUMNS: tuple[str, ...] = (
    "method", "step", "forward", "backward", "hvp", "backprops", "epoch", "seconds", "loss",
    "rho", "radius", "accepted", "cg_iterations", "exit",
)
# further per-step quantities kept for the CSV (TR steps carry the model's numbers and their preset,
# first-order the lr)
STEP_EXTRAS: tuple[str, ...] = (
    "batch_size", "lr", "trial_loss", "pred_reduction", "actual_reduction", "step_m_norm", "grad_norm",
    "fault", "preset",
)
EVAL_COLUMNS: tuple[str, ...] = (
    "method", "step", "backprops", "epoch", "seconds", "train_loss", "train_acc", "test_loss", "test_acc",
)
TEXT_COLUMNS = frozenset({"method", "exit", "fault", "preset"})

QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
FINISHED = "finished"
STOPPED = "stopped"
FAILED = "failed"
DIVERGED = "diverged"
CONVERGED = "converged"
STALLED = "stalled"
ACTIVE = (QUEUED, STARTING, RUNNING)
# a method that ended by itself before its budget, with the reason kept in ``notes``
EARLY_END = (DIVERGED, CONVERGED, STALLED)


def plain(value: Any) -> Any:
    """Tensor / numpy scalars become Python numbers so records never hold device memory."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, RuntimeError):
            return value
    return value


def _number(value: Any) -> float:
    value = plain(value)
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class History:
    """An append-only table with fixed ``columns`` (text columns in :data:`TEXT_COLUMNS`).

    :meth:`append` takes dict records (missing keys are NaN / empty, unknown keys are ignored);
    :meth:`frame` returns rows ``[start, stop)`` as a DataFrame (copies). Thread-safe: one writer
    and any number of readers.
    """

    def __init__(self, columns: Sequence[str], capacity: int = 256) -> None:
        self.columns = tuple(columns)
        self._lock = threading.Lock()
        self._n = 0
        self._numbers = {c: np.empty(capacity) for c in self.columns if c not in TEXT_COLUMNS}
        self._codes = {c: np.empty(capacity, dtype=np.int32) for c in self.columns if c in TEXT_COLUMNS}
        self._texts: dict[str, list[str | None]] = {c: [None] for c in self._codes}  # code 0: missing
        self._text_index: dict[str, dict[str, int]] = {c: {} for c in self._codes}

    def __len__(self) -> int:
        with self._lock:
            return self._n

    @property
    def nbytes(self) -> int:
        """Bytes held by the column buffers."""
        with self._lock:
            return sum(a.nbytes for a in self._numbers.values()) + sum(a.nbytes for a in self._codes.values())

    def _grow(self, needed: int) -> None:
        capacity = len(next(iter(self._numbers.values())))
        if needed <= capacity:
            return
        new = max(needed, 2 * capacity)
        for store in (self._numbers, self._codes):
            for name, array in store.items():
                bigger = np.empty(new, dtype=array.dtype)
                bigger[: self._n] = array[: self._n]
                store[name] = bigger

    def _code(self, column: str, value: Any) -> int:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 0
        text = str(value)
        index = self._text_index[column]
        if text not in index:
            index[text] = len(self._texts[column])
            self._texts[column].append(text)
        return index[text]

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append rows; returns the new length."""
        records = list(records)
        with self._lock:
            if not records:
                return self._n
            self._grow(self._n + len(records))
            start = self._n
            for name, array in self._numbers.items():
                array[start : start + len(records)] = [_number(r.get(name)) for r in records]
            for name, array in self._codes.items():
                array[start : start + len(records)] = [self._code(name, r.get(name)) for r in records]
            self._n += len(records)
            return self._n

    def frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``[start, stop)`` in the order they were appended, columns in ``self.columns``."""
        with self._lock:
            stop = self._n if stop is None else max(0, min(stop, self._n))
            start = max(0, min(start, stop))
            data: dict[str, Any] = {}
            for name in self.columns:
                if name in self._numbers:
                    data[name] = self._numbers[name][start:stop].copy()
                else:
                    texts = np.array(self._texts[name], dtype=object)
                    data[name] = texts[self._codes[name][start:stop]]
        frame = pd.DataFrame(data, columns=list(self.columns), index=pd.RangeIndex(start, stop))
        for name in ("step", "forward", "backward", "hvp", "cg_iterations", "batch_size"):
            if name in frame and len(frame) and frame[name].notna().all():
                frame[name] = frame[name].astype(np.int64)
        return frame

    def last(self, column: str, method: str | None = None) -> float:
        """The last value of a numeric ``column`` (of ``method``'s rows); NaN when there is none."""
        with self._lock:
            if self._n == 0 or column not in self._numbers:
                return math.nan
            values = self._numbers[column][: self._n]
            if method is not None:
                code = self._text_index["method"].get(method)
                if code is None:
                    return math.nan
                values = values[self._codes["method"][: self._n] == code]
            return float(values[-1]) if len(values) else math.nan


@dataclass
class LiveSnapshot:
    """A consistent view of a run taken under its lock.

    ``steps`` / ``evals`` hold the rows from ``steps_since`` / ``evals_since`` on (all rows by
    default); ``n_steps`` / ``n_evals`` are the totals, so a reader that keeps what it saw asks next
    time from these indices. ``version`` grows with every change a page would draw.
    """

    status: str
    message: str
    progress: float
    elapsed: float
    methods: list[str]
    method_status: dict[str, str]
    errors: dict[str, str]
    steps: pd.DataFrame
    evals: pd.DataFrame
    device: str = "cpu"
    run_id: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    n_steps: int = 0
    n_evals: int = 0
    steps_since: int = 0
    evals_since: int = 0
    version: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """``True`` while queued, starting or training."""
        return self.status in ACTIVE

    @property
    def queued(self) -> bool:
        return self.status == QUEUED

    @property
    def done(self) -> bool:
        return not self.running and self.status != "idle"
