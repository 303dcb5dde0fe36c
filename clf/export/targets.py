"""Export targets: what `clf export` can produce, by name, and the one function that produces each.

A target is a function ``(ExportConfig) -> TargetResult``: a frozen dataclass whose ``kind`` names the target
("onnx": ExportResult, "triton": TritonResult), so the CLI dispatches on ``result.kind`` and every result gives the
ONNX export behind it (``onnx_result``). The registry is light to import (each target's module is imported when it
runs). The names are clf.choices.EXPORT_TARGETS (ExportConfig checks its `target` against them, `clf --help` lists
them; a test keeps them equal to this registry's keys).

Adding a target: its function here, one entry in TARGETS and its name in EXPORT_TARGETS; its result a frozen
dataclass with a ``kind`` of its own (a ClassVar) and an ``onnx_result()``, added to TargetResult; then the table
the CLI prints for that kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
    from clf.config import ExportConfig
    from clf.export.onnx_export import ExportResult
    from clf.export.triton import TritonResult

# What a target returns: one of these, told apart by its `kind` ("onnx" | "triton").
TargetResult = Union["ExportResult", "TritonResult"]


def _onnx(cfg: ExportConfig) -> ExportResult:
    from clf.export.onnx_export import export_onnx

    return export_onnx(cfg)


def _triton(cfg: ExportConfig) -> TritonResult:
    from clf.export.triton import export_triton

    return export_triton(cfg)


TARGETS: dict[str, Callable[[ExportConfig], TargetResult]] = {
    "onnx": _onnx,  # model.onnx (+ model.parity.json) with clf metadata, gated by the parity check
    "triton": _triton,  # REPO/<model>/ of a Triton model repository, the same export and gate behind it
}


def run_export(cfg: ExportConfig) -> TargetResult:
    """Produce `cfg.target` (already checked by ExportConfig) and return its typed result."""
    return TARGETS[cfg.target](cfg)
