"""What a checkpoint deploys as: the metadata its .onnx carries, and which of the run's weights it holds.

Read by every export (clf/export/ensemble.py loads each member through it; a single model is an ensemble of one).
"""

from __future__ import annotations

from clf import __version__
from clf.errors import ModelError
from clf.models.checkpoint_load import preprocess_from_checkpoint
from clf.serve.metadata import ModelInfo


def model_info(ckpt: dict) -> ModelInfo:
    """The metadata a deployed .onnx carries: classes, Preprocess, provenance.

    Raises:
        ModelError: the checkpoint has no class names, or not as many as the model has outputs.
    """
    source = ckpt.get("source", "checkpoint")
    classes = ckpt.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ModelError(f"{source}: checkpoint has no class names; export a checkpoint written by `clf train`")
    outputs = (ckpt.get("model_kwargs") or {}).get("num_classes", len(classes))
    if outputs != len(classes):
        raise ModelError(f"{source}: checkpoint lists {len(classes)} class names for a model with {outputs} outputs")
    pre = preprocess_from_checkpoint(ckpt)
    return ModelInfo(
        classes=[str(name) for name in classes],
        preprocess=pre,
        arch=ckpt["arch"],
        img_size=int(ckpt.get("img_size") or pre.size[0]),
        clf_version=__version__,
        run_name=ckpt.get("run_name") or "",
        best_val_acc=ckpt.get("best_val_acc"),
    )


def checkpoint_weights(ckpt: dict) -> str:
    """"ema" or "raw": which weights a checkpoint's "model" holds (checkpoints before EMA hold raw weights).

    Raises:
        ModelError: any other value (a damaged or hand-edited checkpoint).
    """
    weights = ckpt.get("weights") or "raw"
    if weights not in ("raw", "ema"):
        raise ModelError(f"{ckpt.get('source', 'checkpoint')}: 'weights' is {weights!r}, not 'raw' or 'ema'; "
                         "export a checkpoint written by `clf train`")
    return weights
