"""User errors of the library, and one sentence per error for the CLI and the app.

Exceptions that mean "the input is wrong" (a bad data file, a damaged checkpoint, a run folder in
use, a path that cannot be written, a full disk, a bad parameter) all turn into one line of text
through :func:`user_message`. The ``etr`` command prints that line and exits with status 2; the
Streamlit pages show the same sentence in an error box::

    from etr_core.errors import user_message

    try:
        result = train(config, run_dir=folder)
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise          # a bug: keep the traceback
        st.error(message)

Anything else (``RuntimeError``, ``IndexError``, ...) is a bug and keeps its traceback
(``user_message`` returns ``None``).
"""

from __future__ import annotations

import errno
import os
import sys

__all__ = [
    "CheckpointError",
    "DataFileError",
    "RunError",
    "RunFolderBusyError",
    "RunFolderError",
    "one_line",
    "show_warning_line",
    "user_message",
]


class DataFileError(ValueError):
    """A dataset file is malformed: wrong magic, shape, count, dtype, label range or pickle content.

    ``path`` is the file; the message starts with it and says what is wrong.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuilt from (path, problem) in another process (etr reproduce --jobs)
        return type(self), (self.path, self.problem)


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: empty, truncated, damaged (checksum), or not a safe checkpoint."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (already holds a run, nothing to resume, conflicting flags)."""


class RunFolderBusyError(RuntimeError):
    """Another process is writing the run folder (it holds the folder's lock file)."""


class RunError(RuntimeError):
    """One or more runs of a parallel batch (``etr reproduce --jobs N``) failed.

    The message names the first failed run folder and its error. ``user_error`` is ``True`` when
    every failure was a user error (a bad file, a full disk, a folder in use) or an outside event
    (a worker process killed): :func:`user_message` then gives the one line, and the CLI exits 2.
    Otherwise a run hit a bug; its worker printed the traceback and this error keeps its own.
    """

    def __init__(self, message: str, user_error: bool = False) -> None:
        self.user_error = bool(user_error)
        super().__init__(message)

    def __reduce__(self):
        return type(self), (str(self), self.user_error)


def one_line(text: str) -> str:
    """``text`` with its lines joined by "; " (messages that list files stay on one line)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts)


def show_warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that prints ``warning: <the message on one line>`` (the CLI's form)."""
    print(f"warning: {one_line(str(message))}", file=sys.stderr if file is None else file, flush=True)


_ERRNO_TEXT = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it already exists",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENAMETOOLONG: "the file name is too long",
}

_ERRNO_HINT = {
    errno.ENOSPC: "free some space, then continue with --resume",
    errno.EDQUOT: "free some space, then continue with --resume",
    errno.EROFS: "choose a folder you can write (--out)",
    errno.EACCES: "choose a folder you can write, or fix its permissions",
    errno.EPERM: "choose a folder you can write, or fix its permissions",
}


def _os_message(exc: OSError) -> str:
    if exc.filename is None and exc.errno is None:
        return one_line(str(exc))  # our own FileNotFoundError / OSError messages carry their text
    what = _ERRNO_TEXT.get(exc.errno) or (exc.strerror or str(exc)).lower()
    where = f"{exc.filename}" if exc.filename is not None else "a file"
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    hint = _ERRNO_HINT.get(exc.errno)
    text = f"cannot use {where}: {what}"
    if isinstance(exc, FileExistsError) or exc.errno == errno.EEXIST:
        text = f"cannot create the folder {where}: a file of that name exists; choose another path"
    elif exc.errno == errno.ENOTDIR:
        text = f"cannot use {where}: {what}; choose a folder path"
    elif hint:
        text += f"; {hint}"
    return text


def user_message(exc: BaseException) -> str | None:
    """One sentence describing a user error, or ``None`` when ``exc`` is a bug.

    User errors are :class:`OSError` (paths, permissions, full disk), :class:`ValueError` and
    :class:`TypeError` (bad parameters, bad files; this project raises these for user input
    only, naming the parameter or file and the fix), :class:`RunFolderBusyError` and a
    :class:`RunError` whose runs failed for such reasons. The sentence
    is a single line: multi-line messages are joined with "; ".
    """
    if isinstance(exc, OSError):
        return _os_message(exc)
    if isinstance(exc, RunError):
        return one_line(str(exc)) if exc.user_error else None
    if isinstance(exc, (ValueError, TypeError, RunFolderBusyError)):
        return one_line(str(exc)) or type(exc).__name__
    return None
