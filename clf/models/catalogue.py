"""What `clf models` lists: the architectures matching a pattern and, on request, their size (parameters, FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass

from clf.config import MAX_INPUT_SIZE
from clf.errors import ClfError
from clf.models.registry import check_img_size, create_model, list_models
from clf.models.summary import count_flops, count_parameters

MAX_CLASSES = 100_000  # a head this wide still fits in memory
MAX_SIZED = 100  # each sized architecture is built: more is minutes of work for a table nobody reads


@dataclass(frozen=True)
class ArchitectureSize:
    name: str
    params: int
    flops: int  # of one image at the asked input size


def check_size_settings(img_size: int, num_classes: int) -> None:
    """The input size and class count the architectures are built with: in range, or one line naming the flag."""
    if img_size < 1:
        raise ClfError(f"--img-size must be >= 1, got {img_size}")
    if img_size > MAX_INPUT_SIZE:  # 100000 asked torch for 120 GB and died with its traceback
        raise ClfError(f"--img-size must be <= {MAX_INPUT_SIZE}, got {img_size}")
    if num_classes < 1:
        raise ClfError(f"--num-classes must be >= 1, got {num_classes}")
    if num_classes > MAX_CLASSES:
        raise ClfError(f"--num-classes must be <= {MAX_CLASSES}, got {num_classes}")


def matching_architectures(pattern: str | None) -> list[str]:
    """The architecture names matching `pattern` (all without one); none matching is a ClfError."""
    names = list_models(pattern)
    if not names:
        raise ClfError(f"no architecture matches {pattern!r}; try `clf models` without a pattern")
    return names


def architecture_sizes(names: list[str], img_size: int, num_classes: int) -> list[ArchitectureSize]:
    """Build each architecture and count its parameters and FLOPs at `img_size` (at most MAX_SIZED of them)."""
    check_size_settings(img_size, num_classes)
    if len(names) > MAX_SIZED:
        raise ClfError(f"--params would build {len(names)} models; narrow the list with a PATTERN such as 'resnet*'")
    sizes = []
    for name in names:
        model = create_model(name, num_classes=num_classes, img_size=img_size)
        check_img_size(name, img_size, model)  # one line, not a shape error from the FLOP counter
        sizes.append(ArchitectureSize(name, count_parameters(model), count_flops(model, img_size)))
    return sizes
