"""The augmentation op's base class, the registry of op names, and the parameter checks ops run when built.

clf.data.augment holds the ops themselves and the Pipeline; each op class is made known here with ``@register``
so that ``Pipeline.from_dict`` finds it by name. The checks raise ValueError with one line naming the op and the
parameter (the Pipeline turns it into a ClfError). numpy only: no torch, no PIL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

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
        params = asdict(self)  # type: ignore[call-overload]
        return {"op": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}


@dataclass(frozen=True)
class RandomlyApplied(Op):
    """An op whose ``transform`` applies with probability ``p`` (one uniform draw); otherwise the image is kept."""

    p: float = 0.5

    def __post_init__(self) -> None:
        check_probability(self.name, self.p)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.transform(image) if rng.random() < self.p else image

    def transform(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def require(ok: bool, op: str, message: str) -> None:
    """ValueError("op: message") unless ``ok``."""
    if not ok:
        raise ValueError(f"{op}: {message}")


def check_probability(op: str, p: float) -> None:
    """``p`` is a number in [0, 1]."""
    require(isinstance(p, (int, float)) and 0.0 <= p <= 1.0, op, f"p is a probability in [0, 1], got {p}")


def check_range(op: str, field: str, value: Any, low: float, high: float,
                open_low: bool = False) -> tuple[float, float]:
    """A (lo, hi) pair of finite numbers with low <= lo <= hi <= high (low < lo when open_low), as floats."""
    try:
        if isinstance(value, (str, bytes)):  # "12" would unpack to (1, 2)
            raise TypeError
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {field} is a (low, high) pair of numbers, got {value!r}") from None
    bound = "(" if open_low else "["
    inside = (low < lo if open_low else low <= lo) and lo <= hi <= high
    require(math.isfinite(lo) and math.isfinite(hi) and inside, op,
            f"{field} is a (low, high) pair with low <= high in {bound}{low:g}, {high:g}], got {value!r}")
    return lo, hi


def check_number(op: str, field: str, value: Any, low: float, high: float) -> None:
    """``value`` is a finite int or float (not a bool) in [low, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(ok and low <= value <= high, op, f"{field} is a number in [{low:g}, {high:g}], got {value}")
