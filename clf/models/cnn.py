"""The project's own small CNN: a fast baseline that trains from scratch at 32-64 px."""

from __future__ import annotations

import torch
from torch import nn

# Four 2x2 max-pools halve the input four times; 16 px is the smallest input that leaves 1x1.
MIN_INPUT_SIZE = 16


def _conv_block(in_chans: int, out_chans: int) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU -> maxpool 2x2: (N, in, H, W) -> (N, out, H//2, W//2)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),  # BN carries the bias
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """Four conv blocks (widths w, 2w, 4w, 8w), global average pool, two dense layers.

    Works at any input of at least 16 px (the global pool removes the dependence on size).

    Args:
        num_classes: number of output logits.
        in_chans: input channels.
        width: channels of the first block (w); later blocks use 2w, 4w, 8w.
        dropout: dropout probability before the last dense layer.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        if num_classes < 1 or in_chans < 1 or width < 1:
            raise ValueError(f"num_classes, in_chans and width must be >= 1, got {num_classes}, {in_chans}, {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.num_classes = num_classes
        self.features = nn.Sequential(*(_conv_block(c_in, c_out) for c_in, c_out in zip([in_chans, *widths], widths)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1], 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 8w, H/16, W/16)
        x = self.pool(x)  # (N, 8w, 1, 1)
        return self.head(x)  # (N, num_classes)
