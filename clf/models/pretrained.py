"""Weights the user has (``clf train --pretrained-path FILE``): read them safely and load them into a new model.

FILE is a clf checkpoint (best.pt/last.pt, or a run folder: its best.pt), a plain state dict saved with torch.save
(.pt/.pth, optionally nested under "state_dict" or "model"), or a .safetensors file. Everything is read with
``torch.load(..., weights_only=True)`` (or safetensors): no pickled objects. The classifier head is re-initialised
when its shape differs from the model's (another number of classes) and kept when it fits; every other key must
match the model's keys and shapes.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clf.errors import ModelError, one_line
from clf.models.checkpoint import CHECKPOINT_FORMAT
from clf.models.checkpoint_load import resolve_checkpoint, strip_wrapper_prefixes
from clf.models.layers import classifier_prefixes, in_prefixes

logger = logging.getLogger(__name__)

# model_kwargs of a clf checkpoint that are not the design: the new run sets them (class count, its --img-size,
# its own --dropout / --drop-path).
_RUN_KWARGS = ("num_classes", "img_size", "dropout", "drop_rate", "drop_path_rate")
# Where plain state dicts of other tools nest the weights.
_NESTED_KEYS = ("state_dict", "model")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedWeights:
    """A weights file, read.

    Attributes:
        path: the file read (a run folder resolved to its best.pt).
        sha256: hex digest of the file's bytes (recorded in the run's config).
        state: the state dict (parameter/buffer name -> tensor).
        arch: the architecture of a clf checkpoint; None for a plain state dict.
        model_kwargs: a clf checkpoint's model_kwargs ({} for a plain state dict).
        classes: a clf checkpoint's class names (None for a plain state dict).
    """

    path: Path
    sha256: str
    state: dict[str, torch.Tensor] = field(repr=False)
    arch: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None

    def design_kwargs(self, arch: str) -> dict[str, Any]:
        """The model_kwargs that shape the weights (the cnn's width, blocks, ...), to build the new model alike.

        Raises:
            ModelError: a clf checkpoint of another arch.
        """
        if self.arch is None:
            return {}
        if self.arch != arch:
            raise ModelError(f"{self.path}: was trained as arch '{self.arch}', not '{arch}'; use --arch {self.arch}")
        return {k: v for k, v in self.model_kwargs.items() if k not in _RUN_KWARGS}


def read_pretrained(path: str | Path) -> PretrainedWeights:
    """Read a weights file (see the module docstring) and its sha256.

    Raises:
        ModelError: no such file, unreadable or damaged, pickled objects, or no state dict inside.
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_checkpoint(path, prefer="best")
    if not path.exists():
        raise ModelError(f"{path}: weights file not found; check --pretrained-path")
    digest = _sha256(path)
    if path.suffix == ".safetensors":
        return PretrainedWeights(path, digest, _read_safetensors(path))
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        state = _state_dict(obj.get("model"), path)
        kwargs = obj.get("model_kwargs") if isinstance(obj.get("model_kwargs"), dict) else {}
        classes = obj.get("classes") if isinstance(obj.get("classes"), list) else None
        return PretrainedWeights(path, digest, state, str(obj.get("arch")), dict(kwargs), classes)
    return PretrainedWeights(path, digest, _state_dict(obj, path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the weights file ({e.strerror or one_line(e)}); check --pretrained-path"
                         ) from None
    return digest.hexdigest()


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only, every failure one ModelError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise ModelError(f"{path}: holds pickled Python objects, which are not loaded for safety; save the "
                             "weights alone (torch.save(model.state_dict(), FILE)) and pass that file") from None
        raise ModelError(_DAMAGED.format(path=path)) from None
    except Exception as e:  # noqa: BLE001 -- zip/EOF/key errors all mean a damaged or foreign file
        logger.debug("torch.load(%s) failed: %r", path, e)
        raise ModelError(_DAMAGED.format(path=path)) from None


_DAMAGED = ("{path}: cannot read the weights (corrupt, truncated or not a PyTorch file); pass a clf checkpoint, "
            "a state dict saved with torch.save, or a .safetensors file")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file  # optional: installed with timm, not required by clf
    except ImportError:
        raise ModelError(f"{path}: reading .safetensors needs the safetensors package; pip install safetensors, "
                         "or pass a state dict saved with torch.save") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own SafetensorError on damaged files
        raise ModelError(f"{path}: cannot read the safetensors file ({one_line(e, limit=160)}); pass an intact "
                         "file") from None


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, unwrapping one level of "state_dict" / "model" nesting."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: holds no state dict (a mapping of names to tensors); pass a clf checkpoint or "
                         "the file of torch.save(model.state_dict(), FILE)")
    return {str(k): v for k, v in obj.items()}


def load_pretrained(model: nn.Module, arch: str, weights: PretrainedWeights, img_size: int | None = None,
                    classes: list[str] | None = None) -> None:
    """Copy ``weights`` into ``model``: the classifier head when its shape fits and, for a clf checkpoint, its class
    names are the run's in the same order (else it keeps its fresh initialisation), every other key exactly.

    Args:
        model: a new module of ``arch``, on the CPU.
        img_size: the run's input size, named in the advice when a clf checkpoint was trained at another.
        classes: the run's class names; a clf checkpoint's head trained on other names (or another order) would
            start every logit on the wrong class, so it is re-initialised.

    Raises:
        ModelError: a key missing from the file, a key the model lacks, or a shape that differs outside the head;
            one line naming the file and the first such key.
    """
    state = strip_wrapper_prefixes(weights.state, model)
    expected = model.state_dict()
    head = classifier_prefixes(model, arch)
    body = {k: v for k, v in state.items() if not in_prefixes(k, head)}
    problem = _first_mismatch({k: v for k, v in expected.items() if not in_prefixes(k, head)}, body)
    if problem is not None:
        raise ModelError(f"{weights.path}: weights do not fit arch '{arch}' ({problem}); "
                         f"{_advice(weights, arch, img_size)}")
    head_state = {k: v for k, v in state.items() if in_prefixes(k, head)}
    keep_head = _head_fits({k: v for k, v in expected.items() if in_prefixes(k, head)}, head_state)
    other_classes = keep_head and _other_classes(weights, classes)
    keep_head = keep_head and not other_classes
    model.load_state_dict({**body, **(head_state if keep_head else {})}, strict=keep_head)
    if other_classes:
        logger.info("%s: weights loaded; classifier head re-initialised: the file's classes are not this data's "
                    "(%s)", weights.path, _class_difference(weights.classes or [], classes or []))
        return
    logger.info("%s", _head_message(weights, model, head, head_state, keep_head))


def _other_classes(weights: PretrainedWeights, classes: list[str] | None) -> bool:
    """A clf checkpoint whose class names (in order) are not the run's; a plain state dict names none."""
    return weights.classes is not None and classes is not None and list(weights.classes) != list(classes)


def _class_difference(theirs: list[str], ours: list[str]) -> str:
    """What differs, in a few words: the first name the data lacks, or the first that only the data has, or order."""
    missing = [c for c in theirs if c not in ours]
    if missing:
        return f"the file's {missing[0]!r} is not a class here"
    extra = [c for c in ours if c not in theirs]
    if extra:
        return f"{extra[0]!r} is not one of the file's"
    return "the same names in another order"


def _first_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str | None:
    """The first key (in the model's order) that is missing, extra or of another shape, as a phrase; else None."""
    for key, tensor in expected.items():
        if key not in got:
            return f"'{key}' is missing from the file"
        if tuple(got[key].shape) != tuple(tensor.shape):
            return f"'{key}' is {list(got[key].shape)} in the file, {list(tensor.shape)} in the model"
    extra = next((key for key in got if key not in expected), None)
    return None if extra is None else f"the file's '{extra}' is not in the model"


def _head_fits(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> bool:
    return got.keys() == expected.keys() and all(tuple(got[k].shape) == tuple(v.shape) for k, v in expected.items())


def _advice(weights: PretrainedWeights, arch: str, img_size: int | None) -> str:
    """What to do about weights that do not fit."""
    if weights.arch is None:
        return "pass the --arch the weights were trained with"
    trained_at = weights.model_kwargs.get("img_size")
    if trained_at is not None and img_size is not None and trained_at != img_size:
        return f"it was trained at {trained_at} px; use --img-size {trained_at}"
    return f"it was trained as arch '{weights.arch}'; use --arch {weights.arch}"


def _head_message(weights: PretrainedWeights, model: nn.Module, head: tuple[str, ...],
                  head_state: Mapping[str, torch.Tensor], kept: bool) -> str:
    """The one log line saying whether the file's classifier head was kept or re-initialised, and why."""
    outputs = _head_outputs(model.state_dict(), head)
    if kept:
        return f"{weights.path}: weights loaded; classifier head kept ({outputs} classes)"
    if not head_state:
        return f"{weights.path}: weights loaded; classifier head re-initialised (the file has none)"
    return (f"{weights.path}: weights loaded; classifier head re-initialised for {outputs} classes "
            f"(the file's has {_head_outputs(head_state, head)})")


def _head_outputs(state: Mapping[str, torch.Tensor], head: tuple[str, ...]) -> int | str:
    """The number of logits of a classifier head: the rows of its (last) weight."""
    weights = [v for k, v in state.items() if in_prefixes(k, head) and k.endswith("weight") and v.ndim >= 1]
    return int(weights[-1].shape[0]) if weights else "?"
