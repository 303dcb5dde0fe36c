"""clf.atomic: atomic writes, the one output check of every command, storage errors naming the user's path."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from clf.atomic import (
    TEMP_PREFIX,
    atomic_copy,
    atomic_output,
    atomic_write_text,
    check_output_file,
    check_outputs,
    clean_stale_temps,
    folder_mode,
    is_clf_temp_name,
    is_stale_temp,
    process_umask,
    storage_error,
    temp_prefix,
)
from clf.errors import ClfError, StorageError
from temp_helpers import stale_temp_name, write_stale_temp


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    out = tmp_path / "a.txt"
    atomic_write_text(out, "one")
    atomic_write_text(out, "two")
    assert out.read_text() == "two"
    assert names(tmp_path) == ["a.txt"]


def test_failure_keeps_the_previous_file_and_removes_the_temp(tmp_path):
    out = tmp_path / "a.txt"
    atomic_write_text(out, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert names(tmp_path) == ["a.txt"]


def test_interrupt_keeps_the_previous_file(tmp_path):
    out = tmp_path / "a.txt"
    atomic_write_text(out, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "old" and names(tmp_path) == ["a.txt"]


def test_a_255_byte_name_is_writable(tmp_path):
    """The temp name is short and clf's own, so the longest legal output name still works."""
    out = tmp_path / ("x" * 251 + ".csv")
    atomic_write_text(out, "id,label\n")
    assert out.read_text() == "id,label\n"
    assert names(tmp_path) == [out.name]


def test_temp_files_are_named_as_clfs_own(tmp_path):
    with atomic_output(tmp_path / "model.onnx") as tmp:
        assert tmp.name.startswith(TEMP_PREFIX) and tmp.name.endswith(".tmp")
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_missing_parent_folders_are_created(tmp_path):
    out = tmp_path / "new" / "deeper" / "report.json"
    atomic_write_text(out, "{}")
    assert out.read_text() == "{}"


def test_new_files_get_normal_permissions(tmp_path):
    out = tmp_path / "a.txt"
    atomic_write_text(out, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_copy_is_atomic_and_exact(tmp_path):
    src = tmp_path / "last.pt"
    src.write_bytes(b"\x00\x01" * 1000)
    atomic_copy(src, tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == src.read_bytes()


def test_os_error_names_the_users_path_not_the_temp(tmp_path, monkeypatch):
    out = tmp_path / "sub.csv"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(StorageError) as info:
        atomic_write_text(out, "x")
    message = str(info.value)
    assert message.startswith(f"{out}: disk full (") and "free); free some space or write elsewhere" in message
    assert TEMP_PREFIX not in message
    assert names(tmp_path) == []


def test_torch_write_failure_is_a_storage_error(tmp_path):
    out = tmp_path / "last.pt"
    with pytest.raises(StorageError, match=r"last.pt: disk full \("):
        with atomic_output(out):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
    assert names(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "cannot write there (Permission denied); choose a folder you can write to"),
        (errno.EROFS, "cannot write there (Read-only file system); choose a folder you can write to"),
        (errno.ENAMETOOLONG, "file name too long for this filesystem; choose a shorter one"),
        (errno.EIO, "cannot write (Input/output error)"),
    ],
)
def test_storage_error_messages(tmp_path, code, expected):
    error = storage_error(tmp_path / "x.csv", OSError(code, os.strerror(code)))
    assert str(error) == f"{tmp_path / 'x.csv'}: {expected}"


def test_output_checks_refuse_folders_devices_and_files_as_folders(tmp_path):
    with pytest.raises(ClfError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    with pytest.raises(ClfError, match="exists and is not a regular file"):
        check_output_file("/dev/null")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ClfError, match="exists and is not a regular file"):
        check_output_file(fifo)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClfError, match=r"file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "out.csv")
    with pytest.raises(ClfError, match="longer than 255 bytes"):
        check_output_file(tmp_path / ("x" * 256))


def test_output_in_an_unwritable_folder_fails_before_the_work(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests may run as root, where chmod does not bite
    with pytest.raises(StorageError, match=r"out.csv: cannot write in .* \(permission denied or read-only\)"):
        check_output_file(tmp_path / "out.csv")


def test_outputs_may_not_collide_with_each_other_or_with_inputs(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\n")
    image = tmp_path / "images" / "img_0001.png"
    image.parent.mkdir()
    image.write_bytes(b"png")
    out = tmp_path / "out.csv"
    with pytest.raises(ClfError, match=r"out.csv: --csv and --probs name the same file"):
        check_outputs({"--csv": out, "--probs": tmp_path / "." / "out.csv"})
    with pytest.raises(ClfError, match=r"sample.csv: --csv would overwrite the --sample-submission input"):
        check_outputs({"--csv": sample}, inputs={"--sample-submission": sample})
    with pytest.raises(ClfError, match=r"img_0001.png: --csv would overwrite an input image"):
        check_outputs({"--csv": image}, input_files=[image])
    os.symlink(sample, tmp_path / "alias.csv")
    with pytest.raises(ClfError, match="would overwrite the --sample-submission input"):
        check_outputs({"--csv": tmp_path / "alias.csv"}, inputs={"--sample-submission": sample})
    check_outputs({"--csv": out, "--probs": None}, inputs={"--sample-submission": sample}, input_files=[image])


def test_stale_temps_of_clf_are_cleaned_and_nothing_else(tmp_path):
    stale = write_stale_temp(tmp_path, b"half a checkpoint")
    (tmp_path / ".clf-notes.txt").write_text("mine")
    (tmp_path / "data.tmp").write_text("mine")
    (tmp_path / "last.pt").write_bytes(b"pt")
    removed = clean_stale_temps(tmp_path)
    assert [p.name for p in removed] == [stale.name]
    assert names(tmp_path) == [".clf-notes.txt", "data.tmp", "last.pt"]


# --- issue 24: which temp files are provably clf's and dead (kill -9 mid-export) ----------------------------------


def test_a_temp_name_carries_this_host_and_this_pid(tmp_path):
    with atomic_output(tmp_path / "model.onnx") as tmp:
        assert tmp.name.startswith(temp_prefix()) and is_clf_temp_name(tmp.name)
        assert str(os.getpid()) in tmp.name
        assert not is_stale_temp(tmp)  # this process is writing it


def test_only_provably_stale_temps_are_removed(tmp_path):
    stale = write_stale_temp(tmp_path)
    live = tmp_path / stale_temp_name(pid=os.getpid(), random="livewrit")  # a writer still running
    live.write_bytes(b"being written")
    parent = tmp_path / stale_temp_name(pid=os.getppid(), random="parentpid")
    parent.write_bytes(b"another live clf")
    lookalikes = [".clf-mine.tmp", ".clf-abc123.tmp", ".clf-12345678-1-abcdefgh.tmp",  # other host tag
                  stale_temp_name(random="AB") + ".bak", "x" + stale_temp_name()]
    for name in lookalikes:
        (tmp_path / name).write_text("the user's")
    folder = tmp_path / stale_temp_name(random="adirectr")  # a folder is not a temp file
    folder.mkdir()
    assert clean_stale_temps(tmp_path) == [stale]
    assert sorted(names(tmp_path)) == sorted([live.name, parent.name, *lookalikes, folder.name])
    assert is_stale_temp(folder, folder=True)


def test_a_link_named_like_a_stale_temp_is_not_followed_nor_removed(tmp_path):
    target = tmp_path / "precious.onnx"
    target.write_bytes(b"the user's model")
    link = tmp_path / stale_temp_name()
    link.symlink_to(target)
    dangling = tmp_path / stale_temp_name(random="dangling")
    dangling.symlink_to(tmp_path / "gone")
    assert clean_stale_temps(tmp_path) == []
    assert link.is_symlink() and dangling.is_symlink() and target.read_bytes() == b"the user's model"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file another user owns")
def test_another_users_temp_is_not_removed(tmp_path):
    other = write_stale_temp(tmp_path)
    os.chown(other, 12345, 12345)
    assert clean_stale_temps(tmp_path) == [] and other.exists()


# --- issue 24: outputs are readable as `cp` would leave them (umask), never mkstemp's 0600 --------------------------


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o027
    os.umask(previous)


def test_process_umask_is_read_without_changing_it(umask_027):
    assert process_umask() == 0o027
    assert process_umask() == 0o027  # not reset by reading it
    assert folder_mode() == 0o750


def test_every_atomic_write_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.csv", "id,label\n")
    atomic_copy(tmp_path / "a.csv", tmp_path / "b.csv")
    with atomic_output(tmp_path / "new" / "c.onnx") as tmp:
        tmp.write_bytes(b"model")
    for name in ("a.csv", "b.csv", "new/c.onnx"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    (tmp_path / "a.csv").chmod(0o604)  # the user's choice for an existing file stays, as with `cp` onto it
    atomic_write_text(tmp_path / "a.csv", "id,label\nx,y\n")
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o604
