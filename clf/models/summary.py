"""Model size figures for the runs table and `clf models`: parameters and FLOPs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable and frozen (shared ones counted once); buffers excluded."""
    return sum(p.numel() for p in model.parameters())


def zeros_input(model: nn.Module, height: int, width: int, in_chans: int = 3, batch: int = 1) -> torch.Tensor:
    """A zero batch on the model's device and in its floating dtype (its first parameter decides; CPU float32
    for a model without parameters): the probe input of the size check and the FLOP counter."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(batch, in_chans, height, width, device=device, dtype=dtype)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode under no_grad for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, img_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """FLOPs of one forward pass on a single image, as counted by torch's FlopCounterMode.

    A multiply-add counts as 2 FLOPs; only matmul/conv-like ops are counted (elementwise ops are not).
    The model runs in eval mode under no_grad and is returned to the mode it was in.

    Args:
        model: the module; its first parameter decides the input's device and dtype.
        img_size: square size S for a (1, in_chans, S, S) input, or (H, W).
        in_chans: input channels.

    Returns:
        Total FLOPs for a batch of one.
    """
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = zeros_input(model, height, width, in_chans)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), counter:
        model(x)
    return int(counter.get_total_flops())
