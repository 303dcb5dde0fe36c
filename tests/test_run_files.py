"""clf.run_files: the run folder's file names and the one reader of config.json and split.json."""

from __future__ import annotations

import json
import logging
import os

import pytest

from clf.run_files import (BEST_CKPT, CHECKPOINT_FILES, CONFIG_FILE, LAST_CKPT, RUN_FILES, SPLIT_FILE, RunFileError,
                           checkpoint_names, has_checkpoint, load_split, read_config, read_split, split_record,
                           train_settings, write_config, write_split)


def test_the_names_are_the_run_folder_contract():
    assert RUN_FILES == ("config.json", "split.json", "history.csv", "curves.png", "last.pt", "best.pt")
    assert CHECKPOINT_FILES == ("last.pt", "best.pt")
    assert checkpoint_names("best") == ("best.pt", "last.pt")
    assert checkpoint_names("last") == ("last.pt", "best.pt")


def test_has_checkpoint_needs_a_checkpoint_file(tmp_path):
    assert not has_checkpoint(tmp_path)
    (tmp_path / LAST_CKPT).mkdir()  # a folder named last.pt is not a checkpoint
    assert not has_checkpoint(tmp_path)
    (tmp_path / BEST_CKPT).write_bytes(b"x")
    assert has_checkpoint(tmp_path)


def test_config_round_trips(tmp_path):
    write_config(tmp_path, {"train": {"arch": "cnn"}, "augment": []})
    assert read_config(tmp_path) == {"train": {"arch": "cnn"}, "augment": []}
    assert (tmp_path / CONFIG_FILE).read_text().endswith("\n")


@pytest.mark.parametrize("text", ["[]", "null", "3"])
def test_json_that_is_not_an_object_is_refused(tmp_path, text):
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(RunFileError, match="^config.json is not a clf run config$"):
        read_config(tmp_path)


@pytest.mark.parametrize("config", [{"augment": []}, {"train": 3}])
def test_a_config_without_train_settings_is_not_a_run_config(tmp_path, config):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    assert read_config(tmp_path) == config  # an old config.json still gives its "augment" (export --tta)
    with pytest.raises(RunFileError, match="^config.json is not a clf run config$"):
        train_settings(read_config(tmp_path))


def test_an_unreadable_config_raises_os_or_value_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_bytes(b'{"train": "\xe9"}')
    with pytest.raises(UnicodeDecodeError):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    os.mkfifo(tmp_path / CONFIG_FILE)  # never opened for a blocking read
    with pytest.raises(ValueError, match="not a regular file"):
        read_config(tmp_path)


def test_split_round_trips_and_is_rewritten_only_when_it_changed(tmp_path):
    record = split_record(tmp_path, [str(tmp_path / "a" / "1.png")], ["b/2.png"])
    assert record == {"format": 1, "root": str(tmp_path.resolve()), "val": ["a/1.png"], "train": ["b/2.png"]}
    write_split(tmp_path, record)
    before = (tmp_path / SPLIT_FILE).stat().st_mtime_ns
    write_split(tmp_path, record)
    assert (tmp_path / SPLIT_FILE).stat().st_mtime_ns == before
    assert load_split(tmp_path / SPLIT_FILE) == {k: record[k] for k in ("root", "val", "train")}


@pytest.mark.parametrize(("payload", "problem"), [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"root": "/x", "val": []}', "no format number"),
    ('{"format": 9, "root": "/x"}', "format 9 is newer than this clf reads (1); upgrade clf"),
    ('{"format": 1, "root": "rel"}', "its root is not an absolute path"),
    ('{"format": 1, "root": "/x", "val": "a.png"}', "val and train must be lists of paths"),
])
def test_a_damaged_split_says_what_is_wrong(tmp_path, caplog, payload, problem):
    path = tmp_path / SPLIT_FILE
    path.write_text(payload)
    with pytest.raises(RunFileError) as info:
        load_split(path)
    assert str(info.value) == problem
    with caplog.at_level(logging.WARNING, logger="clf"):
        assert read_split(path) is None
    assert f"{path}: {problem}; not used for the parity check" in caplog.text


def test_read_split_of_a_missing_file_is_none_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="clf"):
        assert read_split(tmp_path / SPLIT_FILE) is None
    assert caplog.text == ""


def test_a_fifo_split_is_never_read_from(tmp_path, caplog):
    os.mkfifo(tmp_path / SPLIT_FILE)
    with caplog.at_level(logging.WARNING, logger="clf"):
        assert read_split(tmp_path / SPLIT_FILE) is None
    assert "cannot read it (not a regular file); not used for the parity check" in caplog.text
