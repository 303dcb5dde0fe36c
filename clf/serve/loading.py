"""One way to open a model for `clf infer` and `clf eval`: the same Predictor, the same rules for an ONNX file
without clf metadata (all of --img-size, --mean, --std and --labels, nothing guessed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from clf.errors import DataError, one_line
from clf.serve.metadata import has_clf_metadata
from clf.serve.predictor import Predictor


class ModelOptions(Protocol):
    """The fields InferConfig and EvalConfig share for opening a model."""

    model: str
    device: str
    batch_size: int
    threads: int
    img_size: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    labels: str | None
    # and optionally tta: a TTA_VIEWS name ("none" when absent)


def make_predictor(cfg: ModelOptions, verbose: bool = False, session_threads: int | None = None,
                   workers: int | None = None) -> Predictor:
    """A Predictor for cfg.model; a model without clf metadata needs all of --img-size, --mean, --std, --labels.

    Guessing any of them (ImageNet statistics, class names "0", "1", ...) is exactly the silent preprocessing
    drift this tool exists to prevent, so nothing is assumed.

    Args:
        session_threads: onnxruntime intra-op threads (None: onnxruntime's default, every core).
        workers: decode threads, replacing cfg.threads (a Ray actor decodes on its own share of the cores).

    Raises:
        DataError: the model cannot be used (see Predictor), or the metadata options are incomplete.
        DeviceError: the device asked for is not usable here.
    """
    fields, classes = _explicit_preprocess(cfg)
    predictor = Predictor(
        cfg.model, device=cfg.device, batch_size=cfg.batch_size, preprocess=fields, classes=classes,
        workers=workers or cfg.threads or None, threads=session_threads, verbose=verbose,
        tta=getattr(cfg, "tta", "none"),
    )
    if not has_clf_metadata(predictor.session.get_modelmeta().custom_metadata_map):
        missing = [flag for flag, value in (("--img-size", cfg.img_size), ("--mean", cfg.mean), ("--std", cfg.std),
                                            ("--labels", cfg.labels)) if not value]
        if missing:
            raise DataError(f"{cfg.model}: no clf metadata (exported by another tool?); also pass {', '.join(missing)} "
                            "(--img-size, --mean, --std and --labels describe how it was trained)")
    return predictor


def labels_file(cfg: ModelOptions) -> str | None:
    """--labels when it names a file (an input the outputs must not overwrite), else None.

    Raises:
        DataError: --labels names something that exists but is no regular file (a folder, a FIFO that would block).
    """
    if not cfg.labels:
        return None
    path = Path(cfg.labels)
    if path.is_file():
        return cfg.labels
    if "," not in cfg.labels and os.path.lexists(path):
        raise DataError(f"{path}: --labels names a folder or special file, not a text file; "
                        "give a,b,c or a file with one name per line")
    return None


def _explicit_preprocess(cfg: ModelOptions) -> tuple[dict[str, Any] | None, list[str] | None]:
    """The --img-size/--mean/--std given (as Preprocess fields) and --labels (None where not given)."""
    fields: dict[str, Any] = {}
    if cfg.img_size:
        fields["size"] = (cfg.img_size, cfg.img_size)
    if cfg.mean:
        fields["mean"] = tuple(cfg.mean)
    if cfg.std:
        fields["std"] = tuple(cfg.std)
    classes = None
    if cfg.labels:
        path = labels_file(cfg)
        if path:
            classes = [line.strip() for line in _read_text(Path(path)).splitlines() if line.strip()]
        else:
            classes = [name.strip() for name in cfg.labels.split(",") if name.strip()]
        if not classes:
            raise DataError(f"{cfg.labels}: --labels names no class; give a,b,c or a file with one name per line")
    return fields or None, classes


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
