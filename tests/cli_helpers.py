"""Running `clf` in-process for the CLI tests, and reading the one error line a user sees."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from clf.cli import app

runner = CliRunner()


def clf(*args: str | Path):
    """`clf ARGS...` through typer's CliRunner; paths may be given as Path."""
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The one line a user sees for a failure; no traceback."""
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]
