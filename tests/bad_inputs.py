"""The bad-input catalogue's harness: each row is an input or fault, a command line, the exit code, a phrase the one
error line must contain, and, where something could be destroyed, the trees that must come out unchanged.

Rows live in tests/test_bad_inputs_*.py (one file per area). A row's `argv` and `guard` may use placeholders that
`expand` fills from the `places` mapping of the test's fixtures, e.g. "{tmp}", "{data}", "{run}", "{model}".
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from cli_helpers import clf


@dataclass(frozen=True)
class Case:
    """One catalogue row.

    Args:
        id: a short name shown by pytest.
        argv: the `clf` arguments, with {placeholders}.
        exit_code: the exit code expected.
        phrase: text the single "error: ..." line must contain (case-sensitive); "" for a success row.
        setup: builds the hostile input; called with the `places` mapping (paths) before the command.
        guard: trees (with {placeholders}) whose every file must be byte-identical after the command.
        check: a further assertion on the `places` mapping after the command (e.g. a file must not exist).
    """

    id: str
    argv: Sequence[str]
    exit_code: int
    phrase: str
    setup: Callable[[Mapping[str, Path]], None] | None = None
    guard: Sequence[str] = field(default_factory=tuple)
    check: Callable[[Mapping[str, Path]], None] | None = None


def expand(text: str, places: Mapping[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in places.items()})


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under `root` (links and special files by their kind)."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return {}
    if root.is_file() and not root.is_symlink():
        return {".": _file_hash(root)}
    digest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                digest[rel] = "link:" + os.readlink(path)
            elif stat.S_ISREG(mode):
                digest[rel] = _file_hash(path)
            elif stat.S_ISDIR(mode):
                digest[rel] = "dir"
            else:
                digest[rel] = "special"
    return digest


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_case(case: Case, places: Mapping[str, Path]):
    """Run one row and assert its contract: exit code, one error line with the phrase, no traceback, trees intact."""
    if case.setup is not None:
        case.setup(places)
    guarded = [Path(expand(g, places)) for g in case.guard]
    before = [tree_digest(g) for g in guarded]
    result = clf(*[expand(a, places) for a in case.argv])
    output = result.output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == case.exit_code, f"exit {result.exit_code}, expected {case.exit_code}:\n{output}"
    if case.phrase:
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, output
        assert case.phrase in errors[0], f"{case.phrase!r} not in {errors[0]!r}"
    for path, digest in zip(guarded, before):
        assert tree_digest(path) == digest, f"{path} changed"
    if case.check is not None:
        case.check(places)
    return result
