"""clf.data.files: a folder that cannot be listed is never dropped silently (warned, collected, or --strict)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import clf.data.files as files_module
from clf.data.files import find_images, list_images
from clf.errors import DataError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # listing never decodes
    return path


def too_long_folder(root: Path) -> Path:
    """A folder whose path is longer than PATH_MAX (built step by step with relative names), holding deep.png.

    Listing it fails with ENAMETOOLONG even for root, unlike chmod 000.
    """
    home = os.getcwd()
    os.chdir(root)
    try:
        for _ in range(18):  # 18 x 251 bytes > 4096
            os.mkdir("d" * 250)
            os.chdir("d" * 250)
        touch(Path("deep.png"))
    finally:
        os.chdir(home)
    return root / "/".join(["d" * 250] * 18)


def test_a_path_longer_than_the_system_allows_is_reported(tmp_path: Path, caplog):
    touch(tmp_path / "a" / "x.png")
    (tmp_path / "long").mkdir()
    too_long_folder(tmp_path / "long")
    problems: list[str] = []
    with caplog.at_level(logging.WARNING, logger="clf"):
        images = find_images(tmp_path, recursive=True, problems=problems)
    assert images == [tmp_path / "a" / "x.png"]
    assert len(problems) == 1 and problems == caplog.messages
    assert problems[0].startswith(f"{tmp_path / 'long'}/ddd")
    assert problems[0].endswith(": cannot list the folder (File name too long); its images are not included")


def deny(monkeypatch, blocked: Path) -> None:
    """os.scandir raises PermissionError for `blocked` (tests run as root, where chmod 000 does not block)."""
    real = os.scandir

    def scandir(path=".", *args):
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args)

    monkeypatch.setattr(files_module.os, "scandir", scandir)


def test_an_unlistable_sub_folder_is_warned_and_collected(tmp_path: Path, monkeypatch, caplog):
    touch(tmp_path / "a" / "x.png")
    touch(tmp_path / "locked" / "y.png")
    deny(monkeypatch, tmp_path / "locked")
    problems: list[str] = []
    with caplog.at_level(logging.WARNING, logger="clf"):
        images = list_images(tmp_path, recursive=True, problems=problems)
    assert images == [tmp_path / "a" / "x.png"]
    expected = f"{tmp_path / 'locked'}: cannot list the folder (Permission denied); its images are not included"
    assert problems == [expected] and caplog.messages == [expected]


def test_strict_stops_at_an_unlistable_sub_folder(tmp_path: Path, monkeypatch):
    touch(tmp_path / "a" / "x.png")
    touch(tmp_path / "locked" / "y.png")
    deny(monkeypatch, tmp_path / "locked")
    with pytest.raises(DataError) as err:
        list_images(tmp_path, recursive=True, strict=True)
    assert str(err.value) == f"{tmp_path / 'locked'}: cannot list the folder (Permission denied); stopped (--strict)"


def test_an_unlistable_top_folder_is_an_error_not_an_empty_list(tmp_path: Path, monkeypatch):
    touch(tmp_path / "x.png")
    deny(monkeypatch, tmp_path)
    with pytest.raises(DataError) as err:
        find_images(tmp_path)
    assert str(err.value) == f"{tmp_path}: cannot list the folder (Permission denied)"


def test_links_to_folders_are_reported_not_followed(tmp_path: Path, caplog):
    touch(tmp_path / "real" / "x.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data")
    touch(tmp_path / "data" / "z.png")
    problems: list[str] = []
    assert find_images(tmp_path / "data", recursive=True, problems=problems) == [tmp_path / "data" / "z.png"]
    assert problems == [
        f"{tmp_path / 'data' / 'linked'}: a link to a folder, not followed; its images are not included",
        f"{tmp_path / 'data' / 'loop'}: a link to a folder, not followed; its images are not included",
    ]
    assert find_images(tmp_path / "data") == [tmp_path / "data" / "z.png"]  # not recursive: nothing to report


def test_special_files_are_listed_and_left_to_the_reader(tmp_path: Path):
    """Listing only looks at names: a FIFO named x.jpg is listed, and reading it reports it (never opens it)."""
    os.mkfifo(tmp_path / "x.jpg")
    touch(tmp_path / "y.png")
    assert find_images(tmp_path) == [tmp_path / "x.jpg", tmp_path / "y.png"]
