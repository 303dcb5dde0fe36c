"""--sampler balanced: each epoch draws as many images as the training split holds, with replacement, each image with
probability proportional to 1 / n_class (so each class is drawn about equally often).

The draw of an epoch depends on (seed, epoch) alone, never on a generator's state: an epoch after --resume draws
exactly what it would have drawn in an uninterrupted run. Under torchrun the one draw of the epoch (padded to a
multiple of the world size, so that every rank steps as often) is dealt out: rank r takes draws r, r + W, r + 2W...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def balanced_probabilities(labels: Sequence[int]) -> np.ndarray:
    """Each image's probability of a draw: 1 / n_class, normalised (every class present weighs the same)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


class BalancedSampler(Sampler[int]):
    """Indices into the training set: ceil(N / world) draws with replacement per rank and epoch, class-balanced.

    Args:
        labels: the class index of each training image.
        seed: the run's --seed; with the epoch (set_epoch) it decides the draw.
        world_size, rank: torchrun's; each rank takes its share of the epoch's one draw.
    """

    def __init__(self, labels: Sequence[int], seed: int, world_size: int = 1, rank: int = 0) -> None:
        self.probabilities = balanced_probabilities(labels)
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.per_rank = -(-len(self.probabilities) // world_size)  # ceil: the same step count on every rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_draw(self) -> np.ndarray:
        """The whole epoch's draw (every rank's): the same for the same (seed, epoch), whatever ran before."""
        rng = np.random.default_rng([self.seed, self.epoch])
        size = self.per_rank * self.world_size
        return rng.choice(len(self.probabilities), size=size, replace=True, p=self.probabilities)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_draw()[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
