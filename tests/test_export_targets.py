"""clf.export.targets: each target returns a typed result whose `kind` names it, with the ONNX export behind it."""

from __future__ import annotations

from pathlib import Path

from export_helpers import make_checkpoint, make_data

from clf.config import ExportConfig
from clf.export.int8 import Int8Report
from clf.export.onnx_export import ExportResult
from clf.export.parity import ParityReport
from clf.export.targets import TARGETS, run_export
from clf.export.triton import TritonResult

FAST = {"exporter": "torchscript", "batch_sizes": (1, 2)}


def test_the_registry_lists_the_targets_and_each_result_kind_matches_its_name():
    assert list(TARGETS) == ["onnx", "triton"]
    assert (ExportResult.kind, TritonResult.kind) == ("onnx", "triton")
    assert (ParityReport.kind, Int8Report.kind) == ("parity", "int8")


def test_each_target_returns_its_typed_result(tmp_path):
    data = make_data(tmp_path / "sample")
    run = make_checkpoint(tmp_path / "run" / "best.pt", data=data).parent
    onnx = run_export(ExportConfig(checkpoint=str(run), **FAST))
    assert isinstance(onnx, ExportResult) and onnx.kind == "onnx" and onnx.onnx_result() is onnx
    assert onnx.parity.kind == "parity" and Path(onnx.path).is_file()
    entry = run_export(ExportConfig(checkpoint=str(run), target="triton", triton=str(tmp_path / "repo"), **FAST))
    assert isinstance(entry, TritonResult) and entry.kind == "triton"
    assert entry.onnx_result() is entry.export and isinstance(entry.export, ExportResult)
    assert (entry.folder / "1" / "model.onnx").is_file()
