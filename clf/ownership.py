"""Which folders and files clf wrote: a marker file, written first, lists them; clf deletes nothing else.

A folder clf creates (a run folder, a sample competition) gets ``.clf-folder.json``::

    {"tool": "clf", "format": 1, "kind": "run", "files": ["best.pt", "config.json", ...]}

``files`` holds the paths (relative, "/"-separated) of every file clf wrote there; writers add theirs with
`record_files` before writing them. `--overwrite` then removes exactly those, and refuses (one line naming
the folder and what else it holds) when anything else is there: a file of the user's, a replaced file, a link.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from clf.atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write_text, check_output_file, clean_stale_temps
from clf.errors import ClfError

MARKER_NAME = ".clf-folder.json"
MARKER_TOOL = "clf"
MARKER_FORMAT = 1
KINDS = ("run", "sample-data", "triton-model", "search")  # search: a `clf tune` folder
_SHOWN = 3


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The folder's marker (tool, format, kind, files), or None when the folder is not clf's."""
    marker = Path(folder) / MARKER_NAME
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != MARKER_TOOL or data.get("kind") not in KINDS:
        return None
    if not isinstance(data.get("format"), int) or data["format"] > MARKER_FORMAT:
        return None
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return data


def owned_kind(folder: str | os.PathLike) -> str | None:
    """"run", "sample-data", or None when `folder` carries no valid clf marker."""
    marker = read_marker(folder)
    return marker["kind"] if marker else None


def mark_folder(folder: str | os.PathLike, kind: str, files: Iterable[str] = ()) -> None:
    """Create `folder` (parents too) and write its marker first, listing `files` (relative paths) as clf's."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, kind, sorted(set(files)))


def record_files(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Add `names` (paths relative to `folder`) to its marker; nothing happens in an unmarked folder."""
    marker = read_marker(folder)
    if marker is None:
        return
    known = set(marker["files"])
    new = {_relative(n) for n in names} - known
    if new:
        _write(Path(folder), marker["kind"], sorted(known | new))


def _write(folder: Path, kind: str, files: list[str]) -> None:
    payload = {"tool": MARKER_TOOL, "format": MARKER_FORMAT, "kind": kind, "files": files}
    atomic_write_text(folder / MARKER_NAME, json.dumps(payload, indent=1) + "\n")


def _relative(name: str | os.PathLike) -> str:
    path = Path(name).as_posix()
    if path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"{name}: marker entries are paths inside the folder")
    return path


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """What in `folder` clf cannot prove it wrote: unlisted files, links, anything that is not a regular file
    where a listed file should be. Names of clf's temp files (`.clf-*.tmp`, top level) do not count: they block
    nothing, and are removed only when proven stale (clf.atomic.is_stale_temp). Everything, for an unmarked folder."""
    folder = Path(folder)
    marker = read_marker(folder)
    owned = set(marker["files"]) if marker else set()
    foreign: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():  # os.walk does not descend into it: it is an entry of its own
                foreign.append((here / name).relative_to(folder).as_posix())
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if rel == MARKER_NAME and marker:
                continue
            if here == folder and name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                continue
            if rel not in owned or not stat.S_ISREG(path.lstat().st_mode):
                foreign.append(rel)
    return foreign


def owned_subfolders(folder: str | os.PathLike, names: Iterable[str], kind: str) -> list[str]:
    """Those of `names` that are sub-folders of `folder` (not links) carrying clf's marker of `kind`: clf folders
    of their own inside a clf folder (a run's refit), checked and cleared by their own markers."""
    folder = Path(folder)
    return [name for name in names if (folder / name).is_dir() and not (folder / name).is_symlink()
            and owned_kind(folder / name) == kind]


def check_clearable(folder: str | os.PathLike, kind: str, what: str, nested: Iterable[str] = ()) -> None:
    """Refuse, in one line, to clear a folder that is not clf's `kind` folder or holds anything clf did not write.

    Args:
        what: how the folder is called in the message, e.g. "run folder", "sample-data folder".
        nested: names of sub-folders that, when they carry clf's marker of `kind`, are checked by their own marker
            (an unmarked one counts as foreign like any other entry).
    """
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        entries = sorted(p.name for p in folder.iterdir())
        raise ClfError(f"{folder}: not a {what} written by clf (no {MARKER_NAME}; holds {_first(entries)}); "
                       "--overwrite only replaces clf's own folders: remove it yourself or choose another name")
    if marker["kind"] != kind:
        raise ClfError(f"{folder}: is a clf {marker['kind']} folder, not a {what}; choose another name")
    owned = owned_subfolders(folder, nested, kind)
    foreign = [entry for entry in foreign_entries(folder) if entry.split("/")[0] not in owned]
    if foreign:
        raise ClfError(f"{folder}: holds {len(foreign)} file(s) clf did not write ({_first(foreign)}); "
                       "--overwrite only removes clf's own files: move them out or choose another name")
    for name in owned:
        check_clearable(folder / name, kind, what)


def clear_owned(folder: str | os.PathLike, kind: str, what: str, nested: Iterable[str] = ()) -> None:
    """Delete the files clf wrote in `folder` (after `check_clearable`), then the folders they leave empty.

    The marker stays, listing nothing: the folder remains provably clf's while it is refilled. A `nested` clf
    folder (see check_clearable) is cleared by its own marker and removed, marker and all.
    """
    folder = Path(folder)
    check_clearable(folder, kind, what, nested)
    for name in owned_subfolders(folder, nested, kind):
        clear_owned(folder / name, kind, what)
        (folder / name / MARKER_NAME).unlink()
        try:
            os.rmdir(folder / name)
        except OSError:  # an empty folder of the user's left inside: the folder stays, with nothing of clf's
            pass
    marker = read_marker(folder)
    assert marker is not None
    for rel in marker["files"]:
        (folder / rel).unlink(missing_ok=True)
    parents = {parent for rel in marker["files"] for parent in Path(rel).parents if parent != Path(".")}
    for parent in sorted(parents, key=lambda p: -len(p.parts)):  # deepest first; only folders left empty go
        try:
            os.rmdir(folder / parent)
        except OSError:
            pass
    clean_stale_temps(folder)  # only temps whose writer is provably gone (clf.atomic.is_stale_temp)
    _write(folder, kind, [])


def _first(items: list[str]) -> str:
    if not items:
        return "nothing"
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def head_holds(path: str | os.PathLike, tag: bytes, size: int = 4096, start: bytes = b"") -> bool:
    """Whether the file's first `size` bytes begin with `start` and hold `tag`: how clf knows a single file it wrote
    (a report, a plot) from one it did not; False for anything unreadable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(size)
    except OSError:
        return False
    return head.startswith(start) and tag in head


def check_replaceable_file(path: str | os.PathLike, wrote_it: Callable[[Path], bool], refusal: str) -> Path:
    """A writable output path that is new or a file clf wrote (`wrote_it`); else ClfError "PATH: `refusal`".

    Raises:
        ClfError / StorageError: one line naming the file.
    """
    checked = check_output_file(path)
    if checked.exists() and not wrote_it(checked):
        raise ClfError(f"{checked}: {refusal}")
    return checked
