"""The torch Dataset over image files: the ONE preprocessing path plus optional augmentation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from clf.config import Preprocess
from clf.data.augment import Pipeline
from clf.data.preprocess import load_resized, normalize


class ImageDataset(Dataset):
    """Images -> (float32 tensor (3, H, W), int label), or with ``targets`` (a multi-label set) -> (image, float32
    multi-hot tensor [C]); the default collate stacks those into [B, C].

    Pipeline: ``load_resized`` -> [train: the augmentation pipeline] -> ``normalize``. With
    ``train=False`` an item equals ``preprocess(path, pre)`` exactly, so validation, the export
    parity check and inference see the same numbers.

    Augmentation draws one per-sample seed (an int64) from torch's global RNG, only when the pipeline
    has ops; each op derives its own generator from it (``clf.data.augment``). ``torch.manual_seed``
    and a saved RNG state reproduce it, and each DataLoader worker gets its own seed from torch.

    Args:
        paths: image files.
        labels: class index per file.
        targets: a multi-label set's multi-hot targets [N, C] (LabelledSet.targets): items then carry them as
            float32 [C] instead of the label.
        pre: the preprocessing (size, resize mode, normalisation).
        train: apply augmentation.
        hflip: probability of a left-right flip.
        rotate: maximum rotation in degrees; the angle is uniform in [-rotate, rotate].
        augment: the augmentation pipeline; default ``Pipeline.from_flags(hflip, rotate)``.
        targets: multi-hot [N, C] (clf.data.datasets.LabelledSet.targets): what each item yields instead of its
            label (``labels`` are then strata only).
        cache: keep each resized uint8 image in RAM after its first load. DataLoader workers
            are separate processes whose caches do not flow back: call ``fill_cache`` before
            building the DataLoader (forked workers then share the filled cache), or use
            ``persistent_workers=True``.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int],
        pre: Preprocess,
        train: bool = False,
        hflip: float = 0.0,
        rotate: float = 0.0,
        cache: bool = False,
        augment: Pipeline | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if targets is not None and (np.ndim(targets) != 2 or len(targets) != len(paths)):
            raise ValueError(f"targets of shape {np.shape(targets)} for {len(paths)} paths; expected [N, C]")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
        if rotate < 0:
            raise ValueError(f"rotate is a maximum angle >= 0, got {rotate}")
        self.paths = [str(p) for p in paths]
        self.labels = [int(label) for label in labels]
        self.pre = pre
        self.train = train
        self.hflip = float(hflip)
        self.rotate = float(rotate)
        self.augment = augment if augment is not None else Pipeline.from_flags(self.hflip, self.rotate)
        self._cache: list[np.ndarray | None] | None = [None] * len(self.paths) if cache else None
        # float32 once: the loss takes them as they are, and each item is a row view (no copy per item)
        self.targets = None if targets is None else torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        if self.targets is not None and len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image = self._resized(index)
        if self.train and self.augment:
            image = self.augment(image, draw_seed())
        target = self.labels[index] if self.targets is None else self.targets[index]
        return torch.from_numpy(normalize(image, self.pre)), target

    def _resized(self, index: int) -> np.ndarray:
        """The resized uint8 (H, W, 3) image, from the cache when enabled."""
        if self._cache is None:
            return load_resized(self.paths[index], self.pre)
        image = self._cache[index]
        if image is None:
            # Contiguous copy: a centre crop is a view that would pin the full decoded image.
            image = np.ascontiguousarray(load_resized(self.paths[index], self.pre))
            self._cache[index] = image
        return image

    def fill_cache(self, workers: int = 4) -> None:
        """Load every not-yet-cached image now, in a thread pool (OpenCV releases the GIL)."""
        if self._cache is None:
            raise RuntimeError("fill_cache() needs ImageDataset(..., cache=True)")
        todo = [i for i, image in enumerate(self._cache) if image is None]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(self._resized, todo):
                pass

    @property
    def cached(self) -> int:
        """How many images are in the cache (0 without ``cache=True``)."""
        return 0 if self._cache is None else sum(image is not None for image in self._cache)


def draw_seed() -> int:
    """A per-sample augmentation seed from torch's global RNG (saved in checkpoints: resume stays bit-exact)."""
    return int(torch.randint(0, 2**62, (1,), dtype=torch.int64))
