"""The one way tests build a clf checkpoint without training: the library's own `build_checkpoint` around a fresh model.

Tests that need a checkpoint with a twist (a missing key, a foreign value) build one here and change that key.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clf.config import Preprocess, TrainConfig
from clf.models.checkpoint import build_checkpoint, save_checkpoint, to_plain
from clf.models.registry import create_model, model_kwargs_for

CLASSES = ("circle", "square", "star", "triangle")


def checkpoint_state(
    arch: str = "cnn",
    classes: Sequence[str] = CLASSES,
    img_size: int = 32,
    epoch: int = 1,
    train_step: bool = False,
    config: dict[str, Any] | None = None,
    model_extra: dict[str, Any] | None = None,
    **keys: Any,
) -> tuple[dict[str, Any], nn.Module]:
    """A checkpoint dict of the documented schema and the model it holds.

    Args:
        train_step: take one AdamW step first, so that optimizer and scheduler states are real ones.
        config: TrainConfig fields (data, val_split, name, ...) besides arch and img_size.
        model_extra: extra constructor arguments of the model (stored in model_kwargs).
        **keys: checkpoint keys to set as given (history, best_val_acc, run_name, ...).
    """
    extra = dict(model_extra or {})
    model = create_model(arch, len(classes), img_size=img_size, **extra)
    optimizer = scheduler = None
    if train_step:
        adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(adamw, T_max=5)
        model(torch.randn(2, 3, img_size, img_size)).sum().backward()
        adamw.step()
        cosine.step()
        optimizer, scheduler = adamw.state_dict(), cosine.state_dict()
    cfg = TrainConfig(**{"arch": arch, "img_size": img_size, **(config or {})})
    state = build_checkpoint(
        arch=arch, model_kwargs=model_kwargs_for(arch, len(classes), img_size, **extra), classes=list(classes),
        preprocess=Preprocess(size=(img_size, img_size)), config=cfg.to_dict(), model=model.state_dict(),
        epoch=epoch, optimizer=optimizer, scheduler=scheduler,
        rng=to_plain({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}),
        run_name=cfg.name,
    )
    state.update(keys)
    return state, model


def write_checkpoint(path: Path, **options: Any) -> Path:
    """`checkpoint_state(**options)` saved at `path` (its folder created)."""
    state, _ = checkpoint_state(**options)
    return save_checkpoint(state, path)
