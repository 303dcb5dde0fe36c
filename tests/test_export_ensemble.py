"""clf.export.ensemble through export_onnx and `clf export RUN RUN ...` / `clf export GROUP`: the averaged graph equals
the hand computation, the metadata and proof list the members, refusals are one line, a fold group exports as the
ensemble of its folds, and the file deploys like a single model (clf infer, clf eval, a plain onnxruntime client)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_helpers import clf, error_line
from ensemble_helpers import (  # noqa: F401 - _cli_state is an autouse fixture
    CLI_FAST,
    FAST,
    _cli_state,
    hand_average,
    logits_of,
    make_group,
    make_member,
    metadata,
    model_of,
    proof,
    val_images,
)
from export_helpers import CLASSES, make_data
from train_helpers import make_data as make_train_data
from train_helpers import train

from clf.config import ExportConfig, Preprocess
from clf.errors import ModelError
from clf.export.onnx_export import export_onnx
from clf.serve.metadata import Deployment, deployment_from_props, info_from_props

PRE = Preprocess(size=(32, 32))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("ens-data"))


@pytest.fixture
def pair(tmp_path, data) -> tuple[Path, Path]:
    """Two members with different weights, trained with hflip (as recorded)."""
    return make_member(tmp_path / "a", data, seed=1), make_member(tmp_path / "b", data, seed=2)


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].astype(np.float64)


# --- the graph is the hand computation ------------------------------------------------------------------------------


@pytest.mark.parametrize("average, weights", [("prob", (1.0, 3.0)), ("logit", (2.0, 1.0)), ("prob", ())])
def test_the_ensemble_graph_averages_like_the_hand_computation(tmp_path, pair, average, weights):
    out = tmp_path / "ens.onnx"
    result = export_onnx(ExportConfig(checkpoint=str(pair[0]), more_runs=(str(pair[1]),), output=str(out),
                                      average=average, weights=weights, **FAST))
    assert result.parity.passed and result.path == out
    x, _, _ = val_images(pair[0], PRE)
    expected = hand_average([logits_of(model_of(run), x) for run in pair], weights or (1, 1), average)
    np.testing.assert_allclose(_onnx_logits(out, x), expected, atol=1e-5, rtol=0)


def test_members_may_differ_in_architecture(tmp_path, data):
    a = make_member(tmp_path / "a", data, seed=1)
    b = make_member(tmp_path / "b", data, seed=2, arch="resnet18")
    result = export_onnx(ExportConfig(checkpoint=str(a), more_runs=(str(b),), output=str(tmp_path / "e.onnx"), **FAST))
    assert result.parity.passed
    assert [m["arch"] for m in result.deployment.members] == ["cnn", "resnet18"]
    x, _, _ = val_images(a, PRE)
    expected = hand_average([logits_of(model_of(a), x), logits_of(model_of(b), x)], (1, 1), "prob")
    np.testing.assert_allclose(_onnx_logits(tmp_path / "e.onnx", x), expected, atol=1e-5, rtol=0)


def test_the_metadata_and_the_proof_list_the_members(tmp_path, pair):
    out = tmp_path / "ens.onnx"
    export_onnx(ExportConfig(checkpoint=str(pair[0]), more_runs=(str(pair[1]),), output=str(out),
                             weights=(1, 3), **FAST))
    props = metadata(out)
    info = info_from_props(props, str(out))
    assert info.classes == CLASSES and info.preprocess == PRE
    assert (info.arch, info.run_name, info.best_val_acc) == ("cnn", "a+b", None)
    members = [{"run": "a", "arch": "cnn", "best_val_acc": 0.51, "weight": 0.25, "weights": "raw"},
               {"run": "b", "arch": "cnn", "best_val_acc": 0.52, "weight": 0.75, "weights": "raw"}]
    assert deployment_from_props(props, str(out)) == Deployment(members, "prob", "none", None)
    assert props["clf.weights"] == "raw"
    written = proof(out)
    assert written["members"] == members and written["passed"] is True
    assert (written["average"], written["tta"], written["temperature"]) == ("prob", "none", None)
    assert written["image_source"] == "validation images of a"  # the first run's split.json


def test_a_plain_single_run_export_stays_the_bare_model(tmp_path, data):
    run = make_member(tmp_path / "a", data, seed=1)
    result = export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert result.deployment is None and result.calibration is None and result.throughput is None
    assert "clf.members" not in metadata(result.path) and "members" not in proof(result.path)
    x, _, _ = val_images(run, PRE)
    np.testing.assert_allclose(_onnx_logits(result.path, x), logits_of(model_of(run), x), atol=1e-5, rtol=0)


# --- refusals ---------------------------------------------------------------------------------------------------------


def test_members_with_other_classes_are_refused(tmp_path, data):
    a = make_member(tmp_path / "a", data, seed=1)
    b = make_member(tmp_path / "b", seed=2, classes=["circle", "square", "star", "heart"])
    with pytest.raises(ModelError) as info:
        export_onnx(ExportConfig(checkpoint=str(a), more_runs=(str(b),), output=str(tmp_path / "e.onnx"), **FAST))
    assert str(info.value) == (
        f"{b / 'best.pt'}: its classes are ['circle', 'square', 'star', 'heart'], {a / 'best.pt'} has "
        "['circle', 'square', 'star', 'triangle']; ensemble members must be trained on the same classes")
    assert not (tmp_path / "e.onnx").exists()


def test_members_with_another_preprocess_are_refused(tmp_path, data):
    a = make_member(tmp_path / "a", data, seed=1)
    b = make_member(tmp_path / "b", seed=2, img_size=48)
    with pytest.raises(ModelError) as info:
        export_onnx(ExportConfig(checkpoint=str(a), more_runs=(str(b),), output=str(tmp_path / "e.onnx"), **FAST))
    assert str(info.value) == (
        f"{b / 'best.pt'}: its preprocess size is [48, 48], {a / 'best.pt'} has [32, 32]; ensemble members must "
        "share the preprocessing (retrain with the same --img-size and normalisation)")


@pytest.mark.parametrize("args, message", [
    (["--weights", "1,2,3"], "--weights 1,2,3: 3 weights for 2 members; give one per member, in order"),
    (["--weights", "1,-1"], "--weights takes positive numbers like 1,2, got 1.0,-1.0"),
    (["--weights", "1,0"], "--weights takes positive numbers like 1,2, got 1.0,0.0"),
    (["--weights", "1,nan"], "--weights takes positive numbers like 1,2, got 1.0,nan"),
    (["--weights", "1;2"], "--weights takes comma-separated numbers like 1,2, got '1;2'"),
    (["--average", "mean"], "--average must be one of prob, logit, got 'mean'"),
    (["--tta", "rot90"], "--tta must be one of none, hflip, vflip, hvflip, got 'rot90'"),
])
def test_bad_ensemble_flags_are_one_line(pair, tmp_path, args, message):
    result = clf("export", *pair, "-o", tmp_path / "e.onnx", *args, *CLI_FAST)
    assert result.exit_code == 2 and error_line(result) == f"error: {message}"
    assert not (tmp_path / "e.onnx").exists()


def test_several_runs_need_o(pair):
    result = clf("export", *pair, *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == "error: 2 runs given without -o: an ensemble belongs to none of them; pass -o ens.onnx"
    assert not (pair[0] / "model.onnx").exists()


def test_o_may_not_replace_another_members_checkpoint(pair):
    result = clf("export", *pair, "-o", pair[1] / "best.pt", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {pair[1] / 'best.pt'}: -o would overwrite the member 2 checkpoint input; "
                                  "write to another file")


# --- the CLI, clf infer and clf eval ---------------------------------------------------------------------------------


def test_the_cli_table_lists_members_and_throughput(tmp_path, pair):
    out = tmp_path / "ens.onnx"
    result = clf("export", *pair, "-o", out, "--weights", "1,3", *CLI_FAST)
    assert result.exit_code == 0, result.output
    assert "member 1" in result.output and "a (cnn), weight 0.25, best val acc 51.00%" in result.output
    assert "b (cnn), weight 0.75, best val acc 52.00%" in result.output
    assert "images/s at batch 8" in result.output and "a single member's" in result.output


def test_an_int8_ensemble_is_timed_against_an_int8_member(tmp_path, pair, monkeypatch):
    """The ratio is the ensemble's cost: an int8 ensemble against an fp32 member would credit it with int8's speed."""
    from clf.export import onnx_export

    timed = []
    real = onnx_export.create_session

    def recording(path, **kwargs):
        timed.append(onnx.load(str(path)))
        return real(path, **kwargs)

    monkeypatch.setattr(onnx_export, "create_session", recording)
    out = tmp_path / "ens_int8.onnx"
    result = clf("export", *pair, "-o", out, "--int8", "--min-agreement", "0", "--max-drop", "1", *CLI_FAST)
    assert result.exit_code == 0, result.output
    assert "a single member's" in result.output
    deployed, member = timed[-2:]  # _throughput: the deployed file, then the member exported again
    assert any(node.op_type == "QuantizeLinear" for node in deployed.graph.node)
    assert any(node.op_type == "QuantizeLinear" for node in member.graph.node)


def test_an_ensemble_runs_in_infer_and_eval_unchanged(tmp_path, pair, data):
    out = tmp_path / "ens.onnx"
    assert clf("export", *pair, "-o", out, *CLI_FAST).exit_code == 0
    infer = clf("infer", data, "--model", out, "--csv", tmp_path / "sub.csv", "--device", "cpu", "-q", "--recursive")
    assert infer.exit_code == 0, infer.output
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert rows[0] == "id,label" and len(rows) == 1 + 16 and all(r.split(",")[1] in CLASSES for r in rows[1:])
    evaluation = clf("eval", data, "--model", out, "--device", "cpu", "-q")
    assert evaluation.exit_code == 0, evaluation.output
    assert "accuracy" in evaluation.output


PLAIN_CLIENT = r'''
import json, sys
from pathlib import Path
import cv2, numpy as np, onnxruntime as ort
assert not any(m == "clf" or m.startswith("clf.") for m in sys.modules)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, pre = json.loads(meta["clf.classes"]), json.loads(meta["clf.preprocess"])
assert pre["resize"] == "stretch"
filter_ = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}[pre["interpolation"]]  # the resize clf recorded
height, width = pre["size"]
rows = []
for path in sorted(p for p in Path(sys.argv[2]).rglob("*") if p.suffix in (".png", ".jpg")):
    bgr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=filter_)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    x = (rgb * np.float32(pre["scale"]) - np.float32(pre["mean"])) / np.float32(pre["std"])
    logits = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
    rows.append(f"{path.stem},{classes[int(logits.argmax())]}")
print("\n".join(rows))
'''


def test_a_plain_onnxruntime_client_reproduces_clf_infer_on_an_ensemble(tmp_path, pair, data):
    out = tmp_path / "ens.onnx"
    assert clf("export", *pair, "-o", out, "--tta", "hflip", *CLI_FAST).exit_code == 0
    infer = clf("infer", data, "--model", out, "--csv", tmp_path / "sub.csv", "--device", "cpu", "-q", "--recursive")
    assert infer.exit_code == 0, infer.output
    client = tmp_path / "client.py"
    client.write_text(PLAIN_CLIENT)
    plain = subprocess.run([sys.executable, str(client), str(out), str(data)], check=False, capture_output=True,
                           text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    expected = sorted((tmp_path / "sub.csv").read_text().splitlines()[1:])
    assert sorted(plain.stdout.split()) == expected and len(expected) == 16


# --- fold groups ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny runs trained with the TINY recipe (one epoch), to be placed as fold-0 and fold-1."""
    root = tmp_path_factory.mktemp("trained")
    data = make_train_data(root / "data", n_per_class=8)
    for seed in (0, 1):
        train(data, root / "runs", f"r{seed}", epochs=1, val_split=0.5, seed=seed, hflip=0.5)
    return root / "runs" / "r0", root / "runs" / "r1"


@pytest.fixture
def group(tmp_path, trained_runs) -> Path:
    import shutil

    copies = []
    for run in trained_runs:
        shutil.copytree(run, tmp_path / "staging" / run.name)
        copies.append(tmp_path / "staging" / run.name)
    return make_group(tmp_path / "grp", copies)


def test_a_fold_group_exports_as_the_ensemble_of_its_folds(group):
    result = clf("export", group, "--onnx", *CLI_FAST)
    assert result.exit_code == 0, result.output
    out = group / "model.onnx"
    assert out.is_file() and (group / "model.parity.json").is_file()
    assert "out-of-fold validation images of grp" in result.output
    x0, _, _ = val_images(group / "fold-0", PRE)
    folds = [model_of(group / name) for name in ("fold-0", "fold-1")]
    expected = hand_average([logits_of(m, x0) for m in folds], (1, 1), "prob")
    np.testing.assert_allclose(_onnx_logits(out, x0), expected, atol=1e-5, rtol=0)
    info = info_from_props(metadata(out), str(out))
    assert info.run_name == "grp" and info.arch == "cnn"
    assert [m["weight"] for m in proof(out)["members"]] == [0.5, 0.5]


def test_a_fold_group_calibrates_on_its_out_of_fold_predictions(group):
    result = export_onnx(ExportConfig(checkpoint=str(group), calibrate=True, **FAST))
    report = result.calibration
    assert report.source == "out-of-fold predictions of grp" and report.images == 32
    assert report.nll_after <= report.nll_before + 1e-9
    assert float(metadata(result.path)["clf.temperature"]) == pytest.approx(report.temperature)
    assert proof(result.path)["temperature_calibration"]["temperature"] == report.temperature


def test_an_unfinished_group_is_refused_naming_the_missing_folds(group):
    from clf.data.folds import read_group, write_group

    record = read_group(group)
    record.done = ["fold-0"]
    write_group(group, record)
    result = clf("export", group, "--onnx", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {group}: unfinished fold group (fold-1 not trained yet); "
                                  f"finish it with `clf train --resume {group}`")
    assert not (group / "model.onnx").exists()


def test_a_group_among_other_runs_is_refused(group, tmp_path, data):
    other = make_member(tmp_path / "other", data)
    result = clf("export", group, other, "-o", tmp_path / "e.onnx", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {group}: a fold group is exported on its own (its folds are the ensemble); "
                                  "export it alone, or list its fold-k folders as runs")


def test_o_may_not_replace_the_group_record(group):
    result = clf("export", group, "-o", group / "oof.csv", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {group / 'oof.csv'}: -o would overwrite the oof.csv input; "
                                  "write to another file")
