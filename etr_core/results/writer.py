"""Writing one run folder: the lock, the configuration, environment and summary, the metric and
evaluation logs, checkpoints (a damaged newest one is set aside) and truncating logs on resume."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from etr_core import checkpoints
from etr_core.files import RunLock, atomic_write
from etr_core.results.layout import (
    _WRITTEN_FILES,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DAMAGED_CHECKPOINT_FILE,
    ENVIRONMENT_FILE,
    EVALS_FILE,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    SUMMARY_FILE,
    atomic_write_json,
    dumps,
    run_state,
)
from etr_core.results.reader import read_jsonl


class RunWriter:
    """Appends records to one run folder; every file it writes is either complete or absent.

    :meth:`lock` takes the folder's lock (a second writer gets ``RunFolderBusyError``);
    :meth:`close` releases it.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(
                f"{self.run_dir} is a file, not a folder; choose another run folder (--out)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self._evals = None
        self._lock = RunLock(self.run_dir)
        self.loaded_checkpoint: Path | None = None  # the file load_checkpoint read

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def lock(self) -> None:
        """Hold the folder's lock until :meth:`close` (raises ``RunFolderBusyError`` if taken)."""
        self._lock.acquire()

    def state(self) -> str:
        """:func:`run_state` of the folder."""
        return run_state(self.run_dir)

    def has_run(self) -> bool:
        """True when the folder holds a run a fresh start would overwrite (a checkpoint or a summary)."""
        return self.state() in ("resumable", "finished")

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed writer left (``.checkpoint.pt.*.tmp`` and the like)."""
        removed = []
        for name in _WRITTEN_FILES:
            for tmp in self.run_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / CONFIG_FILE, config)

    def write_environment(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / ENVIRONMENT_FILE, info)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)

    def _open(self, name: str):
        return open(self.run_dir / name, "a", encoding="utf-8")

    def append_metric(self, record: dict[str, Any]) -> None:
        with _naming(self.run_dir / METRICS_FILE):
            if self._metrics is None:
                self._metrics = self._open(METRICS_FILE)
            self._metrics.write(dumps(record) + "\n")

    def append_eval(self, record: dict[str, Any]) -> None:
        with _naming(self.run_dir / EVALS_FILE):
            if self._evals is None:
                self._evals = self._open(EVALS_FILE)
            self._evals.write(dumps(record) + "\n")
            self._evals.flush()

    def flush(self) -> None:
        for name, handle in ((METRICS_FILE, self._metrics), (EVALS_FILE, self._evals)):
            if handle is not None:
                with _naming(self.run_dir / name):
                    handle.flush()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Flush the logs, then replace ``checkpoint.pt`` atomically with ``state`` and its checksum
        (the previous one becomes ``checkpoint.prev.pt``)."""
        self.flush()
        checkpoints.save_checkpoint(self.run_dir, state)

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The newest good checkpoint, or ``None`` when the folder has none.

        Loads with ``weights_only=True`` and verifies the checksum; a damaged ``checkpoint.pt`` gives
        a one-line warning, is renamed ``checkpoint.damaged.pt`` (when this writer holds the lock) and
        ``checkpoint.prev.pt`` is used. Raises :class:`etr_core.errors.CheckpointError` when no good
        checkpoint is left.
        """
        found = checkpoints.load_checkpoint(self.run_dir, map_location)
        if found is None:
            return None
        state, path = found
        self.loaded_checkpoint = path
        newer = self.checkpoint_path
        if path.name == PREVIOUS_CHECKPOINT_FILE and self._lock.held and os.path.lexists(newer):
            os.replace(self.checkpoint_path, self.run_dir / DAMAGED_CHECKPOINT_FILE)
        return state

    def truncate_logs(self, last_step: int) -> None:
        """Keep the readable log rows up to ``last_step`` (a killed run logged past its last
        checkpoint; the resumed run writes those steps again). Unreadable lines are reported, dropped."""
        self.close_logs()
        for name in (METRICS_FILE, EVALS_FILE):
            path = self.run_dir / name
            if not path.exists():
                continue
            kept = [
                row
                for row in read_jsonl(path)
                if (_step_of(row) or 0) <= last_step and _step_of(row) is not None
            ]
            text = "".join(dumps(row) + "\n" for row in kept)
            atomic_write(path, lambda handle, text=text: handle.write(text.encode()))

    def clear_logs(self) -> None:
        """Start the logs afresh (a run started again before its first checkpoint)."""
        self.close_logs()
        for name in (METRICS_FILE, EVALS_FILE, SUMMARY_FILE):
            path = self.run_dir / name
            if path.exists():
                path.unlink()

    def close_logs(self) -> None:
        for attr in ("_metrics", "_evals"):
            handle = getattr(self, attr)
            if handle is not None:
                handle.close()
                setattr(self, attr, None)

    def close(self) -> None:
        """Close the logs and release the folder's lock."""
        try:
            self.close_logs()
        finally:
            self._lock.release()


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` without a file name (``write`` on a full disk) the name of ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _step_of(row: dict[str, Any]) -> int | None:
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
