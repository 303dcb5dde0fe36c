"""clf.export.for_eval: an .onnx is used as it is; a checkpoint becomes a temporary, parity-checked .onnx.

The export itself and its parity failure are covered end to end in test_eval_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from clf.errors import ClfError
from clf.export.for_eval import onnx_for_evaluation


def test_an_onnx_file_is_used_as_it_is(tmp_path):
    model = tmp_path / "Model.ONNX"
    with onnx_for_evaluation(model) as path:
        assert path == str(model)


def test_a_missing_checkpoint_leaves_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    with pytest.raises(ClfError), onnx_for_evaluation(tmp_path / "nope.pt", device="cpu"):
        pass
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith("clf-eval-")]
