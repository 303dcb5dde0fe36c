"""ONNX graph production: torch export (dynamo, else TorchScript), fp16, simplification, metadata, checks.

torch and onnx are imported inside the functions that use them. The exporter and opset choices live in clf/choices.py
(read by `clf --help` and by ExportConfig's validation), re-exported here.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

# The choices are re-exported (the redundant aliases) for the code and tests that read them from here.
from clf.choices import DYNAMO_MIN_OPSET as DYNAMO_MIN_OPSET, EXPORTERS as EXPORTERS, MAX_BATCH, MAX_OPSET as MAX_OPSET
from clf.choices import MIN_OPSET as MIN_OPSET, OPSETS, check_exporter_opset as check_exporter_opset
from clf.errors import ClfError, one_line

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    torch.onnx.export(
        model, (example,), str(path), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},), opset_version=opset, external_data=False, verbose=False,
    )


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import torch

    torch.onnx.export(
        model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
    )


_EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, int], None]] = {
    "dynamo": _export_dynamo,
    "torchscript": _export_torchscript,
}


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration.

    torch's TorchScript exporter always enables its C++ ONNX log (``setup_onnx_logging`` tests the function
    ``_jit_is_onnx_log_enabled`` for truth instead of calling it) and dumps the whole IR graph to stdout
    when it fails; our own one-line warning says what matters.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (e.g. a GUI host): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    """Flush C stdio buffers (std::cout writes through them) before fd 1 points back at the terminal."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def export_graph(
    model: nn.Module, size: int | tuple[int, int], path: Path, opset: int = 18, exporter: str = "auto"
) -> str:
    """Export `model` (eval mode) to `path` with input `input` [N,3,H,W] (dynamic N) and output `logits` [N,C].

    Args:
        model: the network, in eval mode.
        size: the input (H, W), or one int for a square input.
        path: the .onnx file to write.
        opset: ONNX opset, as checked by `check_exporter_opset` (ExportConfig does it).
        exporter: "auto" (dynamo, then TorchScript, among those that write `opset`), "dynamo" or "torchscript".

    Returns:
        The exporter that produced a model of exactly `opset` passing ``onnx.checker`` (full check).

    Raises:
        ClfError: every exporter failed (each one's reason in the message).
    """
    import torch

    order = exporter_order(exporter, opset)
    height, width = (size, size) if isinstance(size, int) else size
    example = torch.randn(2, 3, height, width)  # batch 2: a batch of 1 can get specialised away
    failures = []
    for name in order:
        try:
            with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
                warnings.simplefilter("ignore")
                _EXPORTERS[name](model, example, path, opset)
            _check_written(path, opset)
            return name
        except Exception as exc:  # noqa: BLE001 - exporters raise many types; we report and try the next one
            full = _disk_full_cause(exc)
            if full is not None:  # no exporter can write on a full disk: the caller's one "disk full" line
                raise full from None
            reason = one_line(exc)
            failures.append(f"{name}: {reason}")
            next_one = "; trying the next one" if name != order[-1] else ""
            logger.warning("%s exporter failed (%s)%s", name, reason, next_one)
    raise ClfError("ONNX export failed with every exporter: " + " | ".join(failures))


def _disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind an exporter's failure (exporters wrap it in their own errors), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def exporter_order(exporter: str, opset: int) -> list[str]:
    """The exporters to try, best first: the one asked, or for "auto" dynamo then TorchScript where they write
    `opset`."""
    names = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    return [name for name in names if OPSETS[name][0] <= opset <= OPSETS[name][1]]


def _check_written(path: Path, opset: int) -> None:
    """The full checker, and the opset asked for: an exporter that quietly wrote another one has failed."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    written = model_opset(onnx.load(str(path), load_external_data=False))
    if written != opset:
        raise ClfError(f"wrote opset {written} instead of {opset}")


def model_opset(model: onnx.ModelProto) -> int | None:
    """The default-domain opset a model imports (None when it imports none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after its inputs' producers (the fp16 converter appends casts at the end)."""
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ClfError("ONNX graph has a cycle or an undefined input; cannot order it")
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        pending = [node for node in pending if node not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Half-precision weights and compute; input and output stay float32 (the contract inference relies on)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True)
    toposort(half.graph)
    return half


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and fuse ops with onnxslim (installed with `pip install clf[simplify]`)."""
    try:
        import onnxslim
    except ImportError:
        raise ClfError("--simplify needs onnxslim: pip install onnxslim") from None
    return onnxslim.slim(model)


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace clf's keys in metadata_props, keeping any others."""
    import onnx

    kept = [entry for entry in model.metadata_props if entry.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{e.key: e.value for e in kept}, **props})


def check(model_path: Path, name: str | os.PathLike | None = None) -> None:
    """onnx.checker with full shape inference; a failure is a ClfError naming the file (or `name`, the path the
    user knows when `model_path` is a temp file)."""
    import onnx

    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types; each is one line for the user
        raise ClfError(f"{name or model_path}: ONNX checker failed: {one_line(exc)}") from None
