"""clf's temp files as a killed writer leaves them (clf.atomic: `.clf-<host tag>-<pid>-<random>.tmp`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clf.atomic import TEMP_SUFFIX, temp_prefix


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): what a kill -9 leaves behind."""
    child = subprocess.Popen([sys.executable, "-c", ""], stdin=subprocess.DEVNULL)
    child.wait()
    return child.pid


def stale_temp_name(pid: int | None = None, random: str = "k9x2_q7a") -> str:
    """A temp name of clf's as a writer `pid` (a dead one by default) on this machine gives it."""
    return f"{temp_prefix(dead_pid() if pid is None else pid)}{random}{TEMP_SUFFIX}"


def write_stale_temp(folder: Path, content: bytes = b"half a model", pid: int | None = None) -> Path:
    """A temp file left in `folder` by a clf process killed mid-write."""
    path = Path(folder) / stale_temp_name(pid)
    path.write_bytes(content)
    return path
