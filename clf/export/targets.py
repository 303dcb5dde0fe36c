"""Export targets: what `clf export` can produce, by name, and the one function that produces each.

A target is a function ``(ExportConfig) -> result`` whose result the CLI prints (today an ExportResult). The
registry is light to import (each target's module is imported when it runs). The names are
clf.choices.EXPORT_TARGETS (ExportConfig checks its `target` against them, `clf --help` lists them; a test keeps
them equal to this registry's keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from clf.config import ExportConfig


def _onnx(cfg: ExportConfig) -> Any:
    from clf.export.onnx_export import export_onnx

    return export_onnx(cfg)


def _triton(cfg: ExportConfig) -> Any:
    from clf.export.triton import export_triton

    return export_triton(cfg)


TARGETS: dict[str, Callable[[ExportConfig], Any]] = {
    "onnx": _onnx,  # model.onnx (+ model.parity.json) with clf metadata, gated by the parity check
    "triton": _triton,  # REPO/<model>/ of a Triton model repository, the same export and gate behind it
}


def run_export(cfg: ExportConfig) -> Any:
    """Produce `cfg.target` (already checked by ExportConfig) and return its result."""
    return TARGETS[cfg.target](cfg)
