"""What a run is built from: the checked training images, their split, the data loaders and the model."""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from clf.config import Preprocess, TrainConfig
from clf.data.datasets import LabelledSet, load_labelled, verify_and_sign
from clf.data.duplicates import has_near_duplicate
from clf.data.augment import Pipeline
from clf.data.augment_presets import build_pipeline, resolve_knobs
from clf.data.split import labelled_folds, labelled_split
from clf.data.torch_dataset import ImageDataset
from clf import system
from clf.errors import DataError, ModelError
from clf.models.pretrained import PretrainedWeights, load_pretrained, read_pretrained
from clf.models.registry import check_img_size, create_model, model_kwargs_for
from clf.train import runtime as rt
from clf.train.kd_data import TeacherTargets, ViewDataset
from clf.train.sampler import BalancedSampler

EpochSampler = DistributedSampler | BalancedSampler  # a training sampler the trainer calls set_epoch on

logger = logging.getLogger(__name__)

# `--cache-images` unset: keep the decoded, resized images in RAM when they take at most this much (all processes
# on the machine together) and a quarter of the free memory. Decoding every image again each epoch cost 15 % of
# the cnn's epoch at 64 px (benchmarks/train_throughput.py: a/b 0.82 without the cache, 0.97 with it).
AUTO_CACHE_MAX_BYTES = 2 * 1024**3


def preprocess_for(cfg: TrainConfig) -> Preprocess:
    return Preprocess(size=(cfg.img_size, cfg.img_size), resize=cfg.resize, interpolation=cfg.interpolation)


def load_training_set(cfg: TrainConfig) -> LabelledSet:
    """Scan the labelled data and drop files that do not decode (each reported; fatal with --strict).

    Raises:
        DataError: a class left without any readable image (as for an empty class folder).
    """
    labelled = load_labelled(cfg.data, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col,
                             group_col=cfg.group_col, task=cfg.task, classes=cfg.classes)
    # The near-duplicate signatures come from the decode this check does anyway (--dedup, the leakage warning).
    ok, sigs = verify_and_sign(labelled.paths, strict=cfg.strict, workers=max(2, system.usable_cpus()))
    if len(ok) < len(labelled.paths):
        logger.warning("%d of %d images could not be read and are left out", len(labelled.paths) - len(ok),
                       len(labelled.paths))
    readable = replace(labelled.subset(ok), signatures=sigs)
    _check_every_class_readable(labelled, readable, cfg)
    return readable


def _check_every_class_readable(labelled: LabelledSet, readable: LabelledSet, cfg: TrainConfig) -> None:
    counts, listed = readable.class_counts(), labelled.class_counts()
    for label, name in enumerate(labelled.classes):
        if counts[name]:
            continue
        unreadable = listed[name]
        if cfg.labels_csv:
            raise DataError(f"{cfg.labels_csv}: class '{name}' has no images that can be read "
                            f"(its {unreadable} image(s) are reported above); fix them or remove the class")
        folder = Path(labelled.paths[list(labelled.labels).index(label)]).parent
        raise DataError(f"{folder}: class folder has no images that can be read "
                        f"(its {unreadable} file(s) are reported above); fix them or remove the folder")


@dataclass(frozen=True)
class Split:
    """The training and validation parts of the readable images (the same split on every rank).

    Attributes:
        train_targets: float32 soft targets [N, C] of the training images (--pseudo-soft: clf.train.pseudo_rows),
            or None: the images train on their labels (or a multi-label set's multi-hot targets).
        pseudo_images: how many of the training images, at its end, are pseudo-labelled or unlabelled (not
            images of DATA).
        teacher: a distilled run's cached teacher predictions of the training images (clf.train.distillation), in
            the order of `train`; None: an ordinary run.
    """

    train: LabelledSet
    val: LabelledSet
    train_targets: np.ndarray | None = None
    pseudo_images: int = 0
    teacher: TeacherTargets | None = None

    def labelled_train_paths(self) -> list[str]:
        """The training images of DATA (split.json lists these; the pseudo rows are config.json's)."""
        return self.train.paths[:len(self.train.paths) - self.pseudo_images]


def split_training_set(labelled: LabelledSet, cfg: TrainConfig) -> Split:
    """--val-split's stratified split; for a fold run (`cfg.fold` set), its fold validates and the others train.
    Groups (--group-col, --dedup) stay whole on one side."""
    if cfg.fold is not None:
        assert cfg.folds is not None  # TrainConfig checked it
        in_val = fold_assignment(labelled, cfg) == cfg.fold
        return Split(labelled.subset(np.flatnonzero(~in_val)), labelled.subset(np.flatnonzero(in_val)))
    train_idx, val_idx = labelled_split(labelled, cfg.val_split, cfg.seed, dedup=cfg.dedup)
    grouped = labelled.groups is not None or cfg.dedup
    if grouped and cfg.val_split > 0 and len(labelled.paths) and not len(val_idx):
        logger.warning("--val-split %g left no validation images: each class's images form one group (--group-col, "
                       "--dedup); training goes on without validation", cfg.val_split)
    return Split(labelled.subset(train_idx), labelled.subset(val_idx))


def fold_assignment(labelled: LabelledSet, cfg: TrainConfig) -> np.ndarray:
    """The validation fold of each readable image: the same on every rank, in every fold run and in the OOF pass."""
    assert cfg.folds is not None
    return labelled_folds(labelled, cfg.folds, cfg.fold_seed, dedup=cfg.dedup)


LEAK_WARNING = ("val accuracy will flatter: {found} of {total} validation images have a near-duplicate in train; "
                "use --group-col or --dedup")


def warn_near_duplicates(split: Split) -> int:
    """Log LEAK_WARNING when validation images have a near-duplicate in training; returns how many do.

    Cheap enough for every run: the signatures come from the decode training does anyway, and the search is numpy
    (benchmarks/near_duplicates.py: 0.1 s for 2,000 validation against 8,000 training images).
    """
    val, train = split.val.signatures, split.train.signatures
    if val is None or train is None or not len(val):
        return 0
    found = int(has_near_duplicate(val, train).sum())
    if found:
        logger.warning(LEAK_WARNING.format(found=found, total=len(val)))
    return found


def resolve_workers(requested: int, runtime: rt.Runtime) -> int:
    """-1 = auto: none on the CPU, where worker processes only take cores from the model's own threads
    (measured: 0.68 vs 0.96 of the bare step's speed for cnn at 64 px on 2 cores); on a GPU, enough to feed it."""
    if requested >= 0:
        return _at_most_the_cores(requested)
    if not runtime.cuda:
        return 0
    return max(1, min(8, system.usable_cpus() // max(1, runtime.world_size) - 1))


def _at_most_the_cores(requested: int) -> int:
    """More worker processes than cores only add processes (--workers 1000 forked 1000 and stalled the machine)."""
    cores = system.usable_cpus()
    if requested > cores:
        logger.warning("--workers %d: more than the %d CPU cores; using %d", requested, cores, cores)
        return cores
    return requested


def augment_pipeline(cfg: TrainConfig, resume_ckpt: dict | None = None) -> Pipeline:
    """The run's augmentation: the one a resumed checkpoint recorded, else --augment's preset with the knobs given."""
    if resume_ckpt is not None and resume_ckpt.get("augment") is not None:
        return Pipeline.from_dict(resume_ckpt["augment"])
    return build_pipeline(resolve_knobs(cfg.augment, cfg.augment_overrides()))


def build_loaders(
    split: Split, cfg: TrainConfig, pre: Preprocess, runtime: rt.Runtime, augment: Pipeline
) -> tuple[DataLoader, DataLoader | None, EpochSampler | None]:
    """Train loader (augmented; shuffled, or drawn by train_sampler) and rank 0's val loader; and the train
    loader's sampler, whose set_epoch the trainer calls (None: the loader shuffles)."""
    train_part, val_part = split.train, split.val
    val_here = bool(len(val_part.paths)) and runtime.is_main
    cache = resolve_cache(cfg.cache_images, len(train_part.paths) + (len(val_part.paths) if val_here else 0), pre,
                          runtime)
    targets = split.train_targets if split.train_targets is not None else train_part.targets
    train_ds = _training_dataset(split, cfg, pre, augment, cache, targets)
    workers = resolve_workers(cfg.workers, runtime)
    if cache:
        train_ds.fill_cache(workers=max(2, workers))  # before the workers fork: they share it copy-on-write
    sampler = train_sampler(train_part, cfg, runtime)
    per_rank = len(train_ds) // runtime.world_size
    loader_args: dict[str, Any] = dict(  # noqa: C408 -- keyword style reads as the DataLoader call
        num_workers=workers,
        pin_memory=runtime.cuda,
        # Not persistent: workers restart each epoch seeded from the main torch RNG, which last.pt saves, so
        # augmentation after --resume is the same as in an uninterrupted run (a fork per epoch is cheap).
        persistent_workers=False,
    )
    if cache and workers and "fork" in multiprocessing.get_all_start_methods():
        # Forked workers share the filled cache; forkserver (Python 3.14's default on Linux) or spawn would pickle it
        # into every worker, every epoch.
        loader_args["multiprocessing_context"] = "fork"
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=per_rank > cfg.batch_size,  # a trailing batch of 1 would break BatchNorm
        **loader_args,
    )
    val_loader = None
    if val_here:
        val_ds = ImageDataset(val_part.paths, val_part.labels, pre, train=False, cache=cache,
                              targets=val_part.targets)
        if cache:
            val_ds.fill_cache(workers=max(2, workers))
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size * 2, shuffle=False, **loader_args)
    pseudo = f" ({split.pseudo_images} pseudo-labelled)" if split.pseudo_images else ""
    logger.info("data: %d train%s / %d val images, %d classes", len(train_part.paths), pseudo, len(val_part.paths),
                len(train_part.classes))
    return train_loader, val_loader, sampler


def _training_dataset(split: Split, cfg: TrainConfig, pre: Preprocess, augment: Pipeline, cache: bool,
                      targets: np.ndarray | None) -> ImageDataset:
    """The augmented training images; a distilled run's yield the view its teacher predicted, with its targets."""
    if split.teacher is not None:
        return ViewDataset(split.teacher, pre, augment, cfg.seed, cache=cache)
    return ImageDataset(split.train.paths, split.train.labels, pre, train=True, augment=augment, cache=cache,
                        targets=targets)


def train_sampler(train_part: LabelledSet, cfg: TrainConfig, runtime: rt.Runtime) -> EpochSampler | None:
    """--sampler balanced's class-balanced draw (dealt out over the ranks under torchrun); else DistributedSampler's
    shuffle under torchrun, and None on one process (the loader shuffles).

    A multi-label set is balanced over its strata: each image's rarest class, images with no class one more stratum
    (so a rare tag is drawn as often as a common one, and the images without a tag as often as one tag's)."""
    if cfg.sampler == "balanced":
        strata = np.asarray(train_part.labels, dtype=np.int64) + (1 if train_part.multilabel else 0)  # -1 -> 0
        return BalancedSampler(strata.tolist(), cfg.seed, runtime.world_size, runtime.rank)
    if runtime.distributed:
        return DistributedSampler(train_part, runtime.world_size, runtime.rank, shuffle=True, seed=cfg.seed)
    return None


def resolve_cache(requested: bool | None, images: int, pre: Preprocess, runtime: rt.Runtime) -> bool:
    """--cache-images as given; unset, whether the resized images fit AUTO_CACHE_MAX_BYTES and a quarter of the
    free memory (each of the world_size processes keeps its own copy)."""
    if requested is not None:
        return requested
    needed = images * pre.size[0] * pre.size[1] * 3 * runtime.world_size  # uint8 RGB at the network's input size
    budget = min(AUTO_CACHE_MAX_BYTES, _free_memory_bytes() // 4)
    cache = needed <= budget
    if runtime.is_main:
        logger.info("images %s RAM (%d MB of %d MB allowed; --%scache-images to change)",
                    "cached in" if cache else "decoded each epoch, not cached in", needed >> 20, budget >> 20,
                    "no-" if cache else "")
    return cache


def _free_memory_bytes() -> int:
    """Memory available to new allocations (clf.system: a container's limit counts); AUTO_CACHE_MAX_BYTES * 4 where
    it cannot be read (not Linux)."""
    free = system.available_memory()
    return AUTO_CACHE_MAX_BYTES * 4 if free is None else free


def pretrained_weights(cfg: TrainConfig, resume_ckpt: dict | None = None
                       ) -> tuple[TrainConfig, PretrainedWeights | None]:
    """--pretrained-path read, and the config recording the file read and its sha256; (cfg, None) without it.

    A resumed run never reads the file again: its own last.pt holds the weights it continues from.

    Raises:
        ModelError: the file cannot be read, or its sha256 differs from the one the config already records
            (a replayed config pointing at a changed file).
    """
    if cfg.pretrained_path is None or resume_ckpt is not None:
        return cfg, None
    weights = read_pretrained(cfg.pretrained_path)
    recorded = cfg.pretrained_sha256
    if recorded is not None and recorded != weights.sha256:
        raise ModelError(f"{weights.path}: sha256 {weights.sha256[:12]}... differs from the {recorded[:12]}... this "
                         "configuration recorded; pass the file it was made with, or leave pretrained_sha256 out")
    logger.debug("pretrained weights: %s (sha256 %s)", weights.path, weights.sha256)
    return replace(cfg, pretrained_path=str(weights.path), pretrained_sha256=weights.sha256), weights


def build_model(cfg: TrainConfig, num_classes: int, runtime: rt.Runtime, resume_ckpt: dict | None = None,
                weights: PretrainedWeights | None = None,
                classes: list[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model on the run's device (channels-last on CUDA), checked to run at --img-size; and its model_kwargs.

    A resumed run rebuilds the module its checkpoint recorded, whatever today's defaults are. A new run with
    `weights` (from `pretrained_weights`) builds the design a clf checkpoint recorded and starts from its weights.
    """
    if resume_ckpt is not None:
        model_kwargs = dict(resume_ckpt["model_kwargs"])
    else:
        design = weights.design_kwargs(cfg.arch) if weights is not None else {}
        model_kwargs = model_kwargs_for(cfg.arch, num_classes, cfg.img_size, drop_path=cfg.drop_path,
                                        dropout=cfg.dropout, **design)
    model = create_model(cfg.arch, pretrained=cfg.pretrained, **model_kwargs)
    if weights is not None and resume_ckpt is None:
        load_pretrained(model, cfg.arch, weights, cfg.img_size, classes)
    check_img_size(cfg.arch, cfg.img_size, model)  # one clear line now, not a shape error mid-epoch
    model = model.to(runtime.device)
    if runtime.cuda:
        model = model.to(memory_format=torch.channels_last)
    return model, model_kwargs
