"""clf.data.multilabel (tags and 0/1 CSVs, --classes), the multi-label torch dataset, `clf check --task multilabel`
and the multi-label loading, split and sampler of clf.train.build."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import clf, error_line
from torch.utils.data import DataLoader

from clf.config import Preprocess, TrainConfig
from clf.data.datasets import load_labelled
from clf.data.multilabel import declared_classes, rarest_classes, read_multilabel_csv, read_tagged_images
from clf.data.torch_dataset import ImageDataset
from clf.errors import ClfError, DataError
from clf.train import runtime as rt
from clf.train.build import fold_assignment, load_training_set, split_training_set, train_sampler, warn_near_duplicates

TAGS = {"a": "sky sea", "b": "sky", "c": "sea boat", "d": "sky", "e": "boat sky sea", "f": "sky"}


def images(folder: Path, names, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        grey = np.full((size, size, 3), 20 + 35 * k, np.uint8)
        cv2.imwrite(str(folder / f"{name}.png"), grey)
    return folder


def tags_csv(path: Path, rows: dict[str, str], header: str = "image_name,tags") -> Path:
    path.write_text(header + "\n" + "".join(f'{k},"{v}"\n' for k, v in rows.items()))
    return path


@pytest.fixture
def tagged(tmp_path: Path) -> tuple[Path, Path]:
    return images(tmp_path / "img", TAGS), tags_csv(tmp_path / "tags.csv", TAGS)


def read(folder: Path, csv: Path, **kwargs):
    return read_multilabel_csv(csv, folder, id_col=kwargs.pop("id_col", "image_name"),
                               label_col=kwargs.pop("label_col", "tags"), **kwargs)


# ---------------------------------------------------------------- reading


def test_tags_give_sorted_classes_multi_hot_targets_and_the_rarest_class_as_stratum(tagged):
    folder, csv = tagged
    data = read(folder, csv)
    assert data.multilabel and data.classes == ["boat", "sea", "sky"]
    assert [Path(p).stem for p in data.paths] == list(TAGS)
    assert data.targets.dtype == np.uint8
    assert data.targets.tolist() == [[0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 1]]
    assert data.class_counts() == {"boat": 2, "sea": 3, "sky": 5}
    assert data.labels == [1, 2, 0, 2, 0, 2]  # boat (2 images) is rarer than sea (3), sea than sky (5)


def test_the_zero_one_layout_reads_every_other_column_and_a_row_of_zeros_is_no_class(tmp_path):
    folder = images(tmp_path / "img", ["a", "b", "c"])
    csv = tmp_path / "cols.csv"
    csv.write_text("id,patient,sky,sea\na,p1,1,0\nb,p2,0,0\nc,p1,1.0,1.0\n")
    data = read(folder, csv, id_col="id", label_col="label", group_col="patient")
    assert data.classes == ["sea", "sky"] and data.groups == ["p1", "p2", "p1"]
    assert data.targets.tolist() == [[0, 1], [0, 0], [1, 1]]
    assert data.labels == [1, -1, 0]


def test_classes_fix_the_order_and_choose_the_columns(tmp_path):
    folder = images(tmp_path / "img", ["a", "b"])
    csv = tmp_path / "cols.csv"
    csv.write_text("id,width,sky,sea\na,12,1,0\nb,12,0,1\n")
    data = read(folder, csv, id_col="id", classes=["sky", "sea"])
    assert data.classes == ["sky", "sea"] and data.targets.tolist() == [[1, 0], [0, 1]]


def test_classes_from_a_list_or_a_file(tmp_path):
    assert declared_classes("sky, sea,boat") == ["sky", "sea", "boat"]
    assert declared_classes("sky") == ["sky"]
    names = tmp_path / "names.txt"
    names.write_text("sky\n\nsea\n")
    assert declared_classes(str(names)) == ["sky", "sea"]
    with pytest.raises(DataError, match="class 'sky' is listed twice"):
        declared_classes("sky,sea,sky")
    with pytest.raises(DataError, match="missing.txt: --classes file not found"):
        declared_classes(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="names no class"):
        declared_classes(" , ")


def test_load_labelled_reads_the_task_and_the_classes(tagged):
    folder, csv = tagged
    data = load_labelled(folder, csv, id_col="image_name", label_col="tags", task="multilabel", classes="sky,sea,boat")
    assert data.classes == ["sky", "sea", "boat"] and data.targets[4].tolist() == [1, 1, 1]


def test_classes_also_fix_a_single_label_csv(tmp_path):
    folder = images(tmp_path / "img", ["a", "b", "c"])
    csv = tmp_path / "l.csv"
    csv.write_text("filename,label\na,dog\nb,cat\nc,dog\n")
    data = load_labelled(folder, csv, classes="dog,cat")
    assert data.classes == ["dog", "cat"] and data.labels == [0, 1, 0] and not data.multilabel
    with pytest.raises(DataError, match=r"l.csv: line 3: label 'cat' is not one of --classes \(dog, bird\)"):
        load_labelled(folder, csv, classes="dog,bird")
    with pytest.raises(DataError, match="l.csv: class 'bird' of --classes is held by no image"):
        load_labelled(folder, csv, classes="dog,cat,bird")


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    ("image_name,tags\na,sky\nb,\n", {}, "tags.csv: line 3: empty 'tags'; every image needs at least one tag (an "
                                         "image with no class: use one 0/1 column per class, a row of zeros)"),
    ('image_name,tags\na,"sky,sea"\n', {}, "tags.csv: line 2: tag 'sky,sea' holds ','; separate tags with spaces "
                                           "(\"sky sea\")"),
    ("image_name,tags\na,sky\nb,sea boat\n", {"classes": ["sky", "sea"]},
     "tags.csv: line 3: tag 'boat' is not one of --classes; add it to --classes or fix the tag"),
    ("image_name,tags\na,sky\nb,sea\n", {"classes": ["sky", "sea", "boat"]},
     "tags.csv: class 'boat' of --classes is held by no image, so it cannot be learned"),
    ("image_name,sky,sea\na,1,0\nb,yes,1\n", {}, "tags.csv: line 3: 'yes' in class column 'sky'; class columns hold "
                                                 "0 or 1; name the class columns with --classes"),
    ("image_name,sky,sea\na,1,0\nb,,1\n", {}, "tags.csv: line 3: empty class column 'sky'; class columns hold 0 or 1"),
    ("image_name,sky,sea\na,1,0\nb,1,0\n", {}, "tags.csv: class column 'sea' holds no 1, so the class cannot be "
                                               "learned"),
    ("image_name\na\nb\n", {}, "tags.csv: no label column 'tags' and no class columns (columns: image_name); give "
                               "the tags column with --label-col, or one 0/1 column per class"),
    ("image_name,tags\na,sky\n", {"group_col": "patient"}, "tags.csv: no group column 'patient' (columns: "
                                                           "image_name, tags); name it with --group-col"),
    ("image_name,sky\na,1\n", {"classes": ["sky", "sea"]}, "tags.csv: no column 'sea' of --classes and no label "
                                                           "column 'tags'"),
    ("image_name,tags\na,sky\nzz,sea\n", {}, "tags.csv: line 3: no image 'zz' in"),
])
def test_bad_multilabel_csvs_get_one_line_naming_the_csv_and_line(tmp_path, text, kwargs, message):
    folder = images(tmp_path / "img", ["a", "b"])
    csv = tmp_path / "tags.csv"
    csv.write_text(text)
    with pytest.raises(DataError) as caught:
        read(folder, csv, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_evaluations_tags_keep_the_csv_order_and_an_empty_cell_is_no_tag(tmp_path):
    """read_tagged_images (`clf eval --task multilabel`): the answers as listed, untagged images included; the classes
    are the model's, so no tag is refused for being unknown here."""
    folder = images(tmp_path / "img", ["a", "b", "c"])
    csv = tags_csv(tmp_path / "tags.csv", {"c": "sea boat", "a": "", "b": "sky"}, header="id,label")
    paths, tags = read_tagged_images(csv, folder)
    assert [Path(p).stem for p in paths] == ["c", "a", "b"] and tags == [["sea", "boat"], [], ["sky"]]
    with pytest.raises(DataError, match=r"^.*tags\.csv: no column 'tags' \(columns: id, label\); name it with "
                                        r"--label-col$"):
        read_tagged_images(csv, folder, label_col="tags")
    csv.write_text('id,label\na,"sky,sea"\n')
    with pytest.raises(DataError, match="line 2: tag 'sky,sea' holds ','"):
        read_tagged_images(csv, folder)


def test_rarest_classes_break_ties_by_the_lower_index():
    targets = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    assert rarest_classes(targets).tolist() == [0, 2, -1]


# ---------------------------------------------------------------- the torch dataset


@pytest.mark.parametrize("cache", [False, True])
def test_the_dataset_yields_float_multi_hot_targets_and_the_loader_stacks_them(tagged, cache):
    folder, csv = tagged
    data = read(folder, csv)
    ds = ImageDataset(data.paths, data.labels, Preprocess(size=(16, 16)), cache=cache, targets=data.targets)
    if cache:
        ds.fill_cache(workers=2)
        assert ds.cached == len(ds)
    image, target = ds[2]
    assert image.shape == (3, 16, 16) and target.dtype == torch.float32 and target.tolist() == [1.0, 1.0, 0.0]
    images_, targets = next(iter(DataLoader(ds, batch_size=4)))
    assert images_.shape == (4, 3, 16, 16) and targets.shape == (4, 3) and targets.dtype == torch.float32
    assert torch.equal(targets, torch.from_numpy(data.targets[:4].astype(np.float32)))


def test_the_dataset_refuses_targets_of_another_length(tagged):
    folder, csv = tagged
    data = read(folder, csv)
    with pytest.raises(ValueError, match=r"expected \[N, C\]"):
        ImageDataset(data.paths, data.labels, Preprocess(size=(16, 16)), targets=data.targets[:2])


# ---------------------------------------------------------------- clf.train.build and the config


def config(folder: Path, csv: Path, **changes) -> TrainConfig:
    return TrainConfig(data=str(folder), labels_csv=str(csv), id_col="image_name", label_col="tags",
                       task="multilabel", workers=0, **changes)


def test_load_and_split_a_multilabel_training_set(tagged):
    folder, csv = tagged
    cfg = config(folder, csv, val_split=0.34)
    data = load_training_set(cfg)
    assert data.multilabel and data.signatures is not None and data.classes == ["boat", "sea", "sky"]
    split = split_training_set(data, cfg)
    assert len(split.train) + len(split.val) == 6 and split.val.multilabel and len(split.val) >= 1
    assert all(split.train.class_counts().values())  # every class keeps training images


def test_the_balanced_sampler_draws_by_stratum(tagged):
    folder, csv = tagged
    data = read(folder, csv)
    sampler = train_sampler(data, config(folder, csv, sampler="balanced"), rt.Runtime(torch.device("cpu"), None))
    assert len(list(iter(sampler))) == len(data)
    probabilities = sampler.probabilities  # strata: boat (2 images), sea (1), sky (3): each stratum a third
    assert probabilities[2] == pytest.approx(1 / 6) and probabilities[0] == pytest.approx(1 / 3)
    assert probabilities[1] == pytest.approx(1 / 9)


def test_the_task_and_classes_need_a_labels_csv(tmp_path):
    with pytest.raises(ClfError, match="--task multilabel reads each image's classes from --labels-csv"):
        TrainConfig(data=str(tmp_path), task="multilabel")
    with pytest.raises(ClfError, match="--classes names the classes of --labels-csv"):
        TrainConfig(data=str(tmp_path), classes="a,b")


# ---------------------------------------------------------------- clf check


def test_check_counts_the_images_of_each_tag(tagged, tmp_path):
    folder, csv = tagged
    report_file = tmp_path / "report.json"
    result = clf("check", folder, "--labels-csv", csv, "--id-col", "image_name", "--label-col", "tags",
                 "--task", "multilabel", "--json", report_file, "--val-split", "0.34")
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["task"] == "multilabel" and report["without_class"] == 0
    assert report["classes"] == [{"name": "boat", "images": 2}, {"name": "sea", "images": 3},
                                 {"name": "sky", "images": 5}]
    assert report["imbalance_ratio"] == 2.5
    assert "6 readable images, 3 tags, 0 images with none" in " ".join(result.output.split())
    assert "tags (readable images holding each)" in result.output


def test_check_refuses_class_folders_with_the_multilabel_task(tmp_path):
    images(tmp_path / "data" / "sky", ["a"])
    images(tmp_path / "data" / "sea", ["b"])
    line = error_line(clf("check", tmp_path / "data", "--task", "multilabel"))
    assert "--task multilabel reads each image's classes from --labels-csv" in line


def test_dedup_and_folds_of_a_multilabel_training_set(tagged):
    folder, csv = tagged
    cfg = config(folder, csv, dedup=True, val_split=0.34)
    data = load_training_set(cfg)
    split = split_training_set(data, cfg)
    assert len(split.train) + len(split.val) == 6 and warn_near_duplicates(split) == 0
    fold_cfg = config(folder, csv, folds=2, fold=1)
    fold_split = split_training_set(data, fold_cfg)
    in_val = fold_assignment(data, fold_cfg) == 1
    assert sorted(fold_split.val.paths) == sorted(np.asarray(data.paths)[in_val].tolist())
    assert fold_split.val.targets.shape == (int(in_val.sum()), 3)


def test_a_classes_file_is_recorded_absolute_and_a_list_as_given(tmp_path, monkeypatch):
    from clf.train.resume import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "names.txt").write_text("sky\nsea\n")
    assert absolute_paths({"classes": "names.txt"})["classes"] == str(tmp_path / "names.txt")
    assert absolute_paths({"classes": "sky,sea"})["classes"] == "sky,sea"
