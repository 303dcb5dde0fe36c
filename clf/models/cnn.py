"""The project's own small CNN: a fast baseline that trains from scratch at 32-64 px."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Four 2x2 max-pools halve the input four times; 16 px is the smallest input that leaves 1x1.
MIN_INPUT_SIZE = 16
# The design a new run records in its model_kwargs (SimpleCNN's defaults). Two convolutions per block at half the
# width beat one at full width where the class is a shape (+6 points on the sample competition), were level on faces
# and behind on the scenes' texture crops (README, "The own cnn"), and train faster on the CPU.
CNN_DESIGN: dict[str, Any] = {"width": 16, "convs_per_block": 2, "hidden": 0}
# The design of checkpoints before version 3, whose model_kwargs did not record it.
CNN_DESIGN_V1: dict[str, Any] = {"width": 32, "convs_per_block": 1, "hidden": 256}


def _conv_block(in_chans: int, out_chans: int, convs: int) -> nn.Sequential:
    """``convs`` x (conv3x3 -> BN -> ReLU), then maxpool 2x2: (N, in, H, W) -> (N, out, H//2, W//2)."""
    layers: list[nn.Module] = []
    for index in range(convs):
        layers += [
            nn.Conv2d(in_chans if index == 0 else out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),  # BN carries the bias
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    """Four conv blocks (widths w, 2w, 4w, 8w), global average pool, then a linear classifier.

    Works at any input of at least 16 px (the global pool removes the dependence on size).

    Args:
        num_classes: number of output logits.
        in_chans: input channels.
        width: channels of the first block (w); later blocks use 2w, 4w, 8w.
        dropout: dropout probability before the last dense layer.
        convs_per_block: conv -> BN -> ReLU layers in each block before its pool.
        hidden: width of a dense ReLU layer between the pool and the classifier; 0 for none.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        width: int = CNN_DESIGN["width"],
        dropout: float = 0.3,
        convs_per_block: int = CNN_DESIGN["convs_per_block"],
        hidden: int = CNN_DESIGN["hidden"],
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_chans < 1 or width < 1:
            raise ValueError(f"num_classes, in_chans and width must be >= 1, got {num_classes}, {in_chans}, {width}")
        if convs_per_block < 1 or hidden < 0:
            raise ValueError(f"convs_per_block must be >= 1 and hidden >= 0, got {convs_per_block}, {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.num_classes = num_classes
        self.features = nn.Sequential(
            *(_conv_block(c_in, c_out, convs_per_block) for c_in, c_out in zip([in_chans, *widths], widths))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _head(widths[-1], hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 8w, H/16, W/16)
        x = self.pool(x)  # (N, 8w, 1, 1)
        return self.head(x)  # (N, num_classes)


def _head(features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU] -> Dropout -> Linear (with hidden > 0: the layer indices of checkpoints before
    version 3)."""
    if not hidden:
        return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, num_classes))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
