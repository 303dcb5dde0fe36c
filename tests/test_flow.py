"""The whole flow a user runs, through the CLI: sample-data -> train -> export -> infer -> score.

Small enough for a busy 2-core box (32 px cnn, a few epochs, no DataLoader workers), yet the submission must beat
chance clearly: 4 balanced classes are 0.25 by chance; the bar is 0.6.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clf.cli import app
from serve_helpers import cli_state

runner = CliRunner()


def clf(*args):
    with cli_state():
        result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"clf {' '.join(map(str, args))}\n{result.output}"
    return result


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_sample_data_to_scored_submission(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    clf("sample-data", data, "--per-class", "50", "--test", "40", "--size", "32")
    clf("train", data / "train", "--arch", "cnn", "--img-size", "32", "--epochs", "8", "--batch-size", "16",
        "--lr", "3e-3", "--no-val", "--workers", "0", "--device", "cpu", "--out", runs, "--name", "flow", "--quiet")
    run = runs / "flow"
    exported = clf("export", run, "--onnx", "--device", "cpu")
    assert "PASS" in exported.output
    model = run / "model.onnx"
    assert json.loads((run / "model.parity.json").read_text())["top1_agreement"] == 1.0

    submission = tmp_path / "submission.csv"
    inferred = clf("infer", data / "test", "--model", model, "--csv", submission,
                   "--sample-submission", data / "sample_submission.csv", "--device", "cpu")
    assert "40 of 40 images predicted on CPUExecutionProvider" in inferred.stdout
    rows, sample = read_rows(submission), read_rows(data / "sample_submission.csv")
    assert [r["id"] for r in rows] == [r["id"] for r in sample]  # the sample's order, every id once
    classes = {"circle", "square", "triangle", "star"}
    assert {r["label"] for r in rows} <= classes

    answers = {r["id"]: r["label"] for r in read_rows(data / "test_labels.csv")}
    accuracy = sum(r["label"] == answers[r["id"]] for r in rows) / len(rows)
    assert accuracy >= 0.6, f"accuracy {accuracy:.3f} on the sample test set (chance: 0.25)"

    scored = clf("score", submission, data / "test_labels.csv")
    match = re.search(r"accuracy (\d\.\d{4}) on 40 rows", scored.stdout)
    assert match and float(match.group(1)) == pytest.approx(accuracy, abs=5e-5)
