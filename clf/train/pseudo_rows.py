"""--pseudo-labels on the training side: the confident rows of PROBS.csv joined to a run's training split.

Every run that trains goes through fit(), so a single run, each fold of a group and a --refit all add the same rows
(their validation images come from DATA, the pseudo rows from a folder disjoint from it: no fold's validation image
is ever a pseudo row). The file's sha256 is recorded in the config on first read; a resumed run, a fold group and a
refit refuse a file whose content changed since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from clf import system
from clf.config import TrainConfig
from clf.data.datasets import LabelledSet, verify_and_sign
from clf.data.pseudo_labels import (added_per_class, check_folder_apart, check_not_data_files, file_sha256,
                                    read_pseudo_labels)
from clf.errors import DataError
from clf.train.build import Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudoRows:
    """The pseudo-labelled images a run trains on.

    Attributes:
        images: their paths and arg-max classes (a LabelledSet of the run's classes).
        probs: float32 [N, C], each image's probability row (the soft targets of --pseudo-soft).
        record: what config.json records under "pseudo_labels".
    """

    images: LabelledSet
    probs: np.ndarray
    record: dict[str, Any]


def checked_pseudo_file(cfg: TrainConfig, resumed: bool = False) -> TrainConfig:
    """`cfg` recording the sha256 of --pseudo-labels (unchanged without it).

    Raises:
        DataError: the file's sha256 differs from the one `cfg` recorded (a resumed run, a fold group or a refit
            whose PROBS.csv changed), or a resumed run that trained without pseudo-labels is given them.
    """
    if cfg.pseudo_labels is None:
        return cfg
    sha256 = file_sha256(cfg.pseudo_labels)
    recorded = cfg.pseudo_sha256
    if resumed and recorded is None:
        raise DataError(f"{cfg.pseudo_labels}: the run being resumed trained without pseudo-labels; start a new run "
                        "to add them")
    if recorded is not None and recorded != sha256:
        raise DataError(f"{cfg.pseudo_labels}: changed since the run started (sha256 {sha256[:12]}..., the run "
                        f"recorded {recorded[:12]}...); pass the file it trained with, or start a new run")
    return replace(cfg, pseudo_sha256=sha256)


def pseudo_rows(cfg: TrainConfig, labelled: LabelledSet, resumed: bool = False
                ) -> tuple[TrainConfig, PseudoRows | None]:
    """The rows of --pseudo-labels whose top probability reaches --pseudo-threshold, their images checked to
    decode (an unreadable one is skipped, or fails the run with --strict); (cfg, None) without the option.

    Returns:
        (`cfg` recording the file's sha256, the rows).

    Raises:
        DataError: the bad inputs of clf.data.pseudo_labels, a changed file (checked_pseudo_file).
    """
    if cfg.pseudo_labels is None:
        return cfg, None
    assert cfg.pseudo_images is not None  # TrainConfig checked it
    cfg = checked_pseudo_file(cfg, resumed)
    check_folder_apart(cfg.pseudo_images, cfg.data)
    pseudo = read_pseudo_labels(cfg.pseudo_labels, cfg.pseudo_images, labelled.classes)
    if pseudo.sha256 != cfg.pseudo_sha256:
        raise DataError(f"{cfg.pseudo_labels}: changed while it was read; run again")
    check_not_data_files(pseudo, labelled.paths)
    confident = pseudo.confident(cfg.pseudo_threshold)
    paths = [pseudo.paths[i] for i in confident]
    ok, signatures = verify_and_sign(paths, strict=cfg.strict, workers=max(2, system.usable_cpus()))
    if len(ok) < len(paths):
        logger.warning("%d of %d pseudo-labelled images could not be read and are left out", len(paths) - len(ok),
                       len(paths))
    kept = confident[np.asarray(ok, dtype=np.int64)]
    probs = pseudo.probs[kept].astype(np.float32)
    images = LabelledSet([pseudo.paths[i] for i in kept], [int(c) for c in probs.argmax(axis=1)],
                         list(labelled.classes), signatures=signatures)
    added = added_per_class(pseudo, kept)
    record = {"file": cfg.pseudo_labels, "images": cfg.pseudo_images, "sha256": cfg.pseudo_sha256,
              "threshold": cfg.pseudo_threshold, "soft": cfg.pseudo_soft, "rows": len(pseudo.paths), "added": added}
    logger.info("pseudo-labels: %d of %d images of %s added to training (top probability >= %g, %s targets): %s",
                len(kept), len(pseudo.paths), cfg.pseudo_labels, cfg.pseudo_threshold,
                "soft" if cfg.pseudo_soft else "hard", ", ".join(f"{name} {n}" for name, n in added.items()))
    return cfg, PseudoRows(images, probs, record)


def with_pseudo_rows(split: Split, rows: PseudoRows | None, cfg: TrainConfig) -> Split:
    """`split` whose training part ends with the pseudo rows; with --pseudo-soft, every training image carries a
    soft target [C]: a labelled image its smoothed one-hot (what cross-entropy with --label-smoothing trains
    towards), a pseudo image its probability row as PROBS.csv gave it."""
    if rows is None:
        return split
    train = joined_sets(split.train, rows.images)
    targets = None
    if cfg.pseudo_soft:
        labelled = smoothed_one_hot(split.train.labels, len(split.train.classes), cfg.label_smoothing)
        targets = np.concatenate([labelled, rows.probs]).astype(np.float32)
    return replace(split, train=train, train_targets=targets, pseudo_images=len(rows.images))


def smoothed_one_hot(labels: list[int], classes: int, smoothing: float) -> np.ndarray:
    """float32 [N, C]: 1 - s + s/C on each label, s/C elsewhere (torch's label_smoothing rule, as
    clf.train.mixing.smoothed_one_hot)."""
    targets = np.full((len(labels), classes), smoothing / classes, dtype=np.float32)
    targets[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0 - smoothing + smoothing / classes
    return targets


def joined_sets(train: LabelledSet, pseudo: LabelledSet) -> LabelledSet:
    """The training images followed by the pseudo ones (or a distilled run's unlabelled ones), each its own group;
    near-duplicate signatures kept when both have them."""
    groups = None if train.groups is None else train.groups + [f"pseudo:{path}" for path in pseudo.paths]
    signatures = None
    if train.signatures is not None and pseudo.signatures is not None:
        signatures = np.concatenate([train.signatures, pseudo.signatures])
    return LabelledSet(train.paths + pseudo.paths, train.labels + pseudo.labels, list(train.classes), groups,
                       signatures)
