"""clf.ownership: the marker file, what counts as foreign, check_clearable and clear_owned."""

from __future__ import annotations

import json

import pytest
from temp_helpers import write_stale_temp

from clf.errors import ClfError
from clf.ownership import (
    MARKER_NAME,
    check_clearable,
    clear_owned,
    foreign_entries,
    mark_folder,
    owned_kind,
    read_marker,
    record_files,
)


@pytest.fixture
def run(tmp_path):
    """A marked run folder holding two files clf wrote."""
    folder = tmp_path / "run"
    mark_folder(folder, "run", files=["last.pt"])
    record_files(folder, ["sub/history.csv"])
    (folder / "last.pt").write_bytes(b"ckpt")
    (folder / "sub").mkdir()
    (folder / "sub" / "history.csv").write_text("epoch\n")
    return folder


def test_the_marker_is_written_first_and_lists_the_files(run):
    marker = json.loads((run / MARKER_NAME).read_text())
    assert marker == {"tool": "clf", "format": 1, "kind": "run", "files": ["last.pt", "sub/history.csv"]}
    assert read_marker(run) == marker and owned_kind(run) == "run"


def test_record_files_adds_each_name_once_and_ignores_unmarked_folders(run, tmp_path):
    record_files(run, ["last.pt", "best.pt"])
    assert read_marker(run)["files"] == ["best.pt", "last.pt", "sub/history.csv"]
    plain = tmp_path / "plain"
    plain.mkdir()
    record_files(plain, ["x"])
    assert not (plain / MARKER_NAME).exists()


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../b"])
def test_marker_entries_stay_inside_the_folder(run, name):
    with pytest.raises(ValueError, match="marker entries are paths inside the folder"):
        record_files(run, [name])


@pytest.mark.parametrize("text", ["[]", "null", "{not json",
                                  '{"tool": "other", "format": 1, "kind": "run", "files": []}',
                                  '{"tool": "clf", "format": 99, "kind": "run", "files": []}',
                                  '{"tool": "clf", "format": 1, "kind": "mine", "files": []}',
                                  '{"tool": "clf", "format": 1, "kind": "run", "files": [1]}'])
def test_a_marker_that_is_not_clfs_is_no_marker(tmp_path, text):
    (tmp_path / MARKER_NAME).write_text(text)
    assert read_marker(tmp_path) is None and owned_kind(tmp_path) is None


def test_a_marker_that_is_a_link_is_no_marker(run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER_NAME).symlink_to(run / MARKER_NAME)
    assert read_marker(other) is None


def test_foreign_entries(run, tmp_path):
    assert foreign_entries(run) == []
    (run / "notes.txt").write_text("mine")
    (run / "sub" / "extra.csv").write_text("mine")
    (run / "to-data").symlink_to(tmp_path)
    (run / ".clf-abc.tmp").write_bytes(b"stale temp of clf's own")  # does not count
    assert sorted(foreign_entries(run)) == ["notes.txt", "sub/extra.csv", "to-data"]


def test_a_listed_name_replaced_by_a_link_is_foreign(run, tmp_path):
    (run / "last.pt").unlink()
    (run / "last.pt").symlink_to(tmp_path / "elsewhere.pt")
    assert foreign_entries(run) == ["last.pt"]


def test_check_clearable(run, tmp_path):
    check_clearable(run, "run", "run folder")  # only clf's files: fine
    with pytest.raises(ClfError, match=r"is a clf run folder, not a sample-data folder; choose another name$"):
        check_clearable(run, "sample-data", "sample-data folder")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ClfError) as error:
        check_clearable(run, "run", "run folder")
    assert str(error.value) == (f"{run}: holds 1 file(s) clf did not write (notes.txt); --overwrite only removes "
                                "clf's own files: move them out or choose another name")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("a", "b", "c", "d"):
        (plain / name).write_text("x")
    with pytest.raises(ClfError) as error:
        check_clearable(plain, "run", "run folder")
    assert str(error.value) == (f"{plain}: not a run folder written by clf (no {MARKER_NAME}; holds a, b, c and 1 "
                                "more); --overwrite only replaces clf's own folders: remove it yourself or choose "
                                "another name")


def test_clear_owned_removes_clfs_files_and_keeps_the_marker(run):
    write_stale_temp(run, b"stale")
    clear_owned(run, "run", "run folder")
    assert sorted(p.name for p in run.iterdir()) == [MARKER_NAME]  # sub/ was clf's and is empty: gone
    assert read_marker(run)["files"] == []


def test_clear_owned_keeps_a_users_file_named_like_a_temp(run):
    """issue 24: only temps clf can prove stale go (clf.atomic.is_stale_temp); a look-alike blocks nothing either."""
    (run / ".clf-old.tmp").write_bytes(b"the user's")
    clear_owned(run, "run", "run folder")
    assert sorted(p.name for p in run.iterdir()) == sorted([".clf-old.tmp", MARKER_NAME])


def test_clear_owned_keeps_an_empty_folder_of_the_users(run):
    (run / "mine").mkdir()  # an empty folder: nothing foreign to refuse, but not clf's to remove
    clear_owned(run, "run", "run folder")
    assert (run / "mine").is_dir()


def test_clear_owned_refuses_and_deletes_nothing(run, tmp_path):
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ClfError):
        clear_owned(run, "run", "run folder")
    assert (run / "last.pt").exists() and (run / "notes.txt").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "last.pt").write_bytes(b"x")
    with pytest.raises(ClfError, match="not a run folder written by clf"):
        clear_owned(plain, "run", "run folder")
    assert (plain / "last.pt").exists()


def test_mark_folder_checks_the_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        mark_folder(tmp_path / "x", "mine")


def nested_run(run):
    """A clf run folder of its own inside `run` (a refit), holding one file it lists."""
    refit = run / "refit"
    mark_folder(refit, "run", files=["best.pt"])
    (refit / "best.pt").write_bytes(b"refit")
    return refit


def test_a_nested_clf_folder_is_checked_and_cleared_by_its_own_marker(run):
    refit = nested_run(run)
    foreign = r"holds 2 file\(s\) clf did not write \(refit/\.clf-folder\.json, refit/best\.pt\)"
    with pytest.raises(ClfError, match=foreign):
        check_clearable(run, "run", "run folder")  # not named nested: its files are not the run's
    check_clearable(run, "run", "run folder", nested=["refit"])
    clear_owned(run, "run", "run folder", nested=["refit"])
    assert not refit.exists() and not (run / "last.pt").exists() and read_marker(run)["files"] == []


@pytest.mark.parametrize("spoil", ["user file", "no marker"])
def test_a_nested_folder_with_anything_not_clfs_refuses(run, spoil):
    refit = nested_run(run)
    if spoil == "user file":
        (refit / "notes.txt").write_text("mine")
        message = f"{refit}: holds 1 file(s) clf did not write (notes.txt)"
    else:
        (refit / MARKER_NAME).unlink()
        message = f"{run}: holds 1 file(s) clf did not write (refit/best.pt)"
    with pytest.raises(ClfError) as error:
        clear_owned(run, "run", "run folder", nested=["refit"])
    assert str(error.value).startswith(message)
    assert (refit / "best.pt").read_bytes() == b"refit" and (run / "last.pt").exists()
