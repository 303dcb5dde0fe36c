"""k-fold cross-validation: `clf train DATA --folds K` trains K ordinary runs in one group folder, then scores them.

    OUT/NAME/                 the group folder, clf's (marker first; it lists group.json and oof.csv)
    OUT/NAME/group.json       the group record (clf.data.folds), rewritten after every fold
    OUT/NAME/fold-k/          fold k's run: validates on the images of fold k, trains on the others (fit, as any run)
    OUT/NAME/oof.csv          out-of-fold predictions, once every fold has finished

Folds come from `clf.data.split.stratified_folds` over the readable labelled images; a fold run records K, the fold
seed and its fold in its config, so it rebuilds its own split on resume. Under torchrun the folds train one after the
other in the one process group; rank 0 alone writes the group folder, group.json and oof.csv.

This module orchestrates (new or resumed group, the plan, each fold through fit); the group folder's ownership
and the fold split check are clf.train.fold_group_dir's, the out-of-fold inference and CV score
clf.train.fold_scoring's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clf.atomic import clean_stale_temps
from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.data.folds import FoldGroup, is_fold_group, member_name, read_group, write_group
from clf.errors import ClfError, DataError, ModelError, one_line
from clf.models.checkpoint_load import load_checkpoint
from clf.ownership import record_files
from clf.run_files import GROUP_FILE, LAST_CKPT, has_checkpoint
from clf.train import runtime as rt
from clf.train.build import build_model, load_training_set, pretrained_weights
from clf.train.fit import FitResult, fit
from clf.train.fold_group_dir import GROUP_FILES, check_fold_split, prepare_group_dir
from clf.train.fold_scoring import FoldScore, score_group
from clf.train.pseudo_rows import checked_pseudo_file
from clf.train.resume import absolute_paths, continued_config, resolve_config
from clf.train.run_folder import check_run_name, default_run_name
from clf.train.tracking import Tracker, check_tracking_extras, tracked_group
from clf.train.trainer import TrainReporter

logger = logging.getLogger(__name__)

GROUP_OPTIONS = ("folds", "fold_seed")  # fixed by the group record; a resumed group checks them against it
# How a fold is taken up: already finished, continued from its last.pt, started (again) from scratch.
DONE, RESUME, START = "done", "resume", "start"

FoldHook = Callable[[int, int, Path, str], None]  # (fold, K, its run folder, DONE | RESUME | START)


@dataclass(frozen=True)
class GroupResult:
    group_dir: Path
    group: FoldGroup
    folds: list[FoldScore]
    is_main: bool = True  # False on torchrun ranks > 0: they wrote nothing and have no scores
    distributed: bool = False


def wants_folds(given: dict[str, Any], resume: str | None) -> bool:
    """A fold group is asked for: --folds K, or --resume of a group folder."""
    return given.get("folds") is not None or (resume is not None and is_fold_group(resume))


def fit_group(given: dict[str, Any], resume: str | None = None, overwrite: bool = False,
              reporter: TrainReporter | None = None, on_fold: FoldHook | None = None) -> GroupResult:
    """Train (or continue) a fold group, then write its out-of-fold predictions and CV score.

    Args:
        given: the options the user gave (field name -> value), as for `resolve_config`.
        resume: the group folder to continue; finished folds are kept, an interrupted one resumes from its last.pt.
        on_fold: called on rank 0 as each fold is taken up.

    Raises:
        ClfError: the bad inputs of a single run, plus: --folds below 2 or above a class's image count, --val-split
            with --folds, a group record that is damaged or disagrees with the options given.
        KeyboardInterrupt / Terminated: as fit; the group resumes with `clf train --resume OUT/NAME`.
    """
    _refuse_val_split(given)
    if resume is None:
        cfg, _ = resolve_config(given)
        group = None
    else:
        cfg, group = _resumed_group_config(given, Path(resume))
    with rt.process_group(cfg.device, cfg.amp) as runtime:
        return _fit_group(cfg, group, overwrite, reporter or TrainReporter(), on_fold, runtime)


def _fit_group(cfg: TrainConfig, group: FoldGroup | None, overwrite: bool, reporter: TrainReporter,
               on_fold: FoldHook | None, runtime: rt.Runtime) -> GroupResult:
    check_tracking_extras(cfg)
    labelled = rt.agree(lambda: load_training_set(cfg), runtime)
    assert cfg.folds is not None
    rt.agree(lambda: check_fold_counts(labelled, cfg), runtime)
    # --pseudo-labels: every fold trains with the same file (group.json records its sha256). Its rows come from a
    # folder disjoint from DATA, so no fold's validation image is among them (clf.train.pseudo_rows).
    cfg = rt.agree(lambda: checked_pseudo_file(cfg, resumed=group is not None), runtime)
    if group is None:
        # an unknown --arch must not leave a group folder behind
        rt.agree(lambda: build_model(cfg, len(labelled.classes), runtime,
                                     weights=pretrained_weights(cfg)[1]), runtime)
        cfg, group = rt.on_main(lambda: _new_group(cfg, labelled, overwrite), runtime)
        resumed = False
    else:
        resumed = True
        rt.agree(lambda: _check_same_classes(cfg, group, labelled), runtime)
    group_dir = Path(cfg.out) / cfg.name
    with tracked_group(cfg, group_dir, resumed, runtime.is_main) as tracker:
        result = _train_folds(cfg, group, group_dir, reporter, on_fold, runtime, labelled, tracker)
        if result.is_main and group.cv:
            tracker.log_summary({key: value for key, value in group.cv.items() if isinstance(value, (int, float))})
    return result


def _train_folds(cfg: TrainConfig, group: FoldGroup, group_dir: Path, reporter: TrainReporter,
                 on_fold: FoldHook | None, runtime: rt.Runtime, labelled: LabelledSet, tracker: Tracker
                 ) -> GroupResult:
    """Each fold as the plan says, then (rank 0) the out-of-fold predictions and the CV score."""
    plan = rt.on_main(lambda: _plan(group_dir, group, cfg, labelled), runtime)
    group.done = [name for name, action in zip(group.members, plan) if action == DONE]
    for fold, action in enumerate(plan):
        member = group_dir / group.members[fold]
        if runtime.is_main and on_fold is not None:
            on_fold(fold, cfg.folds, member, action)
        if action == DONE:
            continue
        try:
            _train_fold(cfg, group_dir, group.members[fold], fold, action, reporter, runtime, labelled, tracker)
        except KeyboardInterrupt:
            if runtime.is_main:
                logger.warning("fold group interrupted in %s; continue the group with: clf train --resume %s",
                               group.members[fold], group_dir)
            raise
        if runtime.is_main:
            finished = set(group.done) | {group.members[fold]}
            group.done = [name for name in group.members if name in finished]  # in fold order
            write_group(group_dir, group)
        rt.barrier(runtime)
    if not runtime.is_main:
        return GroupResult(group_dir, group, [], is_main=False, distributed=runtime.distributed)
    scores = score_group(group_dir, group, cfg, labelled, runtime, trained_now=[a != DONE for a in plan])
    return GroupResult(group_dir, group, scores, distributed=runtime.distributed)


# ---------------------------------------------------------------- options and data


def _refuse_val_split(given: dict[str, Any]) -> None:
    if "val_split" in given:
        raise ClfError("--val-split: the folds choose the validation images (fold k validates on the k-th 1/K of "
                       "the data); leave out --val-split and --no-val with --folds")


def check_fold_counts(labelled: LabelledSet, cfg: TrainConfig) -> None:
    """Every class needs at least K readable images, one in each fold's validation.

    Raises:
        DataError: naming the smallest class and its count.
    """
    assert cfg.folds is not None
    counts = labelled.class_counts()
    name = min(counts, key=lambda c: counts[c])
    if counts[name] < cfg.folds:
        where = cfg.labels_csv or cfg.data
        raise DataError(f"{where}: --folds {cfg.folds} needs at least {cfg.folds} images in every class, but class "
                        f"'{name}' has {counts[name]}; use --folds {max(2, counts[name])} or fewer, or add images")
    if labelled.groups is not None:  # every fold validates on at least one whole group
        groups = len(set(labelled.groups))
        if groups < cfg.folds:
            raise DataError(f"{cfg.labels_csv}: --folds {cfg.folds} needs at least {cfg.folds} groups in "
                            f"'{cfg.group_col}', found {groups}; use --folds {max(2, groups)} or fewer")


def _check_same_classes(cfg: TrainConfig, group: FoldGroup, labelled: LabelledSet) -> None:
    if group.classes and list(group.classes) != list(labelled.classes):
        raise ModelError(f"{Path(cfg.out) / cfg.name / GROUP_FILE}: the group was trained on classes {group.classes} "
                         f"but the data has {labelled.classes}; resume with the same data or start a new group")


# ---------------------------------------------------------------- the group folder


def _new_group(cfg: TrainConfig, labelled: LabelledSet, overwrite: bool) -> tuple[TrainConfig, FoldGroup]:
    """Name, create (or clear, with --overwrite) and mark the group folder; write its first group.json."""
    assert cfg.folds is not None
    name = cfg.name or default_run_name(cfg)
    check_run_name(name)
    cfg = replace(cfg, name=name)
    group_dir = Path(cfg.out) / name
    prepare_group_dir(group_dir, overwrite)
    group = FoldGroup(folds=cfg.folds, fold_seed=cfg.fold_seed, members=[member_name(k) for k in range(cfg.folds)],
                      classes=list(labelled.classes), arch=cfg.arch, config=cfg.to_dict())
    write_group(group_dir, group)
    logger.info("fold group %s: %d folds (fold seed %d) of %d images", group_dir, cfg.folds, cfg.fold_seed,
                len(labelled.paths))
    return cfg, group


def _resumed_group_config(given: dict[str, Any], group_dir: Path) -> tuple[TrainConfig, FoldGroup]:
    """The group's recorded settings with the options a resumed run may change; K and the fold seed must match.

    Raises:
        DataError: a damaged group record (one line naming it).
        ClfError: --folds or --fold-seed differ from the group's, or another fixed setting was changed.
    """
    record = group_dir / GROUP_FILE
    group = read_group(group_dir)
    for option, recorded in (("folds", group.folds), ("fold_seed", group.fold_seed)):
        if given.get(option) is not None and given[option] != recorded:
            raise ClfError(f"{record}: the group has {group.folds} folds with fold seed {group.fold_seed}; "
                           f"{TrainConfig.flag(option)} {given[option]} differs; resume with the group's own (or "
                           "leave it out), or start a new group with another --name")
    if group.config is None:
        raise DataError(f"{record}: damaged fold-group record (no training settings); retrain with --overwrite")
    try:
        saved = TrainConfig.from_saved(group.config)
    except (ClfError, TypeError, ValueError) as exc:
        raise DataError(f"{record}: damaged fold-group record (training settings: {one_line(exc)}); "
                        "retrain with --overwrite") from None
    if saved.folds != group.folds or saved.fold_seed != group.fold_seed:
        raise DataError(f"{record}: damaged fold-group record (its settings say {saved.folds} folds, seed "
                        f"{saved.fold_seed}); retrain with --overwrite")
    cfg = continued_config(saved, absolute_paths({k: v for k, v in given.items() if k not in GROUP_OPTIONS}),
                           record, what="fold group")
    cfg = replace(cfg, name=group_dir.name, out=str(group_dir.parent))
    if not Path(cfg.data).exists():
        raise ClfError(f"{cfg.data}: the group's data folder is gone; pass DATA to say where it is now")
    return cfg, group


def _plan(group_dir: Path, group: FoldGroup, cfg: TrainConfig, labelled: LabelledSet) -> list[str]:
    """How each fold is taken up (decided by rank 0): DONE, RESUME or START; group.json then records this sitting.

    A finished fold stays finished, unless --epochs was raised above the group's: then it trains further, as a
    resumed single run does. A fold with a last.pt holding every epoch counts as finished (the sitting stopped
    between its last save and the group record). A finished fold whose folder (or checkpoints) is gone starts again.

    Raises:
        DataError: a fold trained earlier whose validation images are not its fold of the data now.
    """
    for stale in clean_stale_temps(group_dir):
        logger.info("%s: removed a temp file left by an interrupted write", stale)
    record_files(group_dir, GROUP_FILES)
    raised = cfg.epochs > int((group.config or {}).get("epochs", cfg.epochs))
    plan = []
    for fold, name in enumerate(group.members):
        member = group_dir / name
        gone = name in group.done and not has_checkpoint(member)
        if gone:  # its folder (or every checkpoint in it) was deleted: the other folds stay as they are
            logger.warning("%s: finished earlier, but its checkpoints are gone; training it again", member)
        if (name in group.done and not gone) or has_checkpoint(member):
            check_fold_split(member, fold, cfg, labelled)
        last = member / LAST_CKPT
        if name in group.done and not raised and not gone:
            plan.append(DONE)
        elif last.is_file():
            plan.append(DONE if _epochs_done(last) >= cfg.epochs else RESUME)
        else:
            plan.append(START)
    if any(action != DONE for action in plan):
        group.done = [name for name, action in zip(group.members, plan) if action == DONE]
        group.config, group.cv = cfg.to_dict(), None
        write_group(group_dir, group)
    return plan


def _epochs_done(last: Path) -> int:
    return int(load_checkpoint(last)["epoch"])


def _train_fold(cfg: TrainConfig, group_dir: Path, name: str, fold: int, action: str, reporter: TrainReporter,
                runtime: rt.Runtime, labelled: LabelledSet, tracker: Tracker) -> FitResult:
    """Fold `fold` through the ordinary fit path, in the caller's runtime (one DDP process group for all folds)
    and on the images the group checked."""
    if action == RESUME:
        resumable = TrainConfig.resumable_fields()
        options = {k: v for k, v in cfg.to_dict().items() if k in resumable}
        fold_cfg, ckpt = resolve_config(options, str(group_dir / name))
        return fit(fold_cfg, resume_ckpt=ckpt, reporter=reporter, runtime=runtime, labelled=labelled,
                   tracking_parent=tracker)
    fold_cfg = replace(cfg, name=name, out=str(group_dir), fold=fold)
    # A fold folder left without a finished epoch is clf's: --overwrite semantics replace it (user files refuse).
    return fit(fold_cfg, overwrite=True, reporter=reporter, runtime=runtime, labelled=labelled,
               tracking_parent=tracker)
