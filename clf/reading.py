"""Reading a small file clf did not necessarily write (a run's split.json or config.json): never blocking on a FIFO,
never filling the memory from a device or a huge file. Ground floor: the standard library only.
"""

from __future__ import annotations

import os
import stat


def read_small_regular_file(path: str | os.PathLike, max_bytes: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`; a FIFO or device is never read from.

    Args:
        path: the file.
        max_bytes: the largest size accepted.
        what: what such a file is, for the message of one too large ("a file list").

    Raises:
        FileNotFoundError: there is no such file (callers treat it apart: often an older run).
        OSError: it cannot be opened or read.
        ValueError: not a regular file, larger than `max_bytes`, or not UTF-8 (UnicodeDecodeError).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{info.st_size} bytes, more than {what} of {max_bytes} bytes")
        return handle.read(max_bytes + 1).decode("utf-8")
