"""`clf export --int8` (clf/export/int8.py): static QDQ quantisation of the proven fp32 graph behind an accuracy gate;
`clf infer` and a plain onnxruntime client run the int8 file unchanged."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
from cli_helpers import clf, error_line
from export_helpers import CLI_FAST as FAST
from serve_helpers import cli_state
from train_helpers import make_data, train

from clf.config import ExportConfig, Preprocess
from clf.data.files import list_images
from clf.data.preprocess import preprocess
from clf.export import int8, int8_graph, int8_metric
from clf.export.parity import ParityReport

CLASSES = ["circle", "square", "star", "triangle"]  # the sample competition's classes
RUN_NAME = "int8-run"


@pytest.fixture(autouse=True)
def _wide():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A really trained tiny run (its predictions depend on the image, so a broken quantisation shows)."""
    root = tmp_path_factory.mktemp("int8")
    data = make_data(root / "sample")
    train(data, root / "runs", RUN_NAME, epochs=3)
    shutil.move(root / "runs" / RUN_NAME, root / "run")
    return {"root": root, "data": data}


@pytest.fixture
def run(built, tmp_path) -> Path:
    shutil.copytree(built["root"] / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory) -> Path:
    """One passing int8 export shared by the read-only tests: the run folder holding model_int8.onnx."""
    folder = tmp_path_factory.mktemp("int8-run") / "run"
    shutil.copytree(built["root"] / "run", folder)
    with cli_state():
        result = clf("export", folder, "--onnx", "--int8", "--calibration-images", "16", *FAST)
    assert result.exit_code == 0, result.output
    return folder


def test_int8_export_writes_the_model_and_its_proof_with_the_gate_numbers(exported, built):
    names = {p.name for p in exported.iterdir()}
    assert {"model_int8.onnx", "model_int8.parity.json"} <= names and "model.onnx" not in names
    proof = json.loads((exported / "model_int8.parity.json").read_text())
    assert proof["passed"] is True and proof["precision"] == "int8" and proof["model"] == "model_int8.onnx"
    assert proof["top1_agreement"] >= 0.99 and proof["min_agreement"] == 0.99 and proof["max_drop"] == 0.005
    assert proof["images"] == 8 and proof["image_source"] == f"validation images of {RUN_NAME}"
    assert proof["fp32_accuracy"] is not None and proof["int8_accuracy"] is not None
    assert proof["accuracy_drop"] == pytest.approx(proof["fp32_accuracy"] - proof["int8_accuracy"])
    assert proof["metric"] == "accuracy"  # the run's --metric (the default): the gate's metric is the accuracy
    assert (proof["fp32_metric"], proof["int8_metric"], proof["metric_drop"]) == (
        proof["fp32_accuracy"], proof["int8_accuracy"], proof["accuracy_drop"])
    assert proof["max_abs_diff"] <= proof["atol"] == 1e-4  # the fp32 graph's parity with PyTorch came first
    assert proof["calibration"] == {"method": "minmax", "images": 16, "source": f"training images of {RUN_NAME}",
                                    "format": "QDQ", "activations": "QUInt8",
                                    "weights": "QInt8 per-channel, 7-bit (reduce_range)"}


def test_int8_model_is_quantized_and_carries_precision_and_calibration(exported):
    model = onnx.load(str(exported / "model_int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and any(len(i.dims) == 4 for i in weights)  # conv weights stored as int8
    # 7-bit weights: full 8-bit ones saturate onnxruntime's u8s8 kernels on CPUs without VNNI (int8.REDUCE_RANGE)
    assert max(int(np.abs(onnx.numpy_helper.to_array(i).astype(np.int32)).max()) for i in weights) <= 64
    props = {p.key: p.value for p in model.metadata_props}
    assert props["clf.precision"] == "int8"
    assert json.loads(props["clf.calibration"])["method"] == "minmax"
    assert json.loads(props["clf.classes"]) == CLASSES and "clf.preprocess" in props
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_plain_onnxruntime_client_and_clf_infer_give_the_same_labels(exported, built, tmp_path):
    """A client with onnxruntime, numpy and clf's torch-free preprocess only, reading the metadata."""
    session = ort.InferenceSession(str(exported / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["clf.classes"])
    pre = Preprocess.from_json(meta["clf.preprocess"])
    paths = list_images(built["data"], recursive=True)
    batch = np.stack([preprocess(str(p), pre) for p in paths])
    (logits,) = session.run(None, {"input": batch})
    plain = {p.stem: classes[i] for p, i in zip(paths, logits.argmax(1))}
    result = clf("infer", built["data"], "--recursive", "--model", exported / "model_int8.onnx", "--csv",
                 tmp_path / "sub.csv", "--quiet")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "sub.csv", newline="") as handle:
        rows = {row["id"]: row["label"] for row in csv.DictReader(handle)}
    assert rows == plain


def test_failing_gate_exits_3_and_keeps_the_model_aside(run, monkeypatch):
    """Calibrating on inputs 1000x too large gives ranges that crush every activation: agreement collapses."""
    real = int8._CalibrationReader
    monkeypatch.setattr(int8, "_CalibrationReader", lambda images, name: real(images * 1000.0, name))
    result = clf("export", run, "--int8", *FAST)
    assert result.exit_code == 3, result.output
    line = error_line(result)
    failed = run / "model_int8.parity-failed.onnx"
    assert line.startswith(f"error: {run / 'model_int8.onnx'}: int8 accuracy gate failed (top-1 agreement with fp32 ")
    assert re.fullmatch(r"\d+\.\d\d% < 99\.00%(; accuracy drop \d+\.\d\d points > 0\.50)?",
                        line.split("with fp32 ", 1)[1].split(")", 1)[0]), line
    assert line.endswith(f"); model kept as {failed} for inspection")
    assert not (run / "model_int8.onnx").exists() and not (run / "model_int8.parity.json").exists()
    proof = json.loads((run / "model_int8.parity-failed.parity.json").read_text())
    assert proof["passed"] is False and proof["model"] == failed.name and proof["top1_agreement"] < 0.99
    assert "FAIL" in result.output  # the table with the numbers behind the failure


def test_a_failed_gate_leaves_the_model_already_there_untouched(exported, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(exported, folder)
    before = (folder / "model_int8.onnx").read_bytes(), (folder / "model_int8.parity.json").read_bytes()
    monkeypatch.setattr(int8, "gate", _gate_with_int8_accuracy(0.5))
    result = clf("export", folder, "--int8", *FAST)
    assert result.exit_code == 3, result.output
    assert "accuracy drop 50.00 points > 0.50" in error_line(result)
    assert ((folder / "model_int8.onnx").read_bytes(), (folder / "model_int8.parity.json").read_bytes()) == before


def _gate_with_int8_accuracy(value: float):
    """The real gate, with the int8 model's measured accuracy replaced (fp32 stays as measured)."""
    real = int8.gate

    def gate(*args, **kwargs):
        from dataclasses import replace

        report = real(*args, **kwargs)
        report = replace(report, fp32_accuracy=1.0, int8_accuracy=value, accuracy_drop=1.0 - value,
                         fp32_metric=1.0, int8_metric=value, metric_drop=1.0 - value)  # accuracy: the run's metric
        return replace(report, passed=report.reason() == "")

    return gate


def test_accuracy_needs_a_class_folder_for_every_image(tmp_path):
    root = tmp_path / "data"
    paths = [str(root / "star" / "a.png"), str(root / "circle" / "b.png")]
    assert int8.labels_from_folders(paths, str(root), CLASSES) == [2, 0]
    assert int8.labels_from_folders([*paths, str(root / "c.png")], str(root), CLASSES) is None
    assert int8.labels_from_folders([str(root / "dog" / "d.png")], str(root), CLASSES) is None


def test_a_row_of_nan_is_neither_right_nor_in_agreement():
    """argmax picks a NaN row's first NaN: a broken int8 graph must not score as agreeing or as accurate."""
    nan = np.full((2, 4), np.nan, dtype=np.float32)
    good = np.eye(4, dtype=np.float32)[:2]
    assert int8.accuracy(nan, [0, 0]) == 0.0
    assert int8.accuracy(good, [0, 1]) == 1.0
    assert not int8.top1_agrees(nan, nan).any()


def test_report_reason_names_each_failed_condition():
    base = ParityReport(True, 0.0, 0.0, 1.0, 1e-4, 8, "x", [1], "CPUExecutionProvider", "m.onnx", "int8")
    fields = {k: v for k, v in base.__dict__.items()}
    ok = int8.Int8Report(**{**fields, "top1_agreement": 0.995}, accuracy_drop=0.004, min_agreement=0.99,
                         max_drop=0.005)
    assert ok.reason() == ""
    bad = int8.Int8Report(**{**fields, "top1_agreement": 0.9}, accuracy_drop=0.02, min_agreement=0.99, max_drop=0.005)
    assert bad.reason() == "top-1 agreement with fp32 90.00% < 99.00%; accuracy drop 2.00 points > 0.50"
    nan = int8.Int8Report(**{**fields, "top1_agreement": float("nan")}, min_agreement=0.99)
    assert nan.reason().startswith("top-1 agreement")  # NaN never passes


def test_int8_gate_judges_by_the_runs_metric_and_records_it(built, tmp_path):
    """A run trained with --metric f1_macro: the proof records both models' macro F1 on the gate images (class
    folders of --check-images), each equal to scikit-learn's f1_score on that model's decisions, and the table shows
    it."""
    metrics = pytest.importorskip("sklearn.metrics")
    data = built["data"]
    train(data, tmp_path / "runs", "f1-run", epochs=3, metric="f1_macro")
    run = tmp_path / "runs" / "f1-run"
    assert clf("export", run, "-o", tmp_path / "fp32.onnx", *FAST).exit_code == 0  # the reference, as --int8 builds it
    result = clf("export", run, "--int8", "--check-images", data, "--calibration-images", "16", "--min-agreement", "0",
                 "--max-drop", "1", *FAST)
    assert result.exit_code == 0, result.output
    proof = json.loads((run / "model_int8.parity.json").read_text())
    paths = int8.folder_images(str(data), int8.MAX_GATE_IMAGES)
    labels = int8.labels_from_folders(paths, str(data), CLASSES)
    assert proof["metric"] == "f1_macro" and proof["images"] == len(paths) == 48
    for model, key in ((tmp_path / "fp32.onnx", "fp32_metric"), (run / "model_int8.onnx", "int8_metric")):
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        pre = Preprocess.from_json(session.get_modelmeta().custom_metadata_map["clf.preprocess"])
        (logits,) = session.run(None, {"input": np.stack([preprocess(path, pre) for path in paths])})
        assert proof[key] == pytest.approx(metrics.f1_score(labels, logits.argmax(1), average="macro"), abs=1e-12)
    assert proof["metric_drop"] == pytest.approx(proof["fp32_metric"] - proof["int8_metric"])
    assert proof["fp32_accuracy"] is not None  # still reported
    assert "f1_macro: fp32 " in result.output


def test_metric_drop_is_how_much_worse_int8_is_in_the_metrics_direction():
    assert int8_metric.metric_drop("f1_macro", 0.80, 0.75) == pytest.approx(0.05)
    assert int8_metric.metric_drop("log_loss", 0.30, 0.35) == pytest.approx(0.05)  # lower is better: int8 - fp32
    assert int8_metric.metric_drop("log_loss", 0.30, 0.25) == pytest.approx(-0.05)  # int8 better: no drop
    assert int8_metric.metric_drop("roc_auc", float("nan"), 0.9) is None  # undefined on the gate images
    assert np.isnan(int8_metric.metric_drop("f1_macro", 0.8, float("nan")))  # a broken int8 graph: never passes
    assert int8_metric.metric_drop("f1_macro", None, None) is None  # no labels


def test_the_gate_bounds_the_runs_metric_not_the_accuracy():
    base = ParityReport(True, 0.0, 0.0, 1.0, 1e-4, 8, "x", [1], "CPUExecutionProvider", "m.onnx", "int8")
    fields = {**base.__dict__, "top1_agreement": 1.0, "min_agreement": 0.99, "max_drop": 0.005, "accuracy_drop": 0.02}
    worse_loss = int8.Int8Report(**fields, metric="log_loss", fp32_metric=0.30, int8_metric=0.35, metric_drop=0.05)
    assert worse_loss.reason() == "log_loss rise 0.0500 > 0.0050"  # the accuracy's 2 points are reported, not gated
    assert int8.Int8Report(**fields, metric="f1_macro", metric_drop=0.001).reason() == ""
    assert int8.Int8Report(**fields, metric="f1_macro", metric_drop=0.03).reason() == "f1_macro drop 3.00 points > 0.50"
    assert int8.Int8Report(**fields, metric="f1_macro", metric_drop=float("nan")).reason().startswith("f1_macro drop")
    undefined = int8.Int8Report(**fields, metric="roc_auc", fp32_metric=float("nan"), metric_drop=None)
    assert undefined.reason() == "accuracy drop 2.00 points > 0.50"  # the metric undefined: the accuracy is gated


def test_the_gate_metric_is_the_runs_or_the_first_members():
    from clf.errors import ClfError

    assert int8_metric.gate_metric([{"config": {}}], CLASSES) == "accuracy"  # runs before --metric
    mixed = [{"config": {"metric": "f1_macro"}}, {"config": {"metric": "log_loss"}}]
    assert int8_metric.gate_metric(mixed, CLASSES) == "f1_macro"
    with pytest.raises(ClfError, match="^--metric qwk needs ordered classes"):  # refused as `clf train` does
        int8_metric.gate_metric([{"config": {"metric": "qwk"}}], CLASSES)
    assert int8_metric.gate_metric([{"config": {"metric": "qwk"}}], ["0", "1", "2", "10"]) == "qwk"


def test_the_metric_of_logits_is_scored_on_their_softmax_and_a_broken_row_is_nan():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    labels = [0, 1, 2, 2]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(4), labels]))
    assert int8_metric.model_metric("log_loss", logits, labels, None) == pytest.approx(expected)
    logits[1, 0] = np.nan
    assert np.isnan(int8_metric.model_metric("f1_macro", logits, labels, None))


@pytest.mark.parametrize(("steps", "stride"), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (6, 3), (32, 4), (33, 3)])
def test_fold_stride_divides_the_steps(steps, stride):
    assert int8._fold_stride(steps) == stride


def test_calibration_reader_serves_each_range_once():
    images = np.arange(20 * 3 * 2 * 2, dtype=np.float32).reshape(20, 3, 2, 2)
    reader = int8._CalibrationReader(images, "input")
    assert len(reader) == 3  # steps of 8, 8, 4
    reader.set_range(1, 3)
    sizes = []
    while (item := reader.get_next()) is not None:
        sizes.append(len(item["input"]))
    assert sizes == [8, 4]


def test_int8_options_fill_their_defaults_only_with_int8():
    cfg = ExportConfig(checkpoint="x", int8=True)
    assert (cfg.calibration_images, cfg.calibration_method, cfg.min_agreement, cfg.max_drop) == (
        256, "minmax", 0.99, 0.005)
    plain = ExportConfig(checkpoint="x")
    assert plain.calibration_images is None and plain.calibration_method is None


def test_check_images_with_class_folders_are_the_gate_images_with_accuracies(run, built):
    # a 3-epoch 32 px cnn has close logits: a few of 48 flip, so the thresholds are not what this test is about
    result = clf("export", run, "--int8", "--check-images", built["data"], "--min-agreement", "0.9", "--max-drop", "1",
                 *FAST)
    assert result.exit_code == 0, result.output
    proof = json.loads((run / "model_int8.parity.json").read_text())
    assert (proof["image_source"], proof["images"]) == (str(built["data"]), len(list_images(built["data"],
                                                                                            recursive=True)))
    assert proof["fp32_accuracy"] is not None and proof["accuracy_drop"] is not None
    assert proof["parity_images"] == 32 and proof["calibration"]["images"] == 40  # parity keeps its --max-images


def test_gate_images_without_class_folders_check_agreement_only(run, built, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in list_images(built["data"], recursive=True)[:12]:
        shutil.copy(path, flat / f"{Path(path).parent.name}-{Path(path).name}")
    result = clf("export", run, "--int8", "--check-images", flat, "--min-agreement", "0.9", *FAST)
    assert result.exit_code == 0, result.output
    proof = json.loads((run / "model_int8.parity.json").read_text())
    assert proof["fp32_accuracy"] is None and proof["accuracy_drop"] is None and proof["images"] == 12
    assert " ".join(result.stderr.split()) == (f"WARNING {flat}: no class folders, so no accuracies; the int8 gate "
                                               "checks the top-1 agreement only")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_methods_run_and_are_recorded(run, method):
    """The histogram calibrators fold a few steps at a time (CalibStridedMinMax) and still give a working model."""
    result = clf("export", run, "--int8", "--calibration-method", method, "--calibration-images", "24",
                 "--min-agreement", "0", "--max-drop", "1", *FAST)
    assert result.exit_code == 0, result.output
    props = {p.key: p.value for p in onnx.load(str(run / "model_int8.onnx")).metadata_props}
    assert json.loads(props["clf.calibration"])["method"] == method
    proof = json.loads((run / "model_int8.parity.json").read_text())
    assert proof["calibration"]["method"] == method and proof["calibration"]["images"] == 24


def _gate_images(run: Path) -> np.ndarray:
    """The run's validation images through its Preprocess: the images the int8 gate runs both models on."""
    from clf.export.parity import confined_images, load_batch, read_split

    split = read_split(run / "split.json")
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    pre = Preprocess.from_json(session.get_modelmeta().custom_metadata_map["clf.preprocess"])
    return load_batch(confined_images(split["root"], split["val"], run / "split.json"), pre)


def test_int8_with_a_temperature_is_gated_against_the_calibrated_float_model(run):
    """Issue 24: --int8 --calibrate quantises the graph with the temperature baked in, and the gate's reference is
    that calibrated fp32 graph (log-probabilities), not the bare network's logits."""
    result = clf("export", run, "--int8", "--calibrate", "--calibration-images", "16", *FAST)
    assert result.exit_code == 0, result.output
    assert clf("export", run, "--calibrate", *FAST).exit_code == 0  # the same calibrated graph in fp32: model.onnx
    assert clf("export", run, "-o", run / "bare.onnx", *FAST).exit_code == 0
    images = _gate_images(run)
    outputs = {name: ort.InferenceSession(str(run / name), providers=["CPUExecutionProvider"]).run(None, {
        "input": images})[0] for name in ("model_int8.onnx", "model.onnx", "bare.onnx")}
    proof = json.loads((run / "model_int8.parity.json").read_text())
    assert proof["passed"] is True and proof["images"] == len(images)
    against_calibrated = float(np.abs(outputs["model_int8.onnx"] - outputs["model.onnx"]).max())
    assert proof["int8_max_abs_diff"] == pytest.approx(against_calibrated, rel=1e-5, abs=1e-6)
    assert proof["int8_max_abs_diff"] < float(np.abs(outputs["model_int8.onnx"] - outputs["bare.onnx"]).max())
    assert np.allclose(np.exp(outputs["model_int8.onnx"]).sum(1), 1, atol=1e-5)  # still log-probabilities
    props = {p.key: p.value for p in onnx.load(str(run / "model_int8.onnx")).metadata_props}
    assert float(props["clf.temperature"]) == pytest.approx(proof["temperature_calibration"]["temperature"])
    assert props["clf.precision"] == "int8"


def test_symbolic_shape_inference_is_skipped_only_for_graphs_it_cannot_shape(run, tmp_path):
    """A bare network keeps onnxruntime's full pre-processing; a temperature graph (ReduceLogSumExp at opset 18,
    which onnxruntime's symbolic shape inference cannot shape) gets ONNX's shape inference only."""
    assert clf("export", run, "-o", tmp_path / "bare.onnx", *FAST).exit_code == 0
    assert clf("export", run, "--calibrate", "-o", tmp_path / "calibrated.onnx", *FAST).exit_code == 0
    assert int8_graph.symbolic_shapes_supported(tmp_path / "bare.onnx")
    assert not int8_graph.symbolic_shapes_supported(tmp_path / "calibrated.onnx")


def test_only_the_head_after_the_last_weighted_op_stays_float(run, tmp_path):
    """A bare network has no float tail (quantised as before); a calibrated graph's head (stack, log-softmax, average,
    temperature) stays float, so the int8 model's outputs are still log-probabilities."""
    assert clf("export", run, "-o", tmp_path / "bare.onnx", *FAST).exit_code == 0
    assert clf("export", run, "--calibrate", "-o", tmp_path / "calibrated.onnx", *FAST).exit_code == 0
    assert int8_graph.float_tail(onnx.load(str(tmp_path / "bare.onnx"))) == []
    tail = [node.op_type for node in int8_graph.float_tail(onnx.load(str(tmp_path / "calibrated.onnx")))]
    assert {"LogSoftmax", "ReduceLogSumExp", "Div"} <= set(tail) and not set(tail) & int8_graph.WEIGHTED_OPS
