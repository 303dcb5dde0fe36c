"""The composition matrix of `clf export` (issue 24): every pair and triple of --int8, --fp16, --tta, --calibrate,
--triton, an ensemble (several runs) and a fold group (runs/GROUP of `clf train --folds`), each exported from really
trained tiny runs and run by a plain onnxruntime client that knows nothing of clf.

Two rules refuse combinations, each documented in README.md, with one error line and exit 2:
  * --int8 with --fp16: two precisions for one model ("int8 for CPUs");
  * a fold group among other runs: the group is already the ensemble of its folds ("Ensembles, TTA and calibration").
Every other combination must export, and its model file (for --triton: REPO/<model>/1/model.onnx) must give finite
[N, C] outputs, log-probabilities summing to 1 where the graph averages probabilities or holds a temperature, and
the labels `clf infer` writes for the same images.

Speed (2 shared cores): three tiny trainings for the module; TorchScript and two parity batch sizes; every export
in-process; ONE plain-client process runs all the model files; the ensemble throughput line is not measured here.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import clf, error_line
from export_helpers import CLASSES
from serve_helpers import cli_state
from train_helpers import make_data, train

OPTIONS = ("int8", "fp16", "tta", "calibrate", "triton", "ensemble", "group")
COMBINATIONS = [frozenset(c) for size in (2, 3) for c in itertools.combinations(OPTIONS, size)]
# The deliberate refusals: (the options that clash, the phrase of the one error line).
REFUSALS = (
    (frozenset({"int8", "fp16"}), "--int8 and --fp16 are two precisions for one model; choose one"),
    (frozenset({"ensemble", "group"}), "a fold group is exported on its own (its folds are the ensemble); export it "
                                       "alone, or list its fold-k folders as runs"),
)
FAST = ("--exporter", "torchscript", "--batch-sizes", "1,2")
# The matrix checks that the options compose; the int8 gate's verdict is tests/test_int8.py's subject (a 1-epoch model
# has near-ties whose int8 top-1 depends on the CPU's int8 kernels), so the gate here records but never refuses.
INT8 = ("--int8", "--calibration-images", "8", "--min-agreement", "0", "--max-drop", "1")
TRITON_MODEL = "m"  # --model-name: the folder does not depend on how an ensemble's default name is chosen
TINY_CLI = ("--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
            "--lr", "0.003", "--seed", "0", "--ema", "0", "--hflip", "0.5")


def name(combo: frozenset[str]) -> str:
    return "+".join(option for option in OPTIONS if option in combo)


def refusal(combo: frozenset[str]) -> str | None:
    """The error phrase for a combination clf refuses by rule; None for one it must export."""
    return next((phrase for clash, phrase in REFUSALS if clash <= combo), None)


EXPORTED = [combo for combo in COMBINATIONS if refusal(combo) is None]
REFUSED = [combo for combo in COMBINATIONS if refusal(combo) is not None]

PLAIN_CLIENT = r'''
"""A deployment host's client: onnxruntime, OpenCV and numpy, the model's metadata, no clf."""
import json, sys
from pathlib import Path
import cv2, numpy as np, onnxruntime as ort
sys.modules["clf"] = None  # importing clf here would fail
models, folder = json.loads(sys.argv[1]), Path(sys.argv[2])
paths = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
answers = {}
for model in models:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes, pre = json.loads(meta["clf.classes"]), json.loads(meta["clf.preprocess"])
    assert pre["resize"] == "stretch" and pre["color"] == "RGB"
    filter_ = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}[pre["interpolation"]]  # the resize clf recorded
    height, width = pre["size"]
    rows = []
    for path in paths:
        bgr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
        bgr = cv2.resize(bgr, (width, height), interpolation=filter_)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
        normalised = (rgb * np.float32(pre["scale"]) - np.float32(pre["mean"])) / np.float32(pre["std"])
        rows.append(normalised.transpose(2, 0, 1))
    (batch,) = session.run(None, {"input": np.stack(rows)})
    (single,) = session.run(None, {"input": rows[0][None]})
    answers[model] = {"outputs": batch.tolist(), "single": single.tolist(), "meta": dict(meta),
                      "labels": [f"{p.stem},{classes[int(i)]}" for p, i in zip(paths, batch.argmax(1))]}
print(json.dumps(answers))
'''


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two tiny runs trained with horizontal flips (so --tta hflip needs no --force) and a 2-fold group."""
    root = tmp_path_factory.mktemp("matrix")
    data = make_data(root / "data", n_per_class=12)
    for seed, run in enumerate(("a", "b")):
        train(data, root / "runs", run, epochs=3, seed=seed, hflip=0.5)
    with cli_state():
        result = clf("train", data, *TINY_CLI, "--epochs", "3", "--folds", "2", "--out", root / "runs", "--name", "g")
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "a": root / "runs" / "a", "b": root / "runs" / "b", "g": root / "runs" / "g"}


def export_argv(combo: frozenset[str], trained: dict[str, Path], out: Path) -> list[Any]:
    """`clf export` for one combination, writing under `out` (a folder of its own)."""
    sources = [trained["a"], trained["b"]] if "ensemble" in combo else [trained["a"]]
    if "group" in combo:
        sources = [trained["g"], *sources[1:]] if "ensemble" in combo else [trained["g"]]
    argv: list[Any] = ["export", *sources, *FAST]
    argv += INT8 if "int8" in combo else ()
    argv += ["--fp16"] if "fp16" in combo else []
    argv += ["--tta", "hflip"] if "tta" in combo else []
    argv += ["--calibrate"] if "calibrate" in combo else []
    if "triton" in combo:
        argv += ["--triton", out / "repo", "--model-name", TRITON_MODEL]
    else:
        argv += ["-o", out / "model.onnx"]
    return argv


def model_file(combo: frozenset[str], out: Path) -> Path:
    return out / "repo" / TRITON_MODEL / "1" / "model.onnx" if "triton" in combo else out / "model.onnx"


@pytest.fixture(scope="module")
def matrix(trained, tmp_path_factory) -> dict[str, Any]:
    """Every combination exported once (refusals included); then one plain-client process over every model file."""
    from clf.export import onnx_export

    root = tmp_path_factory.mktemp("exports")
    results, models = {}, {}
    with pytest.MonkeyPatch.context() as patch, cli_state():
        # the table's ensemble throughput (>= 0.6 s of timing and a second export, per ensemble) is no part of the file
        patch.setattr(onnx_export, "_throughput", lambda *args: {"deployed": 1.0, "single member": 1.0})
        for combo in COMBINATIONS:
            out = root / name(combo)
            results[combo] = clf(*export_argv(combo, trained, out))
            models[combo] = model_file(combo, out)
    exported = [str(models[c]) for c in EXPORTED if results[c].exit_code == 0]
    plain = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, json.dumps(exported), str(trained["data"])],
                           capture_output=True, text=True, timeout=300, cwd=root,
                           env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert plain.returncode == 0, plain.stderr
    return {"results": results, "models": models, "plain": json.loads(plain.stdout), "root": root}


def test_the_matrix_holds_every_pair_and_triple():
    assert len(COMBINATIONS) == 21 + 35 and len(set(COMBINATIONS)) == len(COMBINATIONS)
    assert {name(c) for c in REFUSED} == {
        "int8+fp16", *(f"int8+fp16+{o}" for o in ("tta", "calibrate", "triton", "ensemble", "group")),
        "ensemble+group", *(f"{o}+ensemble+group" for o in ("int8", "fp16", "tta", "calibrate", "triton")),
    }


@pytest.mark.parametrize("combo", REFUSED, ids=name)
def test_a_refused_combination_says_why_in_one_line(combo, matrix):
    result = matrix["results"][combo]
    assert result.exit_code == 2, result.output
    assert refusal(combo) in error_line(result)
    assert not matrix["models"][combo].exists() and not matrix["models"][combo].parent.exists()


def _is_log_probabilities(meta: dict[str, str]) -> bool:
    """The graph outputs log-probabilities when it averages probabilities or divides by a temperature."""
    return meta.get("clf.average") == "prob" or bool(meta.get("clf.temperature"))


@pytest.mark.parametrize("combo", EXPORTED, ids=name)
def test_a_combination_exports_and_a_plain_client_runs_it(combo, matrix, trained, tmp_path):
    result = matrix["results"][combo]
    assert result.exit_code == 0, result.output
    model = matrix["models"][combo]
    answer = matrix["plain"][str(model)]
    outputs, meta = np.array(answer["outputs"], dtype=np.float64), answer["meta"]
    images = len(answer["labels"])
    assert outputs.shape == (images, len(CLASSES)) and images == 4 * 12 and np.isfinite(outputs).all()
    assert outputs.std(axis=0).max() > 0  # the answer depends on the image (a collapsed graph would not)
    assert np.allclose(answer["single"][0], outputs[0], atol=1e-2 if "fp16" in combo else 1e-4)  # dynamic batch
    assert _is_log_probabilities(meta) == bool(combo & {"tta", "calibrate", "ensemble", "group"})
    if _is_log_probabilities(meta):
        np.testing.assert_allclose(np.exp(outputs).sum(1), 1.0, atol=1e-2 if "fp16" in combo else 1e-4)
    _assert_metadata_says_what_was_asked(combo, meta)
    infer = clf("infer", trained["data"], "--model", model, "--csv", tmp_path / "sub.csv", "--device", "cpu", "-q",
                "--recursive")
    assert infer.exit_code == 0, infer.output
    assert sorted(answer["labels"]) == sorted((tmp_path / "sub.csv").read_text().splitlines()[1:])
    if "triton" in combo:
        _assert_triton_folder(model.parents[1], meta)
    proof = json.loads(model.with_name("model.parity.json").read_text())
    assert proof["passed"] is True


def _assert_metadata_says_what_was_asked(combo: frozenset[str], meta: dict[str, str]) -> None:
    precision = "int8" if "int8" in combo else None
    assert meta.get("clf.precision") == precision
    assert json.loads(meta["clf.classes"]) == CLASSES
    if combo & {"tta", "calibrate", "ensemble", "group"}:
        assert meta["clf.tta"] == ("hflip" if "tta" in combo else "none")
        assert bool(meta["clf.temperature"]) is ("calibrate" in combo)
        members = json.loads(meta["clf.members"])
        assert len(members) == (2 if combo & {"ensemble", "group"} else 1)
        if "group" in combo:
            assert [m["run"] for m in members] == ["fold-0", "fold-1"]
    else:
        assert "clf.members" not in meta


def _assert_triton_folder(folder: Path, meta: dict[str, str]) -> None:
    """config.pbtxt names the model and the ONNX runtime platform; labels and Preprocess match the metadata."""
    config = (folder / "config.pbtxt").read_text()
    assert f'name: "{TRITON_MODEL}"' in config and 'platform: "onnxruntime_onnx"' in config
    assert 'label_filename: "labels.txt"' in config
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    assert (folder / "preprocess.json").read_text() == meta["clf.preprocess"] + "\n"
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:  # the text checks above stand; Triton's schema parses it where tritonclient is installed
        return
    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    assert (parsed.name, parsed.platform) == (TRITON_MODEL, "onnxruntime_onnx")

