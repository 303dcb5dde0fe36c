"""Architecture names -> nn.Module: the project's own CNN, torchvision's AlexNet and every timm model.

timm and torchvision are imported inside the functions: importing timm takes 1-2 s, and ``clf``
commands that never build a model (infer, sample-data) should not pay for it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from clf.errors import ModelError, one_line
from clf.models.cnn import CNN_DESIGN
from clf.models.cnn import MIN_INPUT_SIZE as CNN_MIN_INPUT_SIZE
from clf.models.cnn import SimpleCNN
from clf.models.summary import eval_mode, zeros_input

logger = logging.getLogger(__name__)

# Our own names, listed before timm's (which are many and sorted).
OWN_ARCHS = ("cnn", "alexnet")
# AlexNet's 11x11/4 stem, two 3x3/2 pools and a last 3x3/2 pool leave 1x1 at 63 px; its adaptive pool does the rest.
ALEXNET_MIN_INPUT_SIZE = 63
# timm families whose stage-wise windows/relative-position tables need the input to divide by their 32x stride.
_MULTIPLE_OF_32_PREFIXES = ("coatnet", "coatnext", "maxvit", "maxxvit")

_NOT_LOCAL = (
    "pretrained weights for '{arch}' are not available locally (no network); "
    "train without --pretrained or place the weights in the {cache}"
)
_HF_CACHE = "Hugging Face cache"


def list_models(pattern: str | None = None) -> list[str]:
    """Names accepted by :func:`create_model`: "cnn", "alexnet", then timm's, in that order.

    Args:
        pattern: fnmatch wildcard applied to every name (e.g. ``"resnet*"``); None lists all.

    Returns:
        The matching names; our own first, then timm's sorted list.
    """
    import timm  # lazy: slow import

    own = [a for a in OWN_ARCHS if pattern is None or fnmatch.fnmatchcase(a, pattern)]
    return own + [name for name in timm.list_models(pattern or "") if name not in OWN_ARCHS]


def is_known_arch(arch: str) -> bool:
    """True when :func:`create_model` can build ``arch`` (timm names may carry a ``.tag``)."""
    if arch in OWN_ARCHS:
        return True
    if not arch:
        return False
    import timm

    return bool(timm.is_model(arch))


def _check_known(arch: str) -> None:
    if not is_known_arch(arch):
        raise ModelError(f"unknown architecture '{arch}'; see `clf models`")


def _timm_cfg(arch: str) -> Any:
    """timm's PretrainedCfg for ``arch`` (default tag unless one is given), or None."""
    import timm.models

    return timm.models.get_pretrained_cfg(arch)


def takes_img_size(arch: str) -> bool:
    """True for timm models built for one input size (position embeddings, attention windows/tables).

    timm marks them with ``fixed_input_size`` in their pretrained config (coatnet, maxvit, vit, swin, ...);
    convnets (resnet, rexnet, efficientnet, ...) run at any size and do not accept ``img_size``.
    """
    if arch in OWN_ARCHS:
        return False
    cfg = _timm_cfg(arch)
    return bool(cfg is not None and cfg.fixed_input_size)


def model_kwargs_for(arch: str, num_classes: int, img_size: int = 224, drop_path: float = 0.0,
                     dropout: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """The exact keyword arguments that rebuild the same module with ``create_model(arch, **kw)``.

    Stored as ``model_kwargs`` in checkpoints, so they hold plain values only (export rebuilds the same module;
    in eval mode dropout and drop-path do nothing).

    Args:
        arch: a name from :func:`list_models`.
        num_classes: number of output logits.
        img_size: square input size; recorded only for models that need it (see :func:`takes_img_size`).
        drop_path: stochastic depth rate (--drop-path); timm's ``drop_path_rate``, refused for cnn and alexnet.
        dropout: dropout before the classifier (--dropout); ``dropout`` of cnn/alexnet, timm's ``drop_rate``;
            None keeps the architecture's own default.
        **kwargs: extra constructor arguments (e.g. ``drop_rate``), passed through unchanged.

    Returns:
        ``{"num_classes": n}``, plus ``"img_size"`` where the architecture depends on it, plus the regularisation
        arguments given, plus ``kwargs``.

    Raises:
        ModelError: --drop-path for an architecture without stochastic depth.
    """
    _check_known(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    kw: dict[str, Any] = {"num_classes": num_classes}
    if arch == "cnn":  # recorded, so that a checkpoint rebuilds its own design after the defaults change
        kw.update(CNN_DESIGN)
    if takes_img_size(arch):
        kw["img_size"] = img_size
    kw.update(_regularisation_kwargs(arch, drop_path, dropout))
    kw.update(kwargs)
    return kw


def _no_drop_path(arch: str) -> ModelError:
    return ModelError(f"--drop-path: '{arch}' has no stochastic depth; leave --drop-path out")


def _regularisation_kwargs(arch: str, drop_path: float, dropout: float | None) -> dict[str, Any]:
    """--drop-path and --dropout as the constructor's own argument names (only those given)."""
    kw: dict[str, Any] = {}
    if arch in OWN_ARCHS:
        if drop_path > 0:
            raise _no_drop_path(arch)
        if dropout is not None:
            kw["dropout"] = float(dropout)
        return kw
    if drop_path > 0:
        kw["drop_path_rate"] = float(drop_path)
    if dropout is not None:
        kw["drop_rate"] = float(dropout)
    return kw


def create_model(
    arch: str, num_classes: int, img_size: int = 224, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build an architecture by name, for ``num_classes`` outputs at ``img_size`` px.

    Args:
        arch: "cnn", "alexnet" or any timm model name (see :func:`list_models`).
        num_classes: number of output logits.
        img_size: square input size; forwarded only to models that need it (coatnet, vit, ...).
        pretrained: load ImageNet weights, from the local caches only (there is no network).
        **kwargs: extra constructor arguments forwarded to the model.

    Returns:
        The module in training mode, on the CPU.

    Raises:
        ModelError: unknown arch, or pretrained weights that are not available locally.
    """
    kw = model_kwargs_for(arch, num_classes, img_size, **kwargs)
    if arch == "cnn":
        if pretrained:
            raise ModelError("'cnn' has no pretrained weights (it trains from scratch); train without --pretrained")
        return SimpleCNN(**kw)
    if arch == "alexnet":
        return _create_alexnet(pretrained=pretrained, **kw)
    return _create_timm(arch, kw, pretrained)


def _create_alexnet(num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    """torchvision AlexNet; pretrained weights come from torch's hub cache, the head re-initialised."""
    from torchvision.models import AlexNet_Weights, alexnet  # lazy

    model = alexnet(num_classes=num_classes, **kwargs)
    if not pretrained:
        return model
    path = _torch_hub_file(AlexNet_Weights.IMAGENET1K_V1.url)
    if not path.is_file():
        raise ModelError(_NOT_LOCAL.format(arch="alexnet", cache=f"torch hub cache ({path})"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a damaged download
        raise ModelError(f"{path}: cannot read the cached alexnet weights ({one_line(e, limit=200)}); "
                         "delete the file") from e
    head = "classifier.6."  # the last Linear: 1000 ImageNet classes
    if num_classes != state[head + "weight"].shape[0]:
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(head) for k in missing):
        raise ModelError(f"{path}: weights do not fit arch 'alexnet'; delete the file from the torch hub cache")
    return model


def _create_timm(arch: str, kw: dict[str, Any], pretrained: bool) -> nn.Module:
    if not pretrained:
        return _timm_create_model(arch, kw, pretrained=False)
    if _cached_timm_weights(arch) is None:
        raise ModelError(_NOT_LOCAL.format(arch=arch, cache=_HF_CACHE))
    try:
        with _hf_offline():
            return _timm_create_model(arch, kw, pretrained=True)
    except (ModelError, TypeError):
        raise
    except Exception as e:  # noqa: BLE001 -- whatever fails reading cached weights becomes one line
        raise ModelError(
            f"pretrained weights for '{arch}' could not be loaded from the local cache ({one_line(e, limit=200)}); "
            "train without --pretrained or replace the cached weights"
        ) from e


def _timm_create_model(arch: str, kw: dict[str, Any], pretrained: bool) -> nn.Module:
    import timm  # lazy: slow import

    try:
        model = timm.create_model(arch, pretrained=pretrained, **kw)
    except TypeError as e:
        _refuse_unknown_regularisation(arch, e)
        if "img_size" not in kw or "'img_size'" not in str(e):
            raise
        model = timm.create_model(arch, pretrained=pretrained, **_without_img_size(arch, kw))
    if kw.get("drop_path_rate") and not _has_drop_path(model):  # a constructor that swallows **kwargs
        raise _no_drop_path(arch)
    return model


def _refuse_unknown_regularisation(arch: str, error: TypeError) -> None:
    """A timm class without drop_path_rate / drop_rate fails with an 'unexpected keyword' TypeError: one line."""
    if "'drop_path_rate'" in str(error):
        raise _no_drop_path(arch) from None
    if "'drop_rate'" in str(error):
        raise ModelError(f"--dropout: '{arch}' has no dropout setting; leave --dropout out") from None


def _has_drop_path(model: nn.Module) -> bool:
    """True when the module holds stochastic-depth layers (timm's DropPath, torchvision's StochasticDepth)."""
    return any(type(m).__name__ in ("DropPath", "StochasticDepth") for m in model.modules())


def _without_img_size(arch: str, kw: dict[str, Any]) -> dict[str, Any]:
    """A fixed-size model that takes no img_size argument: fine only at its own size."""
    cfg = _timm_cfg(arch)
    default = int(cfg.input_size[-1]) if cfg is not None else None
    if kw["img_size"] != default:
        raise ModelError(f"'{arch}' only runs at {default} px (it takes no img_size); use --img-size {default}")
    logger.debug("%s takes no img_size; building it at its own %s px", arch, default)
    return {k: v for k, v in kw.items() if k != "img_size"}


def _torch_hub_file(url: str) -> Path:
    """Where torch.hub (and timm's url source) caches the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _safe_alternatives(filename: str) -> list[str]:
    """timm looks for a .safetensors twin first; mirror its naming."""
    if filename == "pytorch_model.bin":
        return ["model.safetensors"]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors"]
    return [filename[:-4] + ".safetensors"] if filename.endswith(".bin") else []


def _cached_timm_weights(arch: str) -> str | None:
    """The local file timm would load for ``pretrained=True`` (same source order as timm), or None."""
    cfg = _timm_cfg(arch)
    if cfg is None:
        return None
    if cfg.hf_hub_id:  # timm prefers the HF hub over the url whenever a hub id is set
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        filename = cfg.hf_hub_filename or "pytorch_model.bin"
        for name in [*_safe_alternatives(filename), filename]:
            found = try_to_load_from_cache(repo_id, name, revision=revision or None)
            if isinstance(found, str):
                return found
        return None
    if cfg.file:
        return cfg.file if Path(cfg.file).is_file() else None
    if cfg.url:
        path = _torch_hub_file(cfg.url)
        return str(path) if path.is_file() else None
    return None


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration: cached files resolve, nothing goes to the network.

    huggingface_hub reads the variable once at import, so its constant is patched as well.
    """
    import huggingface_hub.constants as hf_constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def check_img_size(arch: str, img_size: int, model: nn.Module | None = None) -> None:
    """Raise ModelError when ``arch`` cannot run on ``img_size`` x ``img_size`` images.

    Known rules (cnn >= 16 px, alexnet >= 63 px, coatnet/maxvit multiples of 32) are checked without running
    anything; given ``model``, one forward pass on a zero image settles it for any architecture.

    Args:
        arch: the architecture name (for the message and the known rules).
        img_size: square input size.
        model: the built module, to probe; left in the train/eval mode it was in.
    """
    reason = _known_size_rule(arch, img_size)
    if reason is None and model is not None:
        reason = _probe_forward(model, img_size)
    if reason is not None:
        raise ModelError(f"img_size {img_size} does not work with arch '{arch}' ({reason}); choose another --img-size")


def _known_size_rule(arch: str, img_size: int) -> str | None:
    if arch == "cnn" and img_size < CNN_MIN_INPUT_SIZE:
        return f"it needs at least {CNN_MIN_INPUT_SIZE} px"
    if arch == "alexnet" and img_size < ALEXNET_MIN_INPUT_SIZE:
        return f"it needs at least {ALEXNET_MIN_INPUT_SIZE} px"
    if arch.startswith(_MULTIPLE_OF_32_PREFIXES) and img_size % 32 != 0:
        return "it needs a multiple of 32 px"
    return None


def _probe_forward(model: nn.Module, img_size: int) -> str | None:
    """Run one zero image through ``model``; the first line of the error when it fails, else None."""
    x = zeros_input(model, img_size, img_size)
    try:
        with eval_mode(model):
            model(x)
    except Exception as e:  # noqa: BLE001 -- shape errors come as RuntimeError, AssertionError, ValueError
        return one_line(e, limit=160)
    return None
