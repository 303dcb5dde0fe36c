"""A checkpoint or run folder as a temporary ONNX model, for evaluating it with the deployed path (onnxruntime).

`clf eval` measures what would ship: the checkpoint is exported exactly as `clf export` does, parity gate
included, into a temporary folder that is removed afterwards. An .onnx file is used as it is.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clf.config import ExportConfig
from clf.errors import ParityError

logger = logging.getLogger(__name__)


@contextmanager
def onnx_for_evaluation(model: str | Path, device: str = "auto") -> Iterator[str]:
    """Yield an ONNX path for `model`: itself when it is an .onnx, else a parity-checked temporary export.

    Args:
        model: an .onnx file, a checkpoint (.pt) or a run folder (its best.pt).
        device: the onnxruntime device of the parity check (the one the evaluation will use).

    Raises:
        ParityError: the export fails the parity gate; the message points at `clf export MODEL --onnx`, which keeps
            the failing model for inspection (the temporary one is gone).
        ClfError: the checkpoint cannot be exported (missing, corrupt, foreign).
    """
    if Path(model).suffix.lower() == ".onnx":
        yield str(model)
        return
    from clf.export.onnx_export import export_onnx  # torch: only when a checkpoint is given

    with tempfile.TemporaryDirectory(prefix="clf-eval-") as folder:
        out = Path(folder) / "model.onnx"
        logger.info("%s: exporting to a temporary ONNX model for evaluation (parity checked)", model)
        try:
            export_onnx(ExportConfig(checkpoint=str(model), output=str(out), device=device))
        except ParityError as exc:
            if exc.result is None:
                raise
            raise ParityError(f"{model}: its ONNX export fails the parity check ({exc.result.parity.reason()}); "
                              f"inspect it with `clf export {model} --onnx`") from None
        yield str(out)
