"""Atomic file writes with the user's normal permissions, and the run-folder lock.

``atomic_write`` writes a temporary file in the target's folder, ``fsync``s it and renames it onto
the target (``os.replace`` is atomic on POSIX and Windows), so a killed process leaves either the
old or the new complete file. The temporary file is created with mode ``0o666`` filtered by the
process umask (the mode ``open()`` gives), not ``mkstemp``'s ``0o600``: run folders on a shared
server stay readable by the people the umask allows.

:class:`RunLock` is an advisory ``fcntl.flock`` on ``<run folder>/.lock``. The kernel releases it
when the holder exits, even on ``SIGKILL``, so a stale lock never blocks a later run. Where
``fcntl`` is unavailable (Windows) locking is skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from etr_core.errors import RunFolderBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

__all__ = ["LOCK_FILE", "RunLock", "atomic_write", "fsync_dir", "temporary_name"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """``.<name>.<random>.tmp`` beside ``path`` (the pattern stale-file cleanup looks for)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def _create_temporary(path: Path) -> tuple[int, Path]:
    for _ in range(100):
        tmp = temporary_name(path)
        try:
            # 0o666 & ~umask, like open(): never mkstemp's owner-only 0o600
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def atomic_write(
    path: str | os.PathLike, writer: Callable[[BinaryIO], object], *, keep: str | None = None
) -> None:
    """Call ``writer(binary_file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash before the rename leaves ``path`` untouched and a failed ``writer`` (or a full disk)
    removes the temporary file. ``keep`` names a file that receives the previous ``path`` (renamed,
    not copied) just before the new one takes its place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep is not None and path.exists():
            os.replace(path, path.parent / keep)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a full disk raises from write() without a file name: name the file being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    fsync_dir(path.parent)


class RunLock:
    """Exclusive advisory lock on a run folder while one process writes it.

    ``acquire()`` raises :class:`RunFolderBusyError` naming the folder and the holder's process id
    when another process (or another writer in this process) holds it.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None or fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.folder} is being written by another process (pid {holder}); wait until it finishes "
                "or choose another folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
