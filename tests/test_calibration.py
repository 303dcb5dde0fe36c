"""clf.export.calibration and `clf export --calibrate`: the temperature fit recovers a known T, NLL and ECE are
reported before and after, and the graph divides the logits by T (then log-softmax)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from cli_helpers import clf, error_line
from ensemble_helpers import (  # noqa: F401 - _cli_state is an autouse fixture
    CLI_FAST, _cli_state, FAST, log_softmax, logits_of, make_member, metadata, model_of, proof, val_images)
from export_helpers import make_data, write_split

from clf.config import ExportConfig, Preprocess
from clf.export.calibration import calibrate, fit_temperature, nll, softmax
from clf.export.onnx_export import export_onnx
from clf.probabilities import expected_calibration_error, log_loss



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("cal-data"))


def over_confident(n: int = 20000, classes: int = 5, true_t: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z), logits given as true_t * z: the right temperature is true_t."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, classes)) * 1.5
    p = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return true_t * z, labels


def test_the_fit_recovers_a_known_temperature():
    logits, labels = over_confident()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.05)
    under, labels = over_confident(true_t=0.5, seed=1)
    assert fit_temperature(under, labels) == pytest.approx(0.5, rel=0.05)


def test_the_fit_is_the_nll_minimum():
    logits, labels = over_confident(n=3000)
    t = fit_temperature(logits, labels)
    assert nll(logits, labels, t) <= min(nll(logits, labels, t * 0.98), nll(logits, labels, t * 1.02))


def test_the_report_scores_before_and_after_and_keeps_the_ranking():
    logits, labels = over_confident(n=5000)
    report = calibrate(logits, labels, "synthetic")
    before, after = softmax(logits), softmax(logits / report.temperature)
    assert report.nll_before == pytest.approx(log_loss(before, labels))
    assert report.nll_after == pytest.approx(log_loss(after, labels)) and report.nll_after < report.nll_before
    assert report.ece_before == pytest.approx(expected_calibration_error(before, labels))
    assert report.ece_after < report.ece_before
    assert (before.argmax(1) == after.argmax(1)).all()  # temperature never changes a prediction
    assert (report.images, report.source) == (5000, "synthetic")


def test_calibrate_bakes_the_temperature_into_the_graph(tmp_path, data):
    run = make_member(tmp_path / "a", data, seed=4)
    result = export_onnx(ExportConfig(checkpoint=str(run), calibrate=True, **FAST))
    report = result.calibration
    assert report.source == "validation images of a" and report.images == 4
    x, _, _ = val_images(run, Preprocess(size=(32, 32)))
    expected = log_softmax(logits_of(model_of(run), x) / report.temperature)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-5, rtol=0)
    assert float(metadata(result.path)["clf.temperature"]) == report.temperature
    written = proof(result.path)
    assert written["temperature"] == report.temperature
    assert written["temperature_calibration"] == json.loads(json.dumps(report.to_dict()))


def test_the_cli_table_reports_nll_and_ece(tmp_path, data):
    run = make_member(tmp_path / "a", data, seed=4)
    result = clf("export", run, "--calibrate", *CLI_FAST)
    assert result.exit_code == 0, result.output
    for row in ("temperature", "NLL", "ECE", "(fitted on 4 validation images of a)"):
        assert row in result.output


def test_a_run_without_validation_images_is_refused(tmp_path, data):
    run = make_member(tmp_path / "noval", seed=4)
    write_split(run, data, val=[])
    result = clf("export", run, "--calibrate", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {run / 'split.json'}: no validation images (trained with --val-split 0?); --calibrate fits the "
        "temperature on the run's validation images: use a run with a validation split, or a fold group")
    assert not (run / "model.onnx").exists()


def test_a_run_without_split_json_is_refused(tmp_path):
    run = make_member(tmp_path / "bare", seed=4)
    result = clf("export", run, "--calibrate", *CLI_FAST)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {run / 'split.json'}: missing or unusable; --calibrate fits the temperature on the run's validation "
        "images (export a run folder written by `clf train`)")


def test_a_temperature_at_the_edge_of_the_range_is_a_warning(caplog):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((2000, 4)) * 5, rng.integers(0, 4, 2000)  # confidence unrelated to truth
    with caplog.at_level(logging.DEBUG, logger="clf"):
        report = calibrate(logits, labels, "noise")
    assert report.temperature == pytest.approx(100.0, rel=1e-3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [("temperature 100 is at the edge of the range searched (0.01 to 100) on 2000 images (noise): "
                         "the model's confidence carries little information there; check its accuracy")]


def test_parity_tolerance_scales_with_a_sharpening_temperature_only():
    from clf.export.onnx_export import parity_tolerance

    assert parity_tolerance(1e-4, None) == 1e-4
    assert parity_tolerance(1e-4, 2.0) == 1e-4  # softening shrinks the rounding differences: the plain --atol
    assert parity_tolerance(1e-4, 0.25) == pytest.approx(4e-4)  # logits / 0.25: their float32 differences x 4
