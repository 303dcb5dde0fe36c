"""Model size figures for the runs table and `clf models`: parameters and FLOPs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable and frozen (shared ones counted once); buffers excluded."""
    return sum(p.numel() for p in model.parameters())


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
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, in_chans, height, width, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
