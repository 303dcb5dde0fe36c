"""Fold assignment, the fold-group record and oof.csv (clf/data/folds.py), and the pieces of clf/train/folds.py that
need no training: the class-count check, the CV score, a fold run's split, --overwrite of a group folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.data.folds import (GROUP_FILE, FoldGroup, OutOfFold, is_fold_group, member_folders, member_name, read_group,
                            read_oof, write_group, write_oof)
from clf.data.split import stratified_folds
from clf.errors import ClfError, DataError
from clf.ownership import mark_folder, read_marker
from clf.probabilities import log_loss
from clf.train.build import split_training_set
from clf.train.fold_group_dir import clear_group_dir, prepare_group_dir
from clf.train.fold_scoring import cv_score
from clf.train.folds import check_fold_counts

LABELS = np.array([0] * 10 + [1] * 7 + [2] * 5 + [3] * 3)


# ---------------------------------------------------------------- fold assignment


@pytest.mark.parametrize("folds", [2, 3])
def test_folds_are_stratified_and_cover_every_item_once(folds):
    assignment = stratified_folds(LABELS, folds, seed=0)
    assert assignment.shape == LABELS.shape and assignment.dtype == np.int64
    assert set(assignment.tolist()) == set(range(folds))  # one fold each: every item validates exactly once
    for cls in np.unique(LABELS):
        per_fold = Counter(assignment[LABELS == cls].tolist())
        counts = [per_fold.get(k, 0) for k in range(folds)]
        assert max(counts) - min(counts) <= 1, (cls, counts)
    sizes = np.bincount(assignment, minlength=folds)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(LABELS)


def test_folds_are_stable_under_the_seed_and_change_with_it():
    first = stratified_folds(LABELS, 3, seed=7)
    np.random.seed(123)  # the global state does not matter
    assert np.array_equal(first, stratified_folds(LABELS, 3, seed=7))
    assert not np.array_equal(first, stratified_folds(LABELS, 3, seed=8))


def test_folds_below_two_are_refused():
    with pytest.raises(ValueError, match="folds must be >= 2, got 1"):
        stratified_folds(LABELS, 1, seed=0)


def test_a_fold_run_validates_on_its_fold_and_trains_on_the_rest():
    labelled = LabelledSet([f"img{i}.png" for i in range(len(LABELS))], LABELS.tolist(), ["a", "b", "c", "d"])
    assignment = stratified_folds(LABELS, 3, seed=5)
    seen = []
    for fold in range(3):
        cfg = TrainConfig(data="d", folds=3, fold_seed=5, fold=fold)
        split = split_training_set(labelled, cfg)
        expected_val = [f"img{i}.png" for i in np.flatnonzero(assignment == fold)]
        assert split.val.paths == expected_val
        assert sorted(split.train.paths + split.val.paths) == sorted(labelled.paths)
        seen += split.val.paths
    assert sorted(seen) == sorted(labelled.paths)


@pytest.mark.parametrize("options, message", [
    ({"folds": 1}, "--folds must be >= 2 (each of K folds validates on 1/K of the data), got 1"),
    ({"folds": 0}, "--folds must be >= 2 (each of K folds validates on 1/K of the data), got 0"),
    ({"folds": 3, "fold_seed": -1}, "--fold-seed must be >= 0 and < 2147483648 (2**31), got -1"),
    ({"folds": 3, "fold": 3}, "fold 3 is not one of the 3 folds"),
    ({"fold": 0}, "fold 0 needs --folds K"),
])
def test_fold_settings_are_checked(options, message):
    with pytest.raises(ClfError) as caught:
        TrainConfig(data="d", **options)
    assert str(caught.value) == message


def test_every_class_needs_at_least_k_images():
    labelled = LabelledSet([f"i{i}" for i in range(len(LABELS))], LABELS.tolist(), ["a", "b", "c", "d"])
    check_fold_counts(labelled, TrainConfig(data="/data", folds=3))
    with pytest.raises(DataError) as caught:
        check_fold_counts(labelled, TrainConfig(data="/data", folds=4))
    assert str(caught.value) == ("/data: --folds 4 needs at least 4 images in every class, but class 'd' has 3; "
                                 "use --folds 3 or fewer, or add images")


# ---------------------------------------------------------------- the group record


def a_group(**changes) -> FoldGroup:
    fields = dict(folds=3, fold_seed=1, members=[member_name(k) for k in range(3)], done=["fold-0"],
                  classes=["a", "b"], arch="cnn", config={"data": "/d", "folds": 3, "fold_seed": 1})
    return FoldGroup(**{**fields, **changes})


def test_group_record_round_trip(tmp_path):
    group = a_group(cv={"mean_val_acc": 0.5, "std_val_acc": 0.1, "oof_acc": 0.5, "oof_log_loss": 0.7})
    path = write_group(tmp_path, group)
    assert path == tmp_path / GROUP_FILE and is_fold_group(tmp_path)
    assert json.loads(path.read_text())["kind"] == "clf-fold-group"
    again = read_group(tmp_path)
    assert again == group
    assert member_folders(tmp_path, again) == [tmp_path / "fold-0", tmp_path / "fold-1", tmp_path / "fold-2"]
    assert not again.finished and a_group(done=["fold-0", "fold-1", "fold-2"]).finished


@pytest.mark.parametrize("text, message", [
    ("{not json", "group.json: unreadable fold-group record (JSONDecodeError); retrain with --overwrite"),
    ('{"kind": "something"}',
     "group.json: not a clf fold-group record; retrain with `clf train --folds K --overwrite`"),
    ('[1, 2]', "group.json: not a clf fold-group record"),
    ('{"kind": "clf-fold-group", "folds": 2, "members": ["fold-0", "fold-1"]}',
     "group.json: damaged fold-group record (field 'fold_seed'); retrain with --overwrite"),
    ('{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, "members": "fold-0"}',
     "group.json: damaged fold-group record (field 'members' is str, not a list)"),
    ('{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, "members": ["fold-0", "../x"]}',
     "group.json: member '../x' is not a folder name inside the group; retrain with --overwrite"),
    ('{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, "members": ["fold-0", "/etc"]}',
     "group.json: member '/etc' is not a folder name inside the group"),
    ('{"kind": "clf-fold-group", "folds": 3, "fold_seed": 0, "members": ["fold-0", "fold-1"]}',
     "group.json: lists 2 member(s) for 3 folds; retrain with --overwrite"),
    ('{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, "members": ["fold-0", "fold-1"], "cv": [1]}',
     "group.json: damaged fold-group record (field 'cv' is list, not a mapping)"),
    ('{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, "members": ["fold-0", "fold-1"], "config": "x"}',
     "group.json: damaged fold-group record (field 'config' is str, not a mapping)"),
])
def test_damaged_group_records_are_one_line(tmp_path, text, message):
    (tmp_path / GROUP_FILE).write_text(text)
    with pytest.raises(DataError) as caught:
        read_group(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_a_record_is_not_a_group(tmp_path):
    assert not is_fold_group(tmp_path)
    with pytest.raises(DataError, match="not a fold group \\(no group.json\\); train one with `clf train --folds K`"):
        read_group(tmp_path)


# ---------------------------------------------------------------- oof.csv


def test_oof_round_trip(tmp_path):
    probs = np.array([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
    oof = OutOfFold(["a/1.png", "b/2.png", "x,y.png"], ["a", "b", "a"], np.array([0, 1, 0]), ["a", "b"], probs)
    write_oof(tmp_path / "oof.csv", oof)
    lines = (tmp_path / "oof.csv").read_text().splitlines()
    assert lines[0] == "id,label,fold,a,b" and lines[1] == "a/1.png,a,0,0.9,0.1" and lines[3] == '"x,y.png",a,0,0.5,0.5'
    again = read_oof(tmp_path / "oof.csv")
    assert again.ids == oof.ids and again.labels == oof.labels and again.classes == ["a", "b"]
    assert np.array_equal(again.folds, oof.folds) and np.allclose(again.probs, probs)
    assert again.label_indices().tolist() == [0, 1, 0]


@pytest.mark.parametrize("text, message", [
    ("", "not an out-of-fold file (header must start with id,label,fold and list the classes)"),
    ("id,label,a,b\n", "not an out-of-fold file"),
    ("id,label,fold,a,b\nx,c,0,0.5,0.5\n", "line 2 has 5 fields or an unknown label"),
    ("id,label,fold,a,b\nx,a,0,0.5\n", "line 2 has 4 fields or an unknown label"),
    ("id,label,fold,a,b\nx,a,zero,0.5,0.5\n", "line 2 has a value that is not a number"),
    ("id,label,fold,a,b\nx,a,0,nan,0.5\n", "line 2 has a probability that is not finite"),
])
def test_damaged_oof_files_are_one_line(tmp_path, text, message):
    (tmp_path / "oof.csv").write_text(text)
    with pytest.raises(DataError) as caught:
        read_oof(tmp_path / "oof.csv")
    assert message in str(caught.value)


def test_missing_oof_file(tmp_path):
    with pytest.raises(DataError, match="cannot read the out-of-fold predictions \\(FileNotFoundError\\)"):
        read_oof(tmp_path / "oof.csv")


# ---------------------------------------------------------------- the CV score


def test_cv_score_by_hand():
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    oof = OutOfFold(["1", "2", "3", "4"], ["a", "b", "b", "b"], np.array([0, 0, 1, 1]), ["a", "b"], probs)
    cv = cv_score(oof, [0.5, 1.0])
    assert cv["mean_val_acc"] == pytest.approx(0.75) and cv["std_val_acc"] == pytest.approx(0.25)
    assert cv["oof_acc"] == pytest.approx(0.75)  # row 3 predicts a, is b
    expected = -np.mean(np.log([0.8, 0.6, 0.3, 0.9]))
    assert cv["oof_log_loss"] == pytest.approx(expected) == log_loss(probs, [0, 1, 1, 1])


# ---------------------------------------------------------------- the group folder and --overwrite


def finished_group(root: Path) -> Path:
    """A group folder as clf leaves it: marker, group.json, oof.csv, two marked fold runs."""
    group = root / "g"
    mark_folder(group, "run", files=["group.json", "oof.csv"])
    write_group(group, a_group(folds=2, members=["fold-0", "fold-1"]))
    (group / "oof.csv").write_text("id,label,fold,a,b\n")
    for k in range(2):
        mark_folder(group / f"fold-{k}", "run", files=["config.json", "best.pt"])
        (group / f"fold-{k}" / "config.json").write_text("{}")
        (group / f"fold-{k}" / "best.pt").write_bytes(b"weights")
    return group


def test_overwrite_clears_a_group_then_marks_it_again(tmp_path):
    group = finished_group(tmp_path)
    prepare_group_dir(group, overwrite=True)
    assert sorted(p.name for p in group.iterdir()) == [".clf-folder.json"]
    assert read_marker(group)["files"] == ["group.json", "oof.csv"]


def test_a_group_is_not_replaced_without_overwrite(tmp_path):
    group = finished_group(tmp_path)
    with pytest.raises(ClfError) as caught:
        prepare_group_dir(group, overwrite=False)
    assert str(caught.value) == (f"{group}: fold group already exists; use --resume {group} to continue it, "
                                 "--overwrite to start over, or another --name")


@pytest.mark.parametrize("where, shown", [("fold-1/notes.txt", "fold-1: holds 1 file(s) clf did not write (notes.txt)"),
                                          ("notes.txt", "g: holds 1 file(s) clf did not write (notes.txt)"),
                                          ("fold-7/x.txt", "g: holds 1 file(s) clf did not write (fold-7/x.txt)")])
def test_overwrite_refuses_a_group_holding_user_files(tmp_path, where, shown):
    group = finished_group(tmp_path)
    (group / where).parent.mkdir(exist_ok=True)
    (group / where).write_text("mine")
    before = sorted(str(p.relative_to(group)) for p in group.rglob("*"))
    with pytest.raises(ClfError) as caught:
        clear_group_dir(group)
    assert shown in str(caught.value)
    assert sorted(str(p.relative_to(group)) for p in group.rglob("*")) == before  # nothing removed


def test_overwrite_refuses_a_folder_that_is_not_clfs(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.txt").write_text("years of work")
    with pytest.raises(ClfError, match="not a fold group written by clf"):
        prepare_group_dir(folder, overwrite=True)
    assert (folder / "chapter1.txt").read_text() == "years of work"


def test_cv_score_adds_the_runs_metric_on_the_out_of_fold_predictions():
    import numpy as np

    from clf.data.folds import OutOfFold
    from clf.metrics import f1_macro
    from clf.train.fold_scoring import cv_score

    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    oof = OutOfFold(["a", "b", "c", "d"], ["x", "x", "y", "y"], np.array([0, 1, 0, 1]), ["x", "y"], probs)
    plain = cv_score(oof, [0.5, 1.0])
    assert "oof_metric" not in plain and plain["oof_acc"] == 0.75
    scored = cv_score(oof, [0.5, 1.0], metric="f1_macro")
    assert scored["metric"] == "f1_macro"
    assert scored["oof_metric"] == f1_macro(np.array([0, 0, 1, 1]), probs)
