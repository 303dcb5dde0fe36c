"""Grad-CAM (Selvaraju et al. 2017): where a CNN looks for the class it predicts, from the run's checkpoint.

The target layer is the model's last convolution, taken only when no attention block follows it: for the own cnn,
torchvision's and timm's CNNs that is the last conv stage; a vision transformer's only convolution is its patch
embedding, and a hybrid's last stage attends, so their maps would not say where the decision was made. Those get
a sentence in the report instead of a heatmap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clf.config import Preprocess
from clf.data.preprocess import normalize
from clf.errors import ClfError, one_line
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint, resolve_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamModel:
    """A rebuilt model and the convolution whose activations and gradients the maps are made of."""

    model: nn.Module
    layer: nn.Module
    layer_name: str


def is_attention(module: nn.Module) -> bool:
    """An attention block (timm's Attention/WindowAttention/..., torch's MultiheadAttention)."""
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def target_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The last Conv2d, when no attention block comes after it in the model's module order; else None."""
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last = (name, module)
        elif last is not None and is_attention(module):
            last = None  # attention after the convolutions: the last stage is not a conv stage
    return last


def load_cam_model(run_dir: Path) -> CamModel | str:
    """The run's best checkpoint as a CamModel, or the sentence saying why there is no Grad-CAM."""
    try:
        ckpt = load_checkpoint(resolve_checkpoint(run_dir))
        model = model_from_checkpoint(ckpt).eval()
    except (ClfError, OSError, RuntimeError, ValueError) as exc:
        return f"no Grad-CAM: the checkpoint cannot be loaded ({one_line(exc)})"
    found = target_layer(model)
    if found is None:
        arch = ckpt.get("arch", "this architecture")
        return (f"no Grad-CAM: {arch} has no convolutional last stage (attention follows its convolutions), so a "
                "class activation map would not show where it decides")
    return CamModel(model, found[1], found[0])


def grad_cams(cam: CamModel, images: Sequence[np.ndarray], classes: Sequence[int], pre: Preprocess) -> list[np.ndarray]:
    """One [0, 1] map (the target layer's resolution) per resized RGB image, for the class given with it."""
    maps = []
    for image, target in zip(images, classes):
        maps.append(_grad_cam(cam, torch.from_numpy(normalize(image, pre))[None], int(target)))
    return maps


def _grad_cam(cam: CamModel, batch: torch.Tensor, target: int) -> np.ndarray:
    stored: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        stored["activation"] = output
        output.register_hook(lambda grad: stored.__setitem__("gradient", grad))

    handle = cam.layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = cam.model(batch.requires_grad_(True))
            cam.model.zero_grad(set_to_none=True)
            logits[0, target].backward()
    finally:
        handle.remove()
    activation, gradient = stored["activation"][0].detach(), stored["gradient"][0]  # [K, h, w]
    weights = gradient.mean(dim=(1, 2))  # one weight per channel: its gradient averaged over the map
    heat = torch.relu((weights[:, None, None] * activation).sum(dim=0))
    peak = float(heat.max())
    return (heat / peak).numpy() if peak > 0 else heat.numpy()
