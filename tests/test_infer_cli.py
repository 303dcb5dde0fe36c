"""`clf infer` through typer's CliRunner (and one real process): CSV formats and order, sample submissions, top-k,
probabilities, bad images, models without clf metadata, device errors. The model's answers are known by hand:
BrightnessNet picks dark / mid / bright from an image's mean grey level."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import clf, error_line
from clf.config import Preprocess
from clf.serve.metadata import ModelInfo
from clf.serve.session import nvidia_driver_problem
from serve_helpers import (
    BRIGHTNESS_CLASSES,
    UNREADABLE,
    bad_images,
    brightness_logits,
    brightness_model,
    cli_state,
    grey_image,
    linear_model,
    read_csv,
)

REPO = Path(__file__).resolve().parents[1]
no_driver_here = pytest.mark.skipif(nvidia_driver_problem() is None, reason="needs a machine without an NVIDIA driver")

# name -> grey level; sorted by path: a_10.jpg, a_2.png, b_03.png, c_01.png (sub/d_01.png only with --recursive)
GREYS = {"b_03.png": 200, "a_10.jpg": 60, "c_01.png": 230, "a_2.png": 128}
SUB_GREY = 40
SORTED = ["a_10.jpg", "a_2.png", "b_03.png", "c_01.png"]
LABELS = {"a_10": "dark", "a_2": "mid", "b_03": "bright", "c_01": "bright", "d_01": "dark"}
TOP3 = {"a_10": "dark mid bright", "a_2": "mid bright dark", "b_03": "bright mid dark", "c_01": "bright mid dark"}
CPU = "CPUExecutionProvider"


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield




@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return brightness_model(tmp_path_factory.mktemp("model") / "brightness.onnx")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """The same network exported by "another tool": no clf metadata."""
    return brightness_model(tmp_path_factory.mktemp("plain") / "plain.onnx", metadata=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("test_images")
    for i, (name, grey) in enumerate(GREYS.items()):
        grey_image(folder / name, grey, size=(20 + 7 * i, 40 - 5 * i))  # sizes and aspect ratios differ
    grey_image(folder / "sub" / "d_01.png", SUB_GREY)
    (folder / "readme.txt").write_text("not an image, and not named like one: ignored")
    return folder


def csv_text(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


def test_default_submission(model, images, tmp_path):
    out = tmp_path / "submission.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.read_text() == csv_text("id,label", *(f"{Path(n).stem},{LABELS[Path(n).stem]}" for n in SORTED))
    assert f"4 images, onnxruntime provider: {CPU}" in result.stderr  # the provider actually used
    assert result.stdout.startswith(f"{out}: 4 of 4 images predicted on {CPU} (")
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no temp file left behind


@no_driver_here
def test_auto_device_runs_on_cpu_here_and_says_so(model, images, tmp_path):
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    assert f"onnxruntime provider: {CPU}" in result.stderr
    assert "WARNING" not in result.output and "INFO" not in result.output  # a CPU host is no news


@pytest.mark.parametrize(
    "id_format, recursive, ids",
    [
        ("stem", False, ["a_10", "a_2", "b_03", "c_01"]),
        ("name", False, SORTED),
        ("stem", True, ["a_10", "a_2", "b_03", "c_01", "d_01"]),
        ("relpath", True, [*SORTED, "sub/d_01.png"]),
    ],
)
def test_columns_and_id_formats(model, images, tmp_path, id_format, recursive, ids):
    out = tmp_path / "out" / "sub.csv"  # the folder is created
    args = ["--id-col", "ImageId", "--label-col", "Category", "--id-format", id_format, "--device", "cpu"]
    result = clf("infer", images, "--model", model, "--csv", out, *args, *(["--recursive"] if recursive else []))
    assert result.exit_code == 0, result.output
    expected = [["ImageId", "Category"], *([i, LABELS[Path(i).stem]] for i in ids)]
    assert read_csv(out) == expected


def test_unknown_id_format(model, images, tmp_path):
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "s.csv", "--id-format", "path")
    assert result.exit_code == 2
    assert error_line(result) == "error: --id-format must be one of stem, name, relpath, got 'path'"


def test_sample_submission_keeps_its_columns_and_row_order(model, images, tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("Usage,id,label\nPublic,c_01,x\nPrivate,a_2,x\nPublic,a_10,x\n")  # no b_03
    out = tmp_path / "submission.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--sample-submission", sample, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.read_text() == csv_text("Usage,id,label", "Public,c_01,bright", "Private,a_2,mid", "Public,a_10,dark")
    assert f"{sample}: 1 predicted ids are not in it (b_03); left out" in result.output  # reported, not silent
    assert re.fullmatch(rf"{re.escape(str(out))}: 4 of 4 images predicted on CPUExecutionProvider \(\d+ img/s\), "
                        r"1 not in the sample submission", result.stdout.strip())


def test_sample_submission_with_custom_columns_and_topk(model, images, tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("ImageId,Top3\nb_03,?\na_10,?\nc_01,?\na_2,?\n")
    out = tmp_path / "submission.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--sample-submission", sample, "--device", "cpu",
                 "--id-col", "ImageId", "--label-col", "Top3", "--topk", "3", "--topk-format", "space")
    assert result.exit_code == 0, result.output
    assert read_csv(out) == [["ImageId", "Top3"], *([i, TOP3[i]] for i in ["b_03", "a_10", "c_01", "a_2"])]
    result = clf("infer", images, "--model", model, "--csv", out, "--sample-submission", sample, "--device", "cpu",
                 "--id-col", "ImageId", "--label-col", "Top3", "--topk", "2")
    assert result.exit_code == 0, result.output  # columns appended after the sample's own, its row order kept
    assert read_csv(out) == [["ImageId", "Top3", "Top3_2"],
                             *([i, *TOP3[i].split()[:2]] for i in ["b_03", "a_10", "c_01", "a_2"])]


def test_sample_id_without_an_image_is_an_error(model, images, tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,label\na_10,x\nzz_99,x\nb_03,x\n")
    out = tmp_path / "submission.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--sample-submission", sample, "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {sample}: 1 of 3 ids have no image (zz_99); check the image folder and --id-format"
    )
    assert "onnxruntime provider" not in result.output  # checked before the model even loads
    assert not out.exists()


def test_sample_without_the_label_column(model, images, tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,target\na_10,x\n")
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "s.csv", "--sample-submission", sample)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {sample}: no column 'label' (columns: id, target); set the column names"


def test_topk(model, images, tmp_path):
    out = tmp_path / "top3.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--topk", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output  # the best stays in `label`: the file still scores as top-1
    assert read_csv(out) == [["id", "label", "label_2", "label_3"],
                             *([i, *TOP3[i].split()] for i in ["a_10", "a_2", "b_03", "c_01"])]
    result = clf("infer", images, "--model", model, "--csv", out, "--topk", "3", "--topk-format", "space",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_csv(out) == [["id", "label"], *([i, TOP3[i]] for i in ["a_10", "a_2", "b_03", "c_01"])]
    out9 = tmp_path / "top9.csv"
    result = clf("infer", images, "--model", model, "--csv", out9, "--topk", "9", "--topk-format", "space",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_csv(out9)[1] == ["a_10", "dark mid bright"]  # more than 3 classes asked: all 3
    result = clf("infer", images, "--model", model, "--csv", out, "--topk", "2", "--topk-format", "comma")
    assert result.exit_code == 2
    assert error_line(result) == "error: --topk-format must be one of columns, space, got 'comma'"


def test_topk_and_batch_size_must_be_positive(model, images, tmp_path):
    for flag in ("--topk", "--batch-size"):
        for value in ("0", "-1"):
            result = clf("infer", images, "--model", model, "--csv", tmp_path / "s.csv", flag, value)
            assert result.exit_code == 2
            assert error_line(result) == f"error: {flag} must be >= 1, got {value}"
    assert not (tmp_path / "s.csv").exists()


def test_probs(model, images, tmp_path):
    out, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--probs", probs, "--batch-size", "3",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    table = read_csv(probs)
    assert table[0] == ["id", *BRIGHTNESS_CLASSES]
    assert [row[0] for row in table[1:]] == ["a_10", "a_2", "b_03", "c_01"]
    values = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    for name, row in zip(SORTED, values):
        grey = cv2.imread(str(images / name)).mean()  # the JPEG may decode a level off
        logits = brightness_logits(grey)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-6)
    assert [BRIGHTNESS_CLASSES[i] for i in values.argmax(axis=1)] == [row[1] for row in read_csv(out)[1:]]


@pytest.fixture
def mixed(images, tmp_path) -> tuple[Path, dict[str, Path]]:
    """The good images plus a corrupt .jpg, a truncated .png and a text file named .png."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in SORTED:
        (folder / name).write_bytes((images / name).read_bytes())
    return folder, bad_images(folder, images / "a_2.png")


def test_bad_images_are_reported_and_skipped(model, mixed, tmp_path):
    folder, bad = mixed
    out = tmp_path / "sub.csv"
    result = clf("infer", folder, "--model", model, "--csv", out, "--device", "cpu", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert out.read_text() == csv_text("id,label", *(f"{Path(n).stem},{LABELS[Path(n).stem]}" for n in SORTED))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert [line.split(None, 1)[1].rstrip() for line in warnings] == [
        f"{bad['corrupt']}: {UNREADABLE}; skipped",
        f"{bad['text']}: {UNREADABLE}; skipped",
        f"{bad['truncated']}: {UNREADABLE}; skipped",
    ]
    assert re.fullmatch(rf"{re.escape(str(out))}: 4 of 7 images predicted on CPUExecutionProvider \(\d+ img/s\), "
                        r"3 skipped", result.stdout.strip())


def test_strict_fails_but_keeps_every_readable_row(model, mixed, tmp_path):
    folder, bad = mixed
    out = tmp_path / "sub.csv"
    result = clf("infer", folder, "--model", model, "--csv", out, "--device", "cpu", "--strict")
    assert result.exit_code == 4
    assert error_line(result) == (f"error: 3 of {len(SORTED) + 3} image(s) could not be read (--strict); "
                                  f"the other rows were written to {out}")
    assert read_csv(out) == [["id", "label"], *([Path(n).stem, LABELS[Path(n).stem]] for n in SORTED)]
    assert f"{bad['truncated']}: {UNREADABLE}; skipped" in result.stderr


def test_unreadable_image_in_the_sample_keeps_the_sample_label(model, mixed, tmp_path):
    folder, _ = mixed
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\ntruncated,circle\na_2,circle\n")
    out = tmp_path / "sub.csv"
    result = clf("infer", folder, "--model", model, "--csv", out, "--sample-submission", sample, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.read_text() == csv_text("id,label", "truncated,circle", "a_2,mid")  # complete, uploadable
    assert f"{sample}: 1 ids of unreadable images keep the sample's label (truncated)" in result.stderr


def test_folder_without_images(model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    result = clf("infer", empty, "--model", model, "--csv", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {empty}: no images (.jpg, .png, ...) found"
    result = clf("infer", tmp_path / "nowhere", "--model", model, "--csv", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'nowhere'}: folder not found"


def test_missing_model_file(images, tmp_path):
    result = clf("infer", images, "--model", tmp_path / "nope.onnx", "--csv", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'nope.onnx'}: file not found"
    assert not (tmp_path / "s.csv").exists()


def test_model_without_clf_metadata(model, plain_model, images, tmp_path):
    result = clf("infer", images, "--model", plain_model, "--csv", tmp_path / "s.csv", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {plain_model}: no clf metadata (exported by another tool?); "
        "pass --img-size, --mean, --std and --labels to use it"
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("dark\nmid\nbright\n")
    for names in ("dark,mid,bright", labels):
        out = tmp_path / "plain.csv"
        result = clf("infer", images, "--model", plain_model, "--csv", out, "--device", "cpu", "--img-size", "16",
                     "--mean", "0,0,0", "--std", "1,1,1", "--labels", names)
        assert result.exit_code == 0, result.output
        assert read_csv(out) == [["id", "label"], *([Path(n).stem, LABELS[Path(n).stem]] for n in SORTED)]
    # Nothing is guessed for a foreign model: no ImageNet statistics, no class names "0", "1", ...
    result = clf("infer", images, "--model", plain_model, "--csv", tmp_path / "guess.csv", "--device", "cpu",
                 "--img-size", "16", "--std", "1,1,1")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {plain_model}: no clf metadata (exported by another tool?); also pass --mean, --labels "
        "(--img-size, --mean, --std and --labels describe how it was trained)"
    )
    assert not (tmp_path / "guess.csv").exists()


def test_explicit_preprocessing_with_wrong_size_or_bad_values(plain_model, images, tmp_path):
    base = ["infer", images, "--model", plain_model, "--csv", tmp_path / "s.csv", "--device", "cpu"]
    result = clf(*base, "--img-size", "32")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {plain_model}: the model takes 16x16 images but the preprocessing makes 32x32; "
        "pass a matching --img-size"
    )
    result = clf(*base, "--img-size", "16", "--mean", "0.5,0.5")
    assert result.exit_code == 2
    assert "--mean takes three comma-separated numbers" in error_line(result)
    result = clf(*base, "--img-size", "16", "--mean", "0,0,0", "--std", "1,1,1", "--labels", "a,b")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {plain_model}: the model outputs 3 classes but 2 class names were given"


def test_preprocessing_flags_change_only_what_they_name_on_a_clf_model(model, images, tmp_path):
    """--mean on a clf model keeps the model's size and std (an override, warned about), not ImageNet defaults."""
    out = tmp_path / "s.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--device", "cpu", "--mean", "0.3,0.3,0.3")
    assert result.exit_code == 0, result.output
    assert "preprocessing overridden" in result.stderr
    # brightness - 0.3: a_10 (0.235) -> -0.065 (dark), c_01 (0.902) -> 0.602 (mid)
    assert [row[1] for row in read_csv(out)[1:]] == ["dark", "dark", "mid", "mid"]


@no_driver_here
def test_cuda_on_a_machine_without_it(model, images, tmp_path):
    out = tmp_path / "s.csv"
    result = clf("infer", images, "--model", model, "--csv", out, "--device", "cuda")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: cuda requested but this machine cannot run it (no NVIDIA driver: libcuda.so.1 not found); "
        "use --device cpu, or run on a machine with an NVIDIA GPU and driver"
    )
    assert not out.exists()


def test_unknown_device(model, images, tmp_path):
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "s.csv", "--device", "gpu")
    assert result.exit_code == 2
    assert error_line(result) == "error: --device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"


def test_real_process_keeps_native_noise_off_the_screen(model, mixed, tmp_path):
    """A real `clf infer`: OpenCV's libpng warning and onnxruntime's C++ log lines (written straight to fd 2,
    where CliRunner cannot see them) stay hidden; the user sees our lines only."""
    folder, bad = mixed
    out = tmp_path / "sub.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    env.pop("OPENCV_LOG_LEVEL", None)
    command = [sys.executable, "-m", "clf", "infer", str(folder), "--model", str(model), "--csv", str(out)]
    proc = subprocess.run([*command, "--device", "cpu"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_csv(out) == [["id", "label"], *([Path(n).stem, LABELS[Path(n).stem]] for n in SORTED)]
    lines = proc.stderr.splitlines()
    assert lines[0] == "7 images, onnxruntime provider: CPUExecutionProvider"
    assert [line.split(None, 1)[1].rstrip() for line in lines[1:]] == [
        f"{bad['corrupt']}: {UNREADABLE}; skipped",
        f"{bad['text']}: {UNREADABLE}; skipped",
        f"{bad['truncated']}: {UNREADABLE}; skipped",
    ]
    assert proc.stdout.startswith(f"{out}: 4 of 7 images predicted on CPUExecutionProvider (")
    if nvidia_driver_problem() is not None:
        proc = subprocess.run([*command, "--device", "cuda"], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: cuda requested but this machine cannot run it")
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


PLAIN_CLIENT = """
import json, sys
import cv2, numpy as np, onnxruntime as ort
sys.modules["clf"] = None  # a deployment host without clf
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, pre = json.loads(meta["clf.classes"]), json.loads(meta["clf.preprocess"])
assert pre["resize"] == "stretch" and pre["color"] == "RGB"
filter_ = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}[pre["interpolation"]]  # the resize clf recorded
height, width = pre["size"]
rows = []
for path in sys.argv[2:]:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (width, height), interpolation=filter_)
    x = (image.astype(np.float32) * pre["scale"] - np.float32(pre["mean"])) / np.float32(pre["std"])
    (logits,) = session.run(None, {"input": x.transpose(2, 0, 1)[None]})
    rows.append(classes[int(logits.argmax())])
print(json.dumps(rows))
"""


def test_a_plain_onnxruntime_client_reproduces_clf_infer(model, images, tmp_path):
    """DESIGN: the .onnx alone is enough to deploy; its metadata tells a client without clf how to preprocess."""
    out = tmp_path / "sub.csv"
    assert clf("infer", images, "--model", model, "--csv", out, "--device", "cpu").exit_code == 0
    paths = [str(images / name) for name in SORTED]
    proc = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, str(model), *paths], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [[Path(p).stem, label] for p, label in zip(paths, json.loads(proc.stdout))] == read_csv(out)[1:]


def test_an_output_that_is_a_folder_fails_before_inference(model, images, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for flag in ("--csv", "--probs"):
        args = ["--csv", tmp_path / "s.csv", "--probs", tmp_path / "p.csv"]
        args[args.index(flag) + 1] = folder
        result = clf("infer", images, "--model", model, "--device", "cpu", *args)
        assert result.exit_code == 2
        assert error_line(result) == f"error: {folder}: is a folder; give a file name"
        assert "onnxruntime provider" not in result.output  # refused before the model was even loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_that_cannot_be_written_fails_before_inference(model, images, tmp_path, monkeypatch):
    """Tests run as root (os.access says yes everywhere): a read-only folder is simulated. The user's path is named,
    never clf's temp file, and the model is not even loaded."""
    from clf import atomic

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    out = readonly / "sub.csv"
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "ok.csv", "--probs", out, "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {out}: cannot write in {readonly} (permission denied or read-only); "
                                  "choose a folder you can write to")
    assert "onnxruntime provider" not in result.output
    assert not (tmp_path / "ok.csv").exists()


# ---- run-time TTA and the probabilities of a calibrated model ----

TTA_CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def noise_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(7)
    for k in range(5):
        cv2.imwrite(str(folder / f"n_{k}.png"), rng.integers(0, 256, (10 + k, 13, 3), dtype=np.uint8))
    return folder


def linear_info() -> ModelInfo:
    pre = Preprocess(size=(8, 12), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return ModelInfo(classes=TTA_CLASSES, preprocess=pre, arch="linear", img_size=12, clf_version="0.1.0")


def read_probs(path: Path) -> tuple[list[str], np.ndarray]:
    table = read_csv(path)
    return [row[0] for row in table[1:]], np.array([[float(v) for v in row[1:]] for row in table[1:]])


def test_infer_tta_writes_the_averaged_views(noise_images, tmp_path):
    from clf.serve.predictor import Predictor

    model = linear_model(tmp_path / "linear.onnx", linear_info(), seed=4)
    out, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    result = clf("infer", noise_images, "--model", model, "--csv", out, "--probs", probs, "--tta", "hvflip",
                 "--device", "cpu", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{re.escape(str(out))}: 5 of 5 images predicted on {CPU} with hvflip TTA \(\d+ img/s\)",
                        result.stdout.strip()), result.stdout
    ids, values = read_probs(probs)
    expected = Predictor(model, device="cpu", tta="hvflip").predict(sorted(noise_images.glob("*.png")))
    assert ids == [f"n_{k}" for k in range(5)]
    np.testing.assert_allclose(values, expected.probs(), rtol=1e-5, atol=1e-7)
    assert [row[1] for row in read_csv(out)[1:]] == expected.labels()
    plain = Predictor(model, device="cpu").predict(sorted(noise_images.glob("*.png")))
    assert np.abs(expected.probs() - plain.probs()).max() > 0.05  # the views changed the probabilities


def test_infer_probs_of_a_calibrated_model_are_the_calibrated_ones(noise_images, tmp_path):
    """A graph that divides its logits by a temperature (what `clf export --calibrate` bakes in): --probs writes
    softmax(logits / T), not the raw model's probabilities."""
    from clf.serve.predictor import Predictor, softmax

    raw = linear_model(tmp_path / "raw.onnx", linear_info(), seed=4)
    calibrated = linear_model(tmp_path / "calibrated.onnx", linear_info(), seed=4, temperature=2.5,
                              props={"clf.temperature": "2.5"})
    probs = tmp_path / "probs.csv"
    result = clf("infer", noise_images, "--model", calibrated, "--csv", tmp_path / "sub.csv", "--probs", probs,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    _, values = read_probs(probs)
    logits = Predictor(raw, device="cpu").predict(sorted(noise_images.glob("*.png"))).logits
    np.testing.assert_allclose(values, softmax(logits / 2.5), rtol=1e-5, atol=1e-7)
    assert np.abs(values - softmax(logits)).max() > 0.05  # really softer than the raw model's
