"""Training augmentation: a pipeline of ops on the resized uint8 HWC RGB image, before the one normalisation.

Each op draws from its own generator, derived from the per-sample seed and the op's name (and, for a repeated
name, its occurrence) through ``np.random.SeedSequence``: adding, removing or reordering an op never shifts
another op's draws, so a resumed training and an old config reproduce exactly. A pipeline describes itself as
plain data, ``[{"op": "hflip", "p": 0.5}, {"op": "rotate", "max_degrees": 15.0}]``, for config.json and
checkpoints. Adding an op is one class here plus its ``@register``. numpy + OpenCV only: no torch, no PIL.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from clf.errors import ClfError

OPS: dict[str, type[Op]] = {}


def register(op: type[Op]) -> type[Op]:
    """Class decorator: make ``op`` known to ``Pipeline.from_dict`` by its ``name``."""
    if op.name in OPS:
        raise ValueError(f"augmentation op {op.name!r} is already registered")
    OPS[op.name] = op
    return op


class Op:
    """One augmentation: ``apply(image, rng)`` returns a new uint8 image of the same shape (or ``image`` itself).

    Subclasses are frozen dataclasses whose fields are the op's parameters (plain numbers), with a unique ``name``.
    """

    name: ClassVar[str] = ""

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, **asdict(self)}  # type: ignore[call-overload]


@register
@dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right with probability ``p`` (one uniform draw)."""

    name: ClassVar[str] = "hflip"
    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"hflip: p is a probability in [0, 1], got {self.p}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return flip_horizontal(image) if rng.random() < self.p else image


@register
@dataclass(frozen=True)
class Rotate(Op):
    """Rotate about the centre by an angle uniform in [-max_degrees, max_degrees] (one draw)."""

    name: ClassVar[str] = "rotate"
    max_degrees: float = 15.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_degrees) and self.max_degrees >= 0):
            raise ValueError(f"rotate: max_degrees is an angle >= 0, got {self.max_degrees}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rotate(image, float(rng.uniform(-self.max_degrees, self.max_degrees)))


class Pipeline:
    """Ops applied in order, each with its own generator derived from the per-sample seed.

    Args:
        ops: the ops, in the order they apply.
    """

    def __init__(self, ops: Sequence[Op] = ()) -> None:
        self.ops = tuple(ops)
        self._stream_keys = _stream_keys([op.name for op in self.ops])

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        """The augmented image for the per-sample ``seed`` (any int >= 0); deterministic."""
        _check_image(image)
        shape = image.shape
        for op, key in zip(self.ops, self._stream_keys):
            image = op.apply(image, op_rng(seed, key))
        return image if image.shape == shape else image.reshape(shape)  # OpenCV drops a size-1 channel axis

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.ops == other.ops

    def __repr__(self) -> str:
        return f"Pipeline({list(self.ops)!r})"

    def to_dict(self) -> list[dict[str, Any]]:
        """The pipeline as plain data: ``[{"op": name, **params}, ...]`` (JSON- and weights_only-safe)."""
        return [op.to_dict() for op in self.ops]

    @classmethod
    def from_dict(cls, spec: Sequence[Mapping[str, Any]]) -> Pipeline:
        """The pipeline ``to_dict`` described.

        Raises:
            ClfError: an unknown op name, a missing "op", an unknown or bad parameter (one line naming the op).
        """
        ops = []
        for index, entry in enumerate(spec):
            params = dict(entry)
            name = params.pop("op", None)
            if name not in OPS:
                known = ", ".join(sorted(OPS))
                raise ClfError(f"augmentation op #{index + 1}: unknown op {name!r}; known ops: {known}")
            try:
                ops.append(OPS[name](**params))
            except (TypeError, ValueError) as exc:
                raise ClfError(f"augmentation op #{index + 1} ({name}): {exc}") from None
        return cls(ops)

    @classmethod
    def from_flags(cls, hflip: float = 0.0, rotate: float = 0.0) -> Pipeline:
        """The pipeline of the --hflip/--rotate flags: a flip, then a rotation; ops at 0 are left out."""
        ops: list[Op] = []
        if hflip > 0:
            ops.append(HorizontalFlip(p=float(hflip)))
        if rotate > 0:
            ops.append(Rotate(max_degrees=float(rotate)))
        return cls(ops)


def _stream_keys(names: Sequence[str]) -> list[tuple[int, int]]:
    """(crc32 of the name, occurrence of that name so far): independent of the other ops' names and positions."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        keys.append((zlib.crc32(name.encode("utf-8")), seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def op_rng(seed: int, key: tuple[int, int]) -> np.random.Generator:
    """The generator of the op stream ``key`` for the per-sample ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=key)))


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"augmentation expects a uint8 (H, W, C) image, got {image.dtype} {image.shape}")


def flip_horizontal(image: np.ndarray) -> np.ndarray:
    """Mirror left-right (a new array)."""
    return cv2.flip(image, 1)


def rotate(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate about the centre, keeping the shape; ``image`` itself for 0.

    Counter-clockwise for positive angles (OpenCV's convention); the corners it uncovers are filled by mirroring
    (BORDER_REFLECT_101) rather than with black, so the network does not learn "black corners mean augmented".
    """
    if not angle_deg:
        return image
    height, width = image.shape[:2]
    # (w-1)/2, (h-1)/2 is the exact pixel-grid centre: 180 degrees maps pixels onto pixels.
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle_deg), 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
