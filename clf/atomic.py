"""Atomic file writes: a temp file in the same folder, then a rename, so readers never see half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clf.errors import ClfError


def file_mode(path: str | os.PathLike) -> int:
    """The existing file's permissions, else 0666 minus the umask (what a plain open() would give).

    mkstemp creates 0600 files; without this, teammates on a shared machine could not read best.pt.
    """
    try:
        return Path(path).stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_output_file(path: str | os.PathLike) -> Path:
    """Fail before any work when `path` cannot be an output file (it is a folder, or sits under a file)."""
    path = Path(path)
    if path.is_dir():
        raise ClfError(f"{path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ClfError(f"{path}: {parent} is a file, not a folder")
            break
    return path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; when the block succeeds it replaces `path` atomically.

    The temp file gets `path`'s usual permissions and is fsynced first; on any failure (Ctrl-C included)
    it is removed and the previous `path`, if any, is untouched.
    """
    path = check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (newlines as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy `src` over `dst` atomically: `dst` is either the old file or the complete new one."""
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
