"""Checkpoint layout and writing: the format constants, ``build_checkpoint``, ``to_plain`` and the atomic save.

A clf checkpoint is a plain dict (contract keys below) that ``torch.load(path, weights_only=True)``
reads back: only dicts, lists, tuples, numbers, strings and tensors, never pickled objects.

    format, version, clf_version, arch, model_kwargs, img_size, classes, preprocess, config, epoch,
    model, optimizer, scheduler, scaler, rng, history, best_val_acc, run_name, params,
    augment, weights, ema, ema_updates (version 2)

A cnn checkpoint before version 3 did not record the cnn's design in ``model_kwargs``; ``load_checkpoint`` fills in
the design it was trained with (``CNN_DESIGN_V1``), so old runs still export, evaluate and resume.

``params`` is the model's parameter count (for the runs table); ``weights`` says what ``model`` holds: "raw" (the
trained weights; always so in last.pt) or "ema" (best.pt when the averaged weights validated better); ``ema`` and
``ema_updates`` are the averaged weights and their update count (None when --ema is off). `build_checkpoint` is the
one place that lays the dict out. ``source`` (the path a checkpoint was read from) is added by `load_checkpoint`
and never stored.

Reading a checkpoint back (the safe load, the old-version fill-in, rebuilding the model, finding a run's
checkpoint) is clf.models.checkpoint_load's job; this module owns the layout and the atomic write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

import clf
from clf.atomic import atomic_output
from clf.config import Preprocess

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "clf-checkpoint"
CHECKPOINT_VERSION = 3  # 2: + augment (the resolved pipeline), EMA state; 3: cnn's model_kwargs record its design
# Without these a checkpoint cannot rebuild its model.
REQUIRED_KEYS = ("arch", "model_kwargs", "model")
# Added by load_checkpoint (the path read), dropped by save_checkpoint: never stored.
SOURCE_KEY = "source"

# What torch.load(weights_only=True) accepts: these exact primitive and container types (subclasses such as
# IntEnum, namedtuple or defaultdict are pickled as their own classes and refused), tensors, dtypes, devices.
_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (dict, OrderedDict, list, tuple, set)
_TORCH_LEAVES = (torch.Tensor, torch.dtype, torch.device)


def to_plain(obj: Any) -> Any:
    """Turn ``obj`` into data that ``torch.load(weights_only=True)`` accepts.

    numpy arrays -> tensors (non-numeric ones -> lists), numpy scalars -> Python numbers,
    tuples and sets -> lists, paths -> str, dataclasses -> dicts; dicts and lists are converted
    recursively, tensors and plain values are kept. Typical use: RNG states
    (``np.random.get_state()`` holds an ndarray, ``random.getstate()`` nested tuples).

    Raises:
        TypeError: for a value with no plain equivalent (e.g. a module or a lambda).
    """
    if isinstance(obj, np.generic):  # before float/int: np.float64 is a float subclass but pickles as numpy
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biufc":
            return torch.from_numpy(np.array(obj, copy=True))
        return to_plain(obj.tolist())
    if type(obj) in _PRIMITIVES or isinstance(obj, _TORCH_LEAVES):
        return obj
    for base in (bool, int, float, str):  # enum members and other subclasses -> the plain value
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, Mapping):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    raise TypeError(f"cannot store a {type(obj).__module__}.{type(obj).__qualname__} in a checkpoint")


def build_checkpoint(
    *,
    arch: str,
    model_kwargs: Mapping[str, Any],
    classes: list[str],
    preprocess: Preprocess,
    config: Mapping[str, Any],
    model: Mapping[str, Any],
    epoch: int = 0,
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    scaler: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    best_val_acc: float | None = None,
    run_name: str = "",
    params: int | None = None,
    augment: list[dict[str, Any]] | None = None,
    weights: str = "raw",
    ema: Mapping[str, Any] | None = None,
    ema_updates: int | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of the documented schema (module docstring), version CHECKPOINT_VERSION.

    Args:
        arch, model_kwargs: what rebuilds the module (``create_model(arch, **model_kwargs)``).
        classes: class names in label order.
        preprocess: the input transform; its size gives ``img_size``.
        config: the resolved TrainConfig as a dict.
        model, optimizer, scheduler, scaler: state dicts (None where there is none).
        rng: RNG states (tensors), history: one dict per epoch, best_val_acc: None without a validation split.
        params: the parameter count; counted from ``model`` when not given.
        augment: the training augmentation pipeline as plain data (``Pipeline.to_dict()``); None before version 2.
        weights: "raw" or "ema": which weights ``model`` holds.
        ema, ema_updates: the EMA state dict and its update count; None when EMA is off.
    """
    if params is None:
        params = sum(int(v.numel()) for k, v in model.items() if isinstance(v, torch.Tensor) and _is_parameter(k))
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "clf_version": clf.__version__,
        "arch": arch,
        "model_kwargs": dict(model_kwargs),
        "img_size": preprocess.size[0],
        "classes": list(classes),
        "preprocess": preprocess.to_dict(),
        "config": dict(config),
        "epoch": epoch,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "rng": dict(rng or {}),
        "history": list(history or []),
        "best_val_acc": best_val_acc,
        "run_name": run_name,
        "params": params,
        "augment": list(augment) if augment is not None else None,
        "weights": weights,
        "ema": ema,
        "ema_updates": ema_updates,
    }


def _is_parameter(key: str) -> bool:
    """State-dict keys of buffers (BatchNorm statistics) are not parameters."""
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _check_storable(obj: Any, where: str) -> None:
    """Raise TypeError naming the first value that a weights_only load would refuse."""
    storable = type(obj) in _PRIMITIVES or type(obj) in _CONTAINERS or isinstance(obj, (*_TORCH_LEAVES, torch.Size))
    if not storable:
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which torch.load(weights_only=True) "
            "refuses; convert it with clf.models.checkpoint.to_plain"
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_storable(key, f"{where} key {key!r}")
            _check_storable(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            _check_storable(value, f"{where}[{i}]")


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then os.replace.

    A crash or error mid-way leaves any previous file at ``path`` intact and no temp file behind.
    ``format``, ``version`` and ``clf_version`` are filled in when absent; the parent folder is created.

    Args:
        state: the checkpoint dict (see the module docstring); must hold arch, model_kwargs and model.
        path: destination, e.g. ``runs/<name>/best.pt``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: a required key is missing or ``format`` is not clf's.
        TypeError: a value that a weights_only load would refuse (convert it with :func:`to_plain`).
    """
    path = Path(path)
    data = {k: v for k, v in state.items() if k != SOURCE_KEY}
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"checkpoint state lacks {', '.join(missing)}")
    data.setdefault("format", CHECKPOINT_FORMAT)
    data.setdefault("version", CHECKPOINT_VERSION)
    data.setdefault("clf_version", clf.__version__)
    if data["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format must be {CHECKPOINT_FORMAT!r}, got {data['format']!r}")
    _check_storable(data, "checkpoint")

    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        _torch_save(data, handle)
    _fsync_dir(path.parent)
    logger.debug("saved checkpoint %s (epoch %s)", path, data.get("epoch"))
    return path


class _WriteRecorder:
    """A file handle for torch.save that keeps the OSError of a failed write.

    torch's C++ zip writer swallows the OSError of the Python ``write`` it calls (a full disk: ENOSPC) and raises
    ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, which says nothing of the disk.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def _torch_save(data: Mapping[str, Any], handle: Any) -> None:
    """torch.save into an open file; a write that failed raises its own OSError (atomic_output names the user's
    path and the free space), not torch's RuntimeError."""
    recorder = _WriteRecorder(handle)
    try:
        torch.save(data, recorder)
    except RuntimeError:
        if recorder.error is not None:
            raise recorder.error from None
        raise


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform/filesystem allows opening a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
