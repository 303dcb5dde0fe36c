"""Atomic file writes and output checks.

Every file clf writes goes through `atomic_output`: a temp file in the same folder, fsync, then a rename, so readers
never see half a file and a failure leaves the previous file intact. Every output path is checked with
`check_outputs` before any long work, with one rule for every command.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clf.errors import ClfError, StorageError, one_line

# Temp files are short and clf's own: a legal 255-character output name still gets a legal temp name beside it.
# Their name carries the writer: `.clf-<host tag>-<pid>-<random>.tmp` (see `temp_prefix`), so that
# `clean_stale_temps` removes only temps whose writer is provably gone, never a live writer's or a user's file.
TEMP_PREFIX = ".clf-"
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.clf-(?P<host>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-[a-z0-9_]{4,32}\.tmp")

PathLike = str | os.PathLike


def process_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status); else set and restored
    (briefly 077: a file another thread creates meanwhile is private rather than world-writable)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def file_mode(path: PathLike) -> int:
    """The existing file's permissions, else 0666 minus the umask (what a plain open() or `cp` would give).

    mkstemp creates 0600 files; without this, teammates on a shared machine could not read best.pt.
    """
    try:
        return Path(path).stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~process_umask()


def folder_mode() -> int:
    """0777 minus the umask: what mkdir (or `cp -r`) gives a new folder; mkdtemp gives 0700."""
    return 0o777 & ~process_umask()


def host_tag() -> str:
    """8 hex digits naming this machine in clf's temp names (a pid means nothing on another host of a shared disk)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_prefix(pid: int | None = None) -> str:
    """The start of a temp name clf writes: `.clf-<host tag>-<pid>-` (this process's pid by default)."""
    return f"{TEMP_PREFIX}{host_tag()}-{os.getpid() if pid is None else pid}-"


def is_clf_temp_name(name: str) -> bool:
    """True for a name of clf's temp pattern (`.clf-<host tag>-<pid>-<random>.tmp`), of any writer."""
    return _TEMP_NAME.fullmatch(name) is not None


def _pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (another user's counts); unknown counts as alive."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def is_stale_temp(path: PathLike, folder: bool = False) -> bool:
    """True only for a temp clf can prove it wrote and nobody is writing: its exact temp name, written on this
    machine by a process that no longer runs, a regular file (a folder with `folder`) itself, never a link, owned
    by this user. A reused pid keeps the temp (alive): clf leaves it rather than guess."""
    path = Path(path)
    match = _TEMP_NAME.fullmatch(path.name)
    if match is None or match["host"] != host_tag():
        return False
    try:
        info = path.lstat()
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)
    if not kind_ok or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        return False
    pid = int(match["pid"])
    return pid != os.getpid() and not _pid_alive(pid)


def free_space(path: PathLike) -> str:
    """Free space on the filesystem holding `path` (or its nearest existing parent), e.g. '1.2 MB free'."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1000
    return ""  # pragma: no cover


def is_torch_write_failure(exc: BaseException) -> bool:
    """torch's C++ zip writer (torch.save) failed to write: it reports a full disk only as a RuntimeError."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("writ" in text or "inline_container" in text)


def storage_error(path: PathLike, exc: BaseException) -> StorageError:
    """One line for a write that failed: the user's path, the reason, and the free space when the disk is full
    (or when torch's writer failed without saying why: a full disk is its usual cause)."""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or "no space left" in text or "fail" in text and "writ" in text:
        return StorageError(f"{path}: disk full ({free_space(path)}); free some space or write elsewhere")
    if is_torch_write_failure(exc):
        return StorageError(f"{path}: cannot write ({one_line(exc)}; {free_space(path)}); "
                            "free some space or write elsewhere")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"{path}: cannot write there ({getattr(exc, 'strerror', None) or 'permission denied'}); "
                            "choose a folder you can write to")
    if code == errno.ENAMETOOLONG:
        return StorageError(f"{path}: file name too long for this filesystem; choose a shorter one")
    reason = getattr(exc, "strerror", None) or one_line(exc)
    return StorageError(f"{path}: cannot write ({reason})")


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def check_output_file(path: PathLike) -> Path:
    """Fail before any work when `path` cannot be an output file.

    It must not be a folder or another non-regular file (a FIFO, a device: a rename would replace it), and its
    nearest existing parent must be a folder this process can write in (missing folders are created when the file
    is written, by every command alike).
    """
    path = Path(path)
    if len(path.name.encode()) > 255:  # first: stat() itself fails on such a name
        raise ClfError(f"{path}: file name longer than 255 bytes; choose a shorter one")
    if path.is_dir():
        raise ClfError(f"{path}: is a folder; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise ClfError(f"{path}: exists and is not a regular file (a device, FIFO or socket); give a file name")
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise ClfError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"{path}: cannot write in {parent} (permission denied or read-only); "
                           "choose a folder you can write to")
    return path


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when `a` and `b` name the same file (through links and relative parts), existing or not."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None] | None = None,
                  input_files: Iterable[PathLike] = ()) -> None:
    """Check every output of a command before its work: each a writable file path, none equal to another output
    or to any input.

    Args:
        outputs: flag name -> path (None: not asked for), e.g. {"--csv": "sub.csv", "--probs": None}.
        inputs: flag name -> input path the outputs must not replace, e.g. {"--sample-submission": ...}.
        input_files: further input files (e.g. the images to predict), named by their path in the message.

    Raises:
        ClfError: naming the output flag, its path and what it collides with.
    """
    given = [(flag, Path(path)) for flag, path in outputs.items() if path]
    for flag, path in given:
        check_output_file(path)
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[i + 1:]:
            if same_file(path, other):
                raise ClfError(f"{path}: {flag} and {other_flag} name the same file; give each its own")
    named_inputs = [(flag, Path(path)) for flag, path in (inputs or {}).items() if path]
    for flag, path in given:
        for input_flag, source in named_inputs:
            if same_file(path, source):
                raise ClfError(f"{path}: {flag} would overwrite the {input_flag} input; write to another file")
    files = [Path(p) for p in input_files]
    if files and given:
        resolved = {os.path.realpath(p): p for p in files}
        for flag, path in given:
            hit = resolved.get(os.path.realpath(path))
            if hit is not None:
                raise ClfError(f"{path}: {flag} would overwrite an input image; write to another file")


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; when the block succeeds it replaces `path` atomically.

    The temp file gets `path`'s usual permissions and is fsynced first; on any failure (Ctrl-C included)
    it is removed and the previous `path`, if any, is untouched. An OSError (full disk, read-only folder)
    becomes a StorageError naming `path`, never the temp file.
    """
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, exc) from None
    except RuntimeError as exc:  # torch's zip writer failed: "PytorchStreamWriter failed writing file ...",
        tmp.unlink(missing_ok=True)  # "[enforce fail at inline_container.cc] unexpected pos ..."
        if is_torch_write_failure(exc):
            raise storage_error(path, exc) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (newlines as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy `src` over `dst` atomically: `dst` is either the old file or the complete new one."""
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def clean_stale_temps(folder: PathLike) -> list[Path]:
    """Remove clf's own temp files left in `folder` by a killed process (kill -9 mid-write); returns them.

    Only files `is_stale_temp` proves stale go (clf's exact temp name, this machine, a writer no longer running,
    a regular file owned by this user): safe while other clf processes write in the same folder, and a user's
    file of a similar name or a link is never touched. Nothing to clean, or a folder that cannot be listed: [].
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if is_stale_temp(entry):
            try:
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed
