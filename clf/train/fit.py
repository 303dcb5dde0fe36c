"""fit(): one training run from start to end — data, model, run folder, epochs (trainer.py), teardown.

The concerns live beside it: resume.py (the config of a continued run, restoring it), run_folder.py (name, marker,
--overwrite, config.json, split.json), build.py (images, split, loaders, model), trainer.py (the epoch loop).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from clf.config import MIN_STEPS_PER_EPOCH, TrainConfig, auto_batch_size
from clf.data.datasets import LabelledSet
from clf.errors import ClfError, Terminated
from clf.metrics import check_ordered_classes
from clf.train import runtime as rt
from clf.run_files import split_grouping, split_record, write_split
from clf.train.build import (
    Split,
    augment_pipeline,
    build_model,
    load_training_set,
    preprocess_for,
    pretrained_weights,
    split_training_set,
    warn_near_duplicates,
)
from clf.train.distillation import Teacher, resolve_views, teacher_targets
from clf.train.precision import decide_precision
from clf.train.pseudo_rows import pseudo_rows, with_pseudo_rows
from clf.train.class_weights import resolve_class_weights, resolve_positive_weights
from clf.train.resume import check_resume_fits, checkpoint_run_dir, resolve_config
from clf.train.run_folder import (
    check_run_name,
    default_run_name,
    open_existing_run_dir,
    prepare_new_run_dir,
    replace_old_run,
    write_config,
)
from clf.train.trainer import Trainer, TrainReporter, interrupts_deferred
from clf.train.tracking import Tracker, TrackingReporter, check_tracking_extras, log_samples, tracked_run
from clf.train.tuning import tune_run_thresholds

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "TrainReporter", "fit", "resolve_config"]


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    epochs_done: int
    best_val_acc: float | None
    stopped_early: bool = False
    is_main: bool = True  # False on torchrun ranks > 0: they wrote nothing and have no val metrics to report
    distributed: bool = False  # trained under torchrun (DDP)
    thresholds: list[float] | None = None  # a multi-label run's per-class thresholds (clf.train.tuning)


def fit(
    cfg: TrainConfig,
    resume_ckpt: dict | None = None,
    overwrite: bool = False,
    reporter: TrainReporter | None = None,
    runtime: rt.Runtime | None = None,
    labelled: LabelledSet | None = None,
    teacher: Teacher | None = None,
    tracking_parent: Tracker | None = None,
) -> FitResult:
    """Train `cfg` (continuing `resume_ckpt` when given) and write the run folder. Returns where and how it ended.

    Args:
        runtime: the process's device and torchrun set-up when the caller owns it (a fold group trains its runs
            in one DDP process group); by default fit sets it up and tears it down itself.
        labelled: the checked training images, when the caller has loaded them (a fold group checks every image
            once, not once per fold); by default fit loads and checks DATA itself.
        tracking_parent: the fold group's tracker: the run's MLflow run becomes a child of the group's.

    Raises:
        ClfError: bad data or model, a run folder that cannot be used, a full disk (StorageError), a loss that
            became NaN/inf (IncompleteError, exit 4).
        KeyboardInterrupt / Terminated: Ctrl-C or SIGTERM, after the checkpoint being written was finished.
    """
    if runtime is None:
        with rt.process_group(cfg.device, cfg.amp) as runtime:
            return fit(cfg, resume_ckpt, overwrite, reporter, runtime, labelled, teacher, tracking_parent)
    trainers: list[Trainer] = []
    try:
        return _fit(cfg, resume_ckpt, overwrite, reporter or TrainReporter(), runtime, trainers, labelled, teacher,
                    tracking_parent)
    except torch.cuda.OutOfMemoryError:
        used = trainers[0].cfg.batch_size if trainers else (cfg.batch_size or auto_batch_size(0))
        raise ClfError(
            f"out of GPU memory at --batch-size {used}; try --batch-size {max(1, used // 2)} "
            "(or a smaller --img-size, or --amp on)"
        ) from None
    finally:
        # Under torchrun the DDP wrapper refers to the process group: let it go before the group is destroyed
        # (torch still keeps the gloo threads alive after that: the CLI ends a worker with os._exit). Ctrl-C waits
        # until this is done: in gc's finalisers (torch's WeakKeyDictionary callbacks) it was printed as "Exception
        # ignored ... KeyboardInterrupt" and lost, and a fold group went on to its next fold.
        with interrupts_deferred():
            for trainer in trainers:
                trainer.release()
            trainers.clear()
            gc.collect()


def _fit(cfg: TrainConfig, resume_ckpt: dict | None, overwrite: bool, reporter: TrainReporter,
         runtime: rt.Runtime, trainers: list[Trainer], labelled: LabelledSet | None = None,
         teacher: Teacher | None = None, tracking_parent: Tracker | None = None) -> FitResult:
    torch.manual_seed(cfg.seed)
    check_tracking_extras(cfg)  # a missing extra is one line, before any run folder
    if cfg.teacher is not None and teacher is None:
        raise ClfError(f"{cfg.teacher}: this run is distilled from a teacher; continue it with `clf distill "
                       f"TEACHER --resume RUN`")
    if labelled is None:
        labelled = rt.agree(lambda: load_training_set(cfg), runtime)
    classes = labelled.classes
    rt.agree(lambda: check_ordered_classes(cfg.metric, list(classes)), runtime)  # qwk: before any run folder
    if resume_ckpt is not None:
        rt.agree(lambda: check_resume_fits(resume_ckpt, classes), runtime)
    # The split and the class weights before the run folder: a bad weights file must not leave an empty folder.
    split = split_training_set(labelled, cfg)
    # --pseudo-labels join the training part only: the validation images stay DATA's
    cfg, pseudo = rt.agree(lambda: pseudo_rows(cfg, labelled, resumed=resume_ckpt is not None), runtime)
    split = with_pseudo_rows(split, pseudo, cfg)
    cfg = rt.agree(lambda: with_class_weights(cfg, resume_ckpt, split), runtime)
    # The model before the run folder: an unknown --arch must not leave an empty folder behind (it would also
    # push the next default name to ARCH-SIZE-2).
    cfg, weights = rt.agree(lambda: pretrained_weights(cfg, resume_ckpt), runtime)
    model, model_kwargs = rt.agree(lambda: build_model(cfg, len(classes), runtime, resume_ckpt, weights, classes),
                                   runtime)
    weights = None  # the model holds them now: a big file's tensors need not stay for the whole run
    replacing = False
    if resume_ckpt is not None:
        run_dir = checkpoint_run_dir(resume_ckpt)
        cfg = replace(cfg, name=run_dir.name, out=str(run_dir.parent))
        rt.on_main(lambda: open_existing_run_dir(run_dir), runtime)
    else:
        cfg, run_dir, replacing = _new_run_dir(cfg, overwrite, runtime)
    if runtime.is_main:
        warn_near_duplicates(split)
    if cfg.batch_size is None:  # the config written and checkpointed holds the size used
        cfg = replace(cfg, batch_size=auto_batch_size(len(split.train.paths) // runtime.world_size))
        logger.info("batch size %d (auto: at least %d steps an epoch)", cfg.batch_size, MIN_STEPS_PER_EPOCH)
    cfg, model, runtime = decide_precision(cfg, model, runtime, len(classes))  # the CPU's bf16 / channels_last
    pre = preprocess_for(cfg)
    augment = augment_pipeline(cfg, resume_ckpt)
    distillation = None
    if teacher is not None:  # the teacher's predictions, once, into the run folder (resume: read from there)
        cfg = replace(cfg, kd_views=resolve_views(cfg, augment))  # config.json records the views used
        split, distillation = teacher_targets(cfg, split, run_dir, augment, teacher, runtime,
                                              resumed=resume_ckpt is not None)

    def write_run_files() -> None:
        write_config(run_dir, cfg, labelled.classes, len(labelled.paths), pre, model_kwargs, trainer.params, augment,
                     pseudo_labels=None if pseudo is None else pseudo.record, distillation=distillation)
        write_split(run_dir, split_record(cfg.data, split.val.paths, split.labelled_train_paths(),
                                          grouping=split_grouping(cfg)))

    def replace_then_write() -> None:
        replace_old_run(run_dir)
        write_run_files()

    trainer = Trainer(cfg, runtime, run_dir, labelled, split, pre, model, model_kwargs, augment,
                      before_first_save=replace_then_write if replacing else None)
    trainers.append(trainer)
    if resume_ckpt is not None:
        trainer.restore(resume_ckpt)
    if runtime.distributed:
        torch.manual_seed(cfg.seed + 1000 * runtime.rank + trainer.state.epoch)  # each rank augments differently
    if runtime.is_main:
        if not replacing:
            write_run_files()
        if cfg.patience and trainer.val_loader is None:
            logger.warning("--patience needs a validation split; early stopping is off")
    resumed = resume_ckpt is not None
    with tracked_run(cfg, run_dir, resumed, runtime.is_main, tracking_parent) as tracker:
        if not resumed:
            log_samples(tracker, cfg, split.train.paths, pre, augment)
        try:
            stopped_early = trainer.run(TrackingReporter(reporter, tracker))
        except KeyboardInterrupt as exc:
            trainer.explain_interrupt(replacing=trainer.before_first_save is not None,
                                      terminated=isinstance(exc, Terminated))
            raise
    state = trainer.state
    thresholds = rt.on_main(lambda: tune_run_thresholds(run_dir, split.val, cfg, runtime.device), runtime)
    return FitResult(run_dir, state.epoch, state.best_val_acc, stopped_early, runtime.is_main, runtime.distributed,
                     thresholds)


def with_class_weights(cfg: TrainConfig, resume_ckpt: dict | None, split: Split) -> TrainConfig:
    """The config recording the run's class weights: a new run resolves --class-weights from its training split
    (a refit, on every image, resolves its own); a resumed one keeps the weights it recorded, bit for bit."""
    if resume_ckpt is not None and cfg.resolved_class_weights is not None:
        return cfg
    if split.train.targets is not None:  # multi-label: each class's positive weight
        weights = resolve_positive_weights(cfg.class_weights, split.train.classes, split.train.targets)
    else:
        weights = resolve_class_weights(cfg.class_weights, split.train.classes, split.train.labels)
    return replace(cfg, resolved_class_weights=weights)


def _new_run_dir(cfg: TrainConfig, overwrite: bool, runtime: rt.Runtime) -> tuple[TrainConfig, Path, bool]:
    """Rank 0 names, creates and marks the run folder; every rank gets that name, or its error.

    Under torchrun each rank used to pick the default name itself, after rank 0 had created it (rank 1 saw
    `cnn-32` taken and called its run `cnn-32-2`), and a refusal (folder exists) stopped rank 0 only,
    leaving the others to die waiting in DDP's first collective.

    Returns:
        (config with the name, run folder, whether an old run there is replaced at the first checkpoint).
    """
    def create() -> tuple[str, bool]:
        name = cfg.name or default_run_name(cfg)
        check_run_name(name)
        return name, prepare_new_run_dir(Path(cfg.out) / name, overwrite)

    name, replacing = rt.on_main(create, runtime)
    return replace(cfg, name=name), Path(cfg.out) / name, replacing
