"""`clf train` with the imbalance options (--focal-gamma, --class-weights, --sampler): what the run records,
resume, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from train_helpers import load, make_data

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("sample"))


def test_focal_gamma_is_recorded_by_a_focal_run(data, tmp_path):
    result = clf("train", data, *FAST, "--epochs", "1", "--loss", "focal", "--focal-gamma", "0.5", "--out", tmp_path,
                 "--name", "f")
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "f" / "last.pt")["config"]["focal_gamma"] == 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--loss", "focal", "--focal-gamma", "-1"], "error: --focal-gamma must be >= 0 (0 is cross-entropy), got -1.0"),
    (["--loss", "focal", "--focal-gamma", "nan"], "error: --focal-gamma must be a finite number, got nan"),
    (["--loss", "cross_entropy", "--focal-gamma", "1"],
     "error: --focal-gamma applies to --loss focal; add --loss focal or leave it out"),
    (["--focal-gamma", "1"], "error: --focal-gamma applies to --loss focal; add --loss focal or leave it out"),
])
def test_a_bad_focal_gamma_is_one_line_before_any_run_folder(data, tmp_path, args, message):
    result = clf("train", data, *FAST, *args, "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == message
    assert list(tmp_path.iterdir()) == []
