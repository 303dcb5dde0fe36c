"""`clf check` end to end (tables and JSON), the split it shows is the one `clf train` makes, the leakage warning of
`clf train`, --dedup and --group-col through training, and their bad inputs (one line, exit 2).

The images are crops of matplotlib's Grace Hopper photo (a real picture; matplotlib is a dependency), with copies
planted: the same pixels in another format, JPEG quality 60, a 0.5x resize, a 5 % crop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
from cli_helpers import clf, error_line

from clf.run_files import load_split

CROP, STEP = 96, 100
BASE = ["--arch", "cnn", "--epochs", "1", "--img-size", "16", "--batch-size", "4", "--workers", "0",
        "--device", "cpu", "--quiet", "--ema", "0", "--augment", "none"]
TRAIN = [*BASE, "--val-split", "0.3"]
WARNING = re.compile(r"val accuracy will flatter: (\d+) of (\d+) validation images have a near-duplicate in train; "
                     r"use --group-col or --dedup")


def crops() -> list[np.ndarray]:
    """30 disjoint 96 px crops of the photo (BGR, as cv2 writes them)."""
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    return [np.ascontiguousarray(photo[t:t + CROP, left:left + CROP])
            for t in range(0, photo.shape[0] - CROP + 1, STEP) for left in range(0, photo.shape[1] - CROP + 1, STEP)]


def class_folders(root: Path) -> Path:
    """data/top and data/bottom (the upper and lower crops), with copies planted; test/ with copies and a stranger."""
    pictures = crops()
    data = root / "data"
    for k, crop in enumerate(pictures):
        folder = data / ("top" if k < len(pictures) // 2 else "bottom")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{k:02d}.png"), crop)
    cv2.imwrite(str(data / "top" / "00_copy.bmp"), pictures[0])  # exact: the same pixels, another file
    cv2.imwrite(str(data / "top" / "01_q60.jpg"), pictures[1], [cv2.IMWRITE_JPEG_QUALITY, 60])  # near
    cv2.imwrite(str(data / "bottom" / "02_other_label.png"), pictures[2])  # exact, under the other class
    (data / "bottom" / "broken.png").write_bytes(b"not a png")
    test = root / "test"
    test.mkdir()
    half = (CROP // 2, CROP // 2)
    cv2.imwrite(str(test / "resized.jpg"), cv2.resize(pictures[5], half, interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(test / "cropped.png"), pictures[6][2:-3, 2:-3])  # 5 %: 2-3 px off each side
    cv2.imwrite(str(test / "stranger.png"), cv2.cvtColor(crops()[-1][::-1].copy(), cv2.COLOR_BGR2GRAY))
    return data


def test_check_reports_duplicates_classes_unreadable_files_and_sizes(tmp_path):
    data = class_folders(tmp_path)
    report_file = tmp_path / "out" / "report.json"
    result = clf("check", data, "--test", tmp_path / "test", "--json", report_file, "--seed", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["classes"] == [{"name": "bottom", "images": 16}, {"name": "top", "images": 17}]
    assert report["imbalance_ratio"] == round(17 / 16, 3)
    assert [entry["path"] for entry in report["unreadable"]] == [str(data / "bottom" / "broken.png")]
    assert report["images"]["data"] == {"count": 33, "width": {"min": 96, "median": 96, "max": 96},
                                        "height": {"min": 96, "median": 96, "max": 96}, "modes": {"RGB": 33}}
    assert report["images"]["test"]["modes"] == {"RGB": 2, "grey": 1}
    assert report["images"]["test"]["width"] == {"min": 48, "median": 91, "max": 96}
    split = report["split"]
    assert (split["train"], split["val"], split["seed"]) == (27, 6, 3) and len(split["val_paths"]) == 6
    # The planted pairs, wherever the split put them: each shows up exactly once, exact or near
    dup = report["duplicates"]
    name = {str(data / "top" / "00.png"): "00", str(data / "top" / "00_copy.bmp"): "00c",
            str(data / "top" / "01.png"): "01", str(data / "top" / "01_q60.jpg"): "01q",
            str(data / "top" / "02.png"): "02", str(data / "bottom" / "02_other_label.png"): "02o"}
    exact = [tuple(sorted(name[e["path"]] for e in group)) for group in dup["within_train"]["exact_groups"]]
    exact += [tuple(sorted((name[p["a"]], name[p["b"]]))) for p in dup["train_val"]["exact_pairs"]]
    near = [tuple(sorted((name[p["a"]], name[p["b"]]))) for key in ("within_train", "train_val")
            for p in dup[key]["near_pairs"]]
    assert sorted(exact) == [("00", "00c"), ("02", "02o")] and near == [("01", "01q")]
    assert dup["within_train"]["exact_conflicting_labels"] + sum(
        p["a_label"] != p["b_label"] for p in dup["train_val"]["exact_pairs"]) == 1  # 02 is under both classes
    test_pairs = {Path(p["b"]).name: Path(p["a"]).name for p in dup["train_test"]["near_pairs"]}
    assert test_pairs == {"resized.jpg": "05.png", "cropped.png": "06.png"}
    assert dup["train_test"]["images_with_duplicate"] == 2 and dup["train_test"]["images"] == 3
    text = " ".join(result.output.split())
    assert "33 readable images, 2 classes, imbalance 1.062 (largest / smallest)" in text
    assert "27 train / 6 validation" in text and f"report written to {report_file}" in text
    for row in ("within train", "train -> validation", "data -> test", "2 of 3 (test)", "RGB 2, grey 1",
                "96 / 96 / 96", "unreadable files: 1", "bottom/broken.png", "not a readable image"):
        assert row in text, row


@pytest.mark.slow
def test_training_warns_of_near_duplicates_across_the_split_and_dedup_keeps_them_together(tmp_path):
    """Every picture twice (PNG and JPEG q60): a random split leaks, the warning counts exactly what `clf check`
    counts, and --dedup leaves validation without a copy of a training image (check's split = train's split)."""
    data = tmp_path / "data"
    for k, crop in enumerate(crops()[:24]):
        folder = data / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{k:02d}.png"), crop)
        cv2.imwrite(str(folder / f"{k:02d}_copy.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 60])
    result = clf("train", data, *TRAIN, "--out", tmp_path / "runs", "--name", "plain")
    assert result.exit_code == 0, result.output
    warning = WARNING.search(result.output)
    assert warning is not None, result.output
    check = clf("check", data, "--val-split", "0.3", "--json", tmp_path / "plain.json")
    report = json.loads((tmp_path / "plain.json").read_text())
    leaked = report["duplicates"]["train_val"]
    assert (int(warning[1]), int(warning[2])) == (leaked["images_with_duplicate"], leaked["images"]) != (0, 14)
    assert int(warning[1]) > 0 and check.exit_code == 0
    split = load_split(tmp_path / "runs" / "plain" / "split.json")
    assert sorted(split["val"]) == sorted(Path(p).relative_to(data).as_posix() for p in report["split"]["val_paths"])

    result = clf("train", data, *TRAIN, "--out", tmp_path / "runs", "--name", "dedup", "--dedup")
    assert result.exit_code == 0, result.output
    assert WARNING.search(result.output) is None
    split = json.loads((tmp_path / "runs" / "dedup" / "split.json").read_text())
    assert split["grouping"] == {"group_col": None, "dedup": True}
    stems = lambda paths: {Path(p).name[:2] for p in paths}  # noqa: E731 -- the picture each file is a copy of
    assert not stems(split["val"]) & stems(split["train"]) and split["val"]
    check = clf("check", data, "--val-split", "0.3", "--dedup", "--json", tmp_path / "dedup.json")
    report = json.loads((tmp_path / "dedup.json").read_text())
    assert report["duplicates"]["train_val"]["images_with_duplicate"] == 0
    assert sorted(split["val"]) == sorted(Path(p).relative_to(data).as_posix() for p in report["split"]["val_paths"])


def grouped_csv(root: Path, group_of: dict[int, str] | None = None) -> tuple[Path, Path]:
    """images/ and labels.csv with a patient column: 4 crops per patient, the class alternating per patient."""
    images = root / "images"
    images.mkdir()
    rows = ["file,label,patient"]
    for k, crop in enumerate(crops()[:24]):
        cv2.imwrite(str(images / f"{k:02d}.png"), crop)
        patient = (group_of or {}).get(k, f"p{k // 4}")
        rows.append(f"{k:02d}.png,{'sick' if (k // 4) % 2 else 'well'},{patient}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return images, root / "labels.csv"


@pytest.mark.slow
@pytest.mark.parametrize("folds", [None, 3])
def test_group_col_keeps_each_patient_on_one_side_through_training(tmp_path, folds):
    images, labels = grouped_csv(tmp_path)
    extra = ["--folds", str(folds)] if folds else ["--val-split", "0.3"]
    result = clf("train", images, *BASE, "--labels-csv", labels, "--id-col", "file", "--group-col", "patient",
                 "--out", tmp_path / "runs", "--name", "g", *extra)
    assert result.exit_code == 0, result.output
    runs = [tmp_path / "runs" / "g" / f"fold-{k}" for k in range(folds)] if folds else [tmp_path / "runs" / "g"]
    patient = lambda name: f"p{int(name[:2]) // 4}"  # noqa: E731
    val_patients = []
    for run in runs:
        split = json.loads((run / "split.json").read_text())
        assert split["grouping"] == {"group_col": "patient", "dedup": False}
        assert split["val"] and not {patient(p) for p in split["val"]} & {patient(p) for p in split["train"]}
        val_patients += sorted({patient(p) for p in split["val"]})
    if folds:  # each patient validates in exactly one fold
        assert sorted(val_patients) == [f"p{i}" for i in range(6)]
    else:
        check = clf("check", images, "--labels-csv", labels, "--id-col", "file", "--group-col", "patient",
                    "--val-split", "0.3", "--json", tmp_path / "r.json")
        assert check.exit_code == 0, check.output
        shown = json.loads((tmp_path / "r.json").read_text())["split"]["val_paths"]
        assert sorted(Path(p).name for p in shown) == sorted(split["val"])


@pytest.mark.parametrize("command", ["train", "check"])
def test_group_col_bad_inputs_are_one_line(tmp_path, command):
    images, labels = grouped_csv(tmp_path, group_of={7: " "})
    runs = ["--out", str(tmp_path / "runs")] if command == "train" else []
    args = [*TRAIN, *runs] if command == "train" else []

    def error(*extra: str | Path) -> str:
        result = clf(command, images, *args, *extra)
        assert result.exit_code == 2, result.output
        return error_line(result)

    assert error("--labels-csv", labels, "--id-col", "file", "--group-col", "ward") == (
        f"error: {labels}: no group column 'ward' (columns: file, label, patient); name it with --group-col")
    assert error("--group-col", "patient") == (
        "error: --group-col patient reads the groups from the labels CSV; add --labels-csv FILE, or leave out "
        "--group-col")
    assert error("--labels-csv", labels, "--id-col", "file", "--group-col", "patient") == (
        f"error: {labels}: line 9: empty group 'patient'; give every image its group (--group-col)")
    assert error("--labels-csv", labels, "--id-col", "file", "--group-col", "") == (
        "error: --group-col is empty; give the column of --labels-csv that names each image's group, or leave the "
        "option out")
    assert not (tmp_path / "runs").exists()


def test_check_bad_options_are_one_line(tmp_path):
    data = class_folders(tmp_path)
    for args, line in (
        (["--max-distance", "65"], "error: --max-distance must be between 0 and 64 (bits of the hash), got 65"),
        (["--val-split", "1"], "error: --val-split must be >= 0 and < 1 (0 = no validation)"),
        (["--test", tmp_path / "nowhere"], f"error: {tmp_path / 'nowhere'}: folder not found"),
        (["--json", data / "top" / "00.png"], f"error: {data / 'top' / '00.png'}: --json would overwrite an input "),
    ):
        result = clf("check", data, *args)
        assert result.exit_code == 2, result.output
        assert error_line(result).startswith(line), error_line(result)
