"""Shared helpers of the CLI tests: run ``etr`` in-process and read its one error line."""

from __future__ import annotations

from etr_core.cli import main


def run_cli(argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``etr argv``."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The single error line of ``err`` (warnings aside); fails on tracebacks or multi-line errors."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert ": error: " in lines[0]
    return lines[0]
