"""An exponential moving average of a model's weights (as timm's ModelEmaV3), validated beside the raw weights.

Parameters are averaged, buffers (BatchNorm running statistics, counters) copied; the decay warms up with the
number of updates, which is saved with the averaged weights so that a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def warmed_decay(decay: float, updates: int) -> float:
    """min(decay, (1 + t) / (10 + t)) with t the updates so far: early averages forget the random start quickly."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class ModelEma:
    """A fp32 copy of `model` on its device, updated after each optimizer step.

    Args:
        model: the raw (unwrapped) model being trained.
        decay: the target decay (e.g. 0.999); the warm-up keeps it lower during the first updates.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).float().eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self._ema_params, self._ema_buffers = _tensors(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = decay_t * ema + (1 - decay_t) * model for parameters (one fused lerp), buffers copied."""
        weight = 1.0 - warmed_decay(self.decay, self.updates)
        params, buffers = _tensors(model)
        params = [p.detach().float() for p in params]
        if self._ema_params:
            torch._foreach_lerp_(self._ema_params, params, weight)
        for ema_buffer, buffer in zip(self._ema_buffers, buffers):
            ema_buffer.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load(self, state: Mapping[str, Any], updates: int) -> None:
        """Averaged weights and update count as a checkpoint saved them (strict: same keys and shapes)."""
        self.module.load_state_dict(state, strict=True)
        self.updates = int(updates)


def _tensors(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(parameters, buffers) in registration order: the same order for a model and its deep copy."""
    return list(model.parameters()), list(model.buffers())
