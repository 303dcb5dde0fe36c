"""`clf train --interpolation`: the resize filter is part of the preprocessing contract, recorded in config.json,
the checkpoint and the ONNX metadata, and inference resizes with it (a client reading the metadata gets the same
probabilities; the other filter would not)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from cli_helpers import clf, error_line

from clf.config import TrainConfig
from clf.models.checkpoint import save_checkpoint

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
        "--epochs", "2", "--amp", "off"]
SHAPES = [(48, 40), (20, 24), (70, 33)]  # down- and up-scaled to 32 px: the filters differ on both


def make_sized_data(root: Path, per_class: int = 12) -> Path:
    """Two classes (bright left half, bright top half) of textured images in several sizes, none of them 32 px."""
    rng = np.random.default_rng(1)
    for name in ("left", "top"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            height, width = SHAPES[index % len(SHAPES)]
            image = rng.normal(70, 40, (height, width, 3))
            bright = (slice(None), slice(0, width // 2)) if name == "left" else (slice(0, height // 2), slice(None))
            image[bright] += 120
            cv2.imwrite(str(root / name / f"{index:02d}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, model.onnx, the data) of a 2-epoch run trained with --interpolation area."""
    root = tmp_path_factory.mktemp("interp")
    data = make_sized_data(root / "data")
    result = clf("train", data, *FAST, "--interpolation", "area", "--out", root / "runs", "--name", "area")
    assert result.exit_code == 0, result.output
    run = root / "runs" / "area"
    result = clf("export", run, "--onnx")
    assert result.exit_code == 0, result.output
    return run, run / "model.onnx", data


def test_the_filter_is_recorded_in_the_config_the_checkpoint_and_the_onnx_metadata(exported):
    run, model, _ = exported
    assert json.loads((run / "config.json").read_text())["train"]["interpolation"] == "area"
    assert torch.load(run / "best.pt", weights_only=True)["preprocess"]["interpolation"] == "area"
    meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["clf.preprocess"])["interpolation"] == "area"


def client_probabilities(model: Path, paths: list[Path], interpolation: int) -> np.ndarray:
    """What a deployment host computes from the metadata alone, resizing with ``interpolation``."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    pre = json.loads(session.get_modelmeta().custom_metadata_map["clf.preprocess"])
    height, width = pre["size"]
    rows = []
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (width, height), interpolation=interpolation)
        x = (image.astype(np.float32) * pre["scale"] - np.float32(pre["mean"])) / np.float32(pre["std"])
        (logits,) = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})
        shifted = np.exp(logits[0] - logits[0].max())
        rows.append(shifted / shifted.sum())
    return np.array(rows)


def test_infer_resizes_with_the_recorded_filter(exported, tmp_path):
    _, model, data = exported
    images = tmp_path / "test"
    images.mkdir()
    paths = []
    for source in sorted(data.glob("*/*.png")):
        paths.append(images / f"{source.parent.name}-{source.name}")
        paths[-1].write_bytes(source.read_bytes())
    probs = tmp_path / "probs.csv"
    result = clf("infer", images, "--model", model, "--csv", tmp_path / "sub.csv", "--probs", probs, "--device", "cpu")
    assert result.exit_code == 0, result.output
    with probs.open(newline="") as handle:
        rows = {row[0]: [float(v) for v in row[1:]] for row in list(csv.reader(handle))[1:]}
    ours = np.array([rows[path.stem] for path in paths])
    assert np.allclose(ours, client_probabilities(model, paths, cv2.INTER_AREA), atol=1e-5)
    linear = client_probabilities(model, paths, cv2.INTER_LINEAR)
    assert np.abs(ours - linear).max() > 1e-4  # the filter changes the input: the check above can tell them apart


def test_an_unknown_filter_is_one_line(tmp_path):
    data = make_sized_data(tmp_path / "data", per_class=2)
    result = clf("train", data, *FAST, "--interpolation", "bicubic", "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert "--interpolation" in error_line(result) and "bicubic" in error_line(result)
    assert not (tmp_path / "runs").exists()


def test_the_default_is_area_and_a_run_from_before_the_option_resumes_with_linear(tmp_path):
    assert TrainConfig(data="d").interpolation == "area"
    assert TrainConfig.from_saved({"data": "d"}).interpolation == "linear"
    data = make_sized_data(tmp_path / "data", per_class=4)
    runs = tmp_path / "runs"
    result = clf("train", data, *FAST, "--epochs", "1", "--out", runs, "--name", "old")
    assert result.exit_code == 0, result.output
    last = runs / "old" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["config"]["interpolation"] == "area" and ckpt["preprocess"]["interpolation"] == "area"
    del ckpt["config"]["interpolation"]  # as a clf before the option wrote it: it resized with linear
    ckpt["preprocess"]["interpolation"] = "linear"
    save_checkpoint(ckpt, last)
    result = clf("train", "--resume", runs / "old", "--epochs", "2", "--workers", "0", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 2
    assert resumed["config"]["interpolation"] == "linear" and resumed["preprocess"]["interpolation"] == "linear"
