"""Reading a clf checkpoint back: the safe (``weights_only``) load with its one-line errors, the fill-in that lets
old versions load (a cnn checkpoint before version 3 gets ``CNN_DESIGN_V1``), rebuilding the model and its
preprocessing, and finding the checkpoint of a run folder.

Separate from clf.models.checkpoint (the layout and the atomic write) because training writes and everything
downstream (export, eval, resume, folds) reads: a reader needs the format constants, not the writer's machinery.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clf.config import Preprocess
from clf.errors import ModelError
from clf.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, REQUIRED_KEYS, SOURCE_KEY
from clf.models.cnn import CNN_DESIGN_V1
from clf.models.registry import create_model
from clf.run_files import checkpoint_names

logger = logging.getLogger(__name__)

# Prefixes that DistributedDataParallel and torch.compile put in front of state-dict keys.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_NOT_CLF = "{path}: not a clf checkpoint ({why}); use best.pt or last.pt written by `clf train`"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a clf checkpoint safely (``weights_only=True``, tensors on the CPU).

    Args:
        path: a ``.pt`` file, or a run folder (its best.pt, else last.pt).

    Returns:
        The checkpoint dict, plus ``"source"``: the path it was read from (used in error messages).

    Raises:
        ModelError: missing file, unreadable/corrupt/truncated file, a .pt that is not a clf checkpoint,
            a newer checkpoint version, or a clf checkpoint missing arch/model_kwargs/model.
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_checkpoint(path)
    if not path.exists():
        raise ModelError(f"{path}: checkpoint not found")
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(_NOT_CLF.format(path=path, why="no clf metadata"))
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelError(_NOT_CLF.format(path=path, why=f"bad version {version!r}"))
    if version > CHECKPOINT_VERSION:
        raise ModelError(
            f"{path}: checkpoint version {version} is newer than this clf reads ({CHECKPOINT_VERSION}); upgrade clf"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ModelError(f"{path}: clf checkpoint is incomplete (no {', '.join(missing)}); train again")
    obj[SOURCE_KEY] = str(path)
    if obj.get("arch") == "cnn" and version < 3 and isinstance(obj["model_kwargs"], dict):
        obj["model_kwargs"] = {**CNN_DESIGN_V1, **obj["model_kwargs"]}  # the design it was trained with
    return obj


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only, every failure turned into one ModelError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch >= 2.6 wraps every weights_only failure in "Weights only load failed"; only a refused
        # global ("Unsupported global") means real pickled objects, anything else is a damaged file.
        if "unsupported global" in str(e).lower():
            raise ModelError(
                _NOT_CLF.format(path=path, why="it holds pickled Python objects, which are not loaded for safety")
            ) from e
        raise ModelError(f"{path}: cannot read the checkpoint (corrupt, truncated or not a PyTorch file)") from e
    except (PermissionError, IsADirectoryError) as e:
        raise ModelError(f"{path}: cannot read the file ({e.strerror})") from e
    except Exception as e:  # noqa: BLE001 -- zip/EOF/key errors all mean a damaged or foreign file
        logger.debug("torch.load(%s) failed: %r", path, e)
        raise ModelError(f"{path}: cannot read the checkpoint (corrupt, truncated or not a PyTorch file)") from e


def _source(ckpt: Mapping[str, Any], source: str | Path | None) -> str:
    return str(source or ckpt.get(SOURCE_KEY) or "checkpoint")


def model_from_checkpoint(ckpt: Mapping[str, Any], source: str | Path | None = None) -> nn.Module:
    """Rebuild the checkpoint's model (``create_model(arch, **model_kwargs)``, no pretrained download),
    load its weights strictly and put it in eval mode.

    Args:
        ckpt: a dict from :func:`load_checkpoint`.
        source: name for error messages; defaults to the path load_checkpoint recorded.

    Raises:
        ModelError: unknown arch, model_kwargs that do not build, or weights that do not fit the arch.
    """
    src = _source(ckpt, source)
    arch = ckpt.get("arch")
    kwargs = dict(ckpt.get("model_kwargs") or {})
    kwargs.pop("pretrained", None)
    try:
        model = create_model(arch, **kwargs)
    except ModelError as e:
        raise ModelError(f"{src}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ModelError(f"{src}: cannot rebuild arch '{arch}' from model_kwargs {kwargs} ({e})") from e
    load_weights(model, ckpt.get("model"), src, arch)
    return model.eval()


def load_weights(model: nn.Module, state: Any, source: str, arch: str) -> None:
    """Load a checkpoint's state dict into ``model``, strictly.

    Raises:
        ModelError: missing, unexpected or reshaped weights, named in one line (torch's own error is a page long).
    """
    state = strip_wrapper_prefixes(state, model)
    problem = _state_mismatch(model.state_dict(), state)
    if problem:
        raise ModelError(f"{source}: weights do not fit arch '{arch}' ({problem})")
    model.load_state_dict(state, strict=True)


def strip_wrapper_prefixes(state: Any, model: nn.Module) -> Any:
    """``state`` with the key prefix of a DDP- or torch.compile-wrapped model removed, where every key has it.

    A prefix ("module.", "_orig_mod.") is taken off only when all of the state's keys carry it and none of
    ``model``'s own keys do; anything else (a non-dict, an empty dict, keys that already fit) comes back as it was,
    for the caller's key check to judge.
    """
    if not isinstance(state, Mapping) or not state:
        return state
    expected = model.state_dict()
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _state_mismatch(expected: Mapping[str, Any], got: Any) -> str | None:
    """A one-line summary of how ``got`` differs from ``expected`` (keys and shapes), or None."""
    if not isinstance(got, Mapping):
        return f"model weights are a {type(got).__name__}, not a state dict"
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    reshaped = [
        k
        for k in expected
        if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. '{missing[0]}'")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'")
    if reshaped:
        k = reshaped[0]
        shapes = f"{list(got[k].shape)} vs {list(expected[k].shape)} in the model"
        parts.append(f"{len(reshaped)} of another shape, e.g. '{k}' {shapes}")
    return "; ".join(parts) or None


def preprocess_from_checkpoint(ckpt: Mapping[str, Any], source: str | Path | None = None) -> Preprocess:
    """The Preprocess the model was trained with.

    Raises:
        ModelError: the checkpoint has no (valid) preprocess settings.
    """
    try:
        return Preprocess.from_dict(ckpt["preprocess"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"{_source(ckpt, source)}: checkpoint has no valid preprocess settings ({e})") from e


def resolve_checkpoint(run_or_ckpt: str | Path, prefer: str = "best") -> Path:
    """The checkpoint file meant by a run folder or a file path.

    Args:
        run_or_ckpt: a run folder (``runs/<name>``) or a checkpoint file.
        prefer: "best" (best.pt, else last.pt) or "last" (last.pt, else best.pt) for a run folder.

    Returns:
        The file path (a file is returned as given).

    Raises:
        ModelError: nothing at that path, or a folder without best.pt/last.pt.
    """
    if prefer not in ("best", "last"):
        raise ValueError(f"prefer must be 'best' or 'last', got {prefer!r}")
    path = Path(run_or_ckpt)
    if path.is_file():
        return path
    if path.is_dir():
        for name in checkpoint_names(prefer):
            if (path / name).is_file():
                return path / name
        raise ModelError(
            f"{path}: no best.pt or last.pt in this folder; pass a run folder of `clf train` or a .pt file"
        )
    raise ModelError(f"{path}: no such run folder or checkpoint file")
