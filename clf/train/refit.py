"""--refit: after a validated run, the same recipe again on every image, for the epoch count validation chose.

    OUT/NAME/              the validated run: an ordinary run folder (its config records "refit": true)
    OUT/NAME/refit.json    the refit record, written when the validated run has finished: the chosen epoch and why
    OUT/NAME/refit/        the refit: an ordinary run folder (val_split 0, epochs = the chosen epoch, the validated
                           run's seed and every other recipe setting; its config records refit_of and refit_epoch)

The chosen epoch is the one the validated run's best.pt holds (clf.train.history's key: val accuracy, then the lower
val loss). The refit runs the recipe's whole LR schedule over that many epochs (it does not stop a 30-epoch schedule
at epoch M): the validated model was picked at epoch M of its schedule, but the refit is trained to be submitted, and
a schedule that anneals to its end is the recipe's own way of finishing. Its batch size is the validated run's
(resolved) one, so an epoch takes a few more steps on the added images.

`clf train --resume OUT/NAME` continues where the command stopped: in the validated run (its last.pt), in the refit
(its last.pt), or by starting the refit when the validated run has finished and the refit has no finished epoch.
Both folders are ordinary runs: `clf export OUT/NAME/refit` and `clf runs` treat them as such.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_text
from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.errors import ClfError, ModelError, one_line
from clf.models.checkpoint_load import load_checkpoint
from clf.ownership import record_files
from clf.run_files import BEST_CKPT, LAST_CKPT, REFIT_DIR, REFIT_FILE, has_checkpoint, read_config, train_settings
from clf.train import runtime as rt
from clf.train.build import load_training_set
from clf.train.fit import FitResult, fit
from clf.train.history import patience_exhausted
from clf.train.resume import absolute_paths, check_resume_fits, continued_config, resolve_config
from clf.train.trainer import TrainReporter

logger = logging.getLogger(__name__)

REFIT_KIND = "clf-refit"
REFIT_FORMAT = 1
# The options of this sitting that the refit takes from the command (where and how to run, not what to train).
SITTING_OPTIONS = ("data", "workers", "device", "amp", "cache_images", "strict", "quiet")
# How the refit is taken up: already finished, continued from its last.pt, started (again) from scratch.
DONE, RESUME, START = "done", "resume", "start"


@dataclass(frozen=True)
class RefitPlan:
    """What refit.json holds: the validated run's chosen epoch (the refit's epoch count) and what it scored."""

    epochs: int
    weights: str  # "raw" | "ema": the weights that won that epoch
    val_acc: float | None
    validated_epochs: int
    folder: str = REFIT_DIR


@dataclass(frozen=True)
class RefitResult:
    validated: FitResult
    plan: RefitPlan
    refit: FitResult
    images: int  # the images the refit trained on: every readable labelled image
    refit_action: str  # DONE (finished earlier), RESUME or START
    is_main: bool = True
    distributed: bool = False


def wants_refit(given: dict[str, Any], resume: str | None) -> bool:
    """--refit, or --resume of a run folder trained with it (config.json says so, or it holds refit.json)."""
    if given.get("refit"):
        return True
    if resume is None:
        return False
    run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    if (run_dir / REFIT_FILE).is_file():
        return True
    try:
        return train_settings(read_config(run_dir)).get("refit") is True
    except (OSError, ValueError):
        return False  # the ordinary resume path says what is wrong with the folder


def fit_with_refit(given: dict[str, Any], resume: str | None = None, overwrite: bool = False,
                   reporter: TrainReporter | None = None) -> RefitResult:
    """The validated run, then the refit on every image for its best epoch count (or what is left of either).

    Args:
        given: the options the user gave (field name -> value), as for `resolve_config`.
        resume: the validated run's folder (or a checkpoint in it) to continue.

    Raises:
        ClfError: the bad inputs of a single run, plus --refit with --no-val / --val-split 0 or --folds (TrainConfig).
        KeyboardInterrupt / Terminated: as fit; `clf train --resume OUT/NAME` continues.
    """
    cfg, ckpt, finished = _validated_start(given, resume)
    cfg = replace(cfg, refit=True)
    with rt.process_group(cfg.device, cfg.amp) as runtime:
        labelled = rt.agree(lambda: load_training_set(cfg), runtime)
        if finished is not None:
            assert ckpt is not None
            rt.agree(lambda: check_resume_fits(ckpt, labelled.classes), runtime)
            validated = replace(finished, is_main=runtime.is_main, distributed=runtime.distributed)
        else:
            validated = fit(cfg, ckpt, overwrite, reporter, runtime, labelled)
        run_dir = validated.run_dir
        plan = rt.on_main(lambda: write_plan(run_dir, validated.epochs_done), runtime)
        action = rt.on_main(lambda: refit_action(run_dir / plan.folder, plan), runtime)
        try:
            refit = _fit_refit(cfg, run_dir, plan, action, reporter, runtime, labelled)
        except KeyboardInterrupt:
            if runtime.is_main:
                logger.warning("refit interrupted; continue it with: clf train --resume %s", run_dir)
            raise
        return RefitResult(validated, plan, refit, len(labelled.paths), action, runtime.is_main, runtime.distributed)


# ---------------------------------------------------------------- the validated run


def _validated_start(given: dict[str, Any], resume: str | None
                     ) -> tuple[TrainConfig, dict | None, FitResult | None]:
    """(config, checkpoint to continue or None, the validated run's result when it has already finished)."""
    if resume is None:
        cfg, _ = resolve_config(given)
        return cfg, None, None
    finished = _finished_run(given, Path(resume))
    if finished is not None:
        return finished
    cfg, ckpt = resolve_config(given, resume)
    return cfg, ckpt, None


def _finished_run(given: dict[str, Any], resume: Path) -> tuple[TrainConfig, dict, FitResult] | None:
    """The validated run when it has finished (all its epochs, or early-stopped); None when it has epochs left or
    its checkpoint cannot be read (resolve_config then continues it, or says what is wrong)."""
    path = resume / LAST_CKPT if resume.is_dir() else resume
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path)
        saved = TrainConfig.from_saved(ckpt["config"])
        epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
    except (ClfError, KeyError, TypeError, ValueError, AttributeError):
        return None
    cfg = continued_config(saved, absolute_paths(given), path)
    if epoch < cfg.epochs and not patience_exhausted(history, cfg.patience, cfg.metric):
        return None
    if not Path(cfg.data).exists():
        raise ClfError(f"{cfg.data}: the run's data folder is gone; pass DATA to say where it is now")
    run_dir = path.parent
    cfg = replace(cfg, name=run_dir.name, out=str(run_dir.parent))
    return cfg, ckpt, FitResult(run_dir, epoch, ckpt.get("best_val_acc"), stopped_early=epoch < cfg.epochs)


# ---------------------------------------------------------------- the plan and the refit


def write_plan(run_dir: Path, validated_epochs: int) -> RefitPlan:
    """refit.json from the validated run's best.pt (the epoch it holds is the one validation chose).

    Raises:
        ModelError: best.pt is missing or unreadable.
    """
    best = load_checkpoint(run_dir / BEST_CKPT)
    plan = RefitPlan(epochs=int(best["epoch"]), weights=str(best.get("weights") or "raw"),
                     val_acc=best.get("best_val_acc"), validated_epochs=validated_epochs)
    record = {"kind": REFIT_KIND, "format": REFIT_FORMAT, **asdict(plan)}
    record_files(run_dir, [REFIT_FILE])  # recorded before it is written: clf's own
    atomic_write_text(run_dir / REFIT_FILE, json.dumps(record, indent=2) + "\n")
    return plan


def refit_action(refit_dir: Path, plan: RefitPlan) -> str:
    """DONE, RESUME or START (decided by rank 0). A refit trained for another plan (the validated run was trained
    further since) starts over; --overwrite semantics: clf's own files only."""
    last = refit_dir / LAST_CKPT
    if not has_checkpoint(refit_dir) or not last.is_file():
        return START
    try:
        ckpt = load_checkpoint(last)
        epoch, config = int(ckpt["epoch"]), ckpt["config"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{last}: cannot read the refit's checkpoint ({one_line(exc)}); "
                         "retrain the run with --overwrite") from None
    if config.get("refit_epoch") != plan.epochs:
        logger.info("%s: trained for %s epochs, validation now chose %d: the refit starts over", refit_dir,
                    config.get("refit_epoch"), plan.epochs)
        return START
    return DONE if epoch >= plan.epochs else RESUME


def refit_config(validated: TrainConfig, run_dir: Path, plan: RefitPlan) -> TrainConfig:
    """The refit's settings: the validated run's recipe (as its best.pt recorded it, resolved batch size included),
    on every image (val_split 0) for the chosen epoch count, in OUT/NAME/refit. The warm-up keeps its share of the
    schedule (9 of 30 epochs -> 6 of 20): the refit runs the same LR shape over fewer epochs."""
    warmup = validated.warmup_epochs * plan.epochs // validated.epochs
    return replace(validated, name=plan.folder, out=str(run_dir), val_split=0.0, epochs=plan.epochs, patience=0,
                   warmup_epochs=warmup, refit=False, refit_of=run_dir.name, refit_epoch=plan.epochs)


def _fit_refit(cfg: TrainConfig, run_dir: Path, plan: RefitPlan, action: str, reporter: TrainReporter | None,
               runtime: rt.Runtime, labelled: LabelledSet) -> FitResult:
    refit_dir = run_dir / plan.folder
    sitting = {key: getattr(cfg, key) for key in SITTING_OPTIONS}
    if action == DONE:
        epoch = rt.on_main(lambda: int(load_checkpoint(refit_dir / LAST_CKPT)["epoch"]), runtime)
        return FitResult(refit_dir, epoch, None, is_main=runtime.is_main, distributed=runtime.distributed)
    if action == RESUME:
        refit_cfg, ckpt = resolve_config(sitting, str(refit_dir))
        return fit(refit_cfg, resume_ckpt=ckpt, reporter=reporter, runtime=runtime, labelled=labelled)
    recipe = rt.on_main(lambda: load_checkpoint(run_dir / BEST_CKPT)["config"], runtime)
    validated = replace(TrainConfig.from_saved(recipe), **sitting)
    logger.info("refit %s: the same recipe on all %d images for %d epochs (validation's best epoch)", refit_dir,
                len(labelled.paths), plan.epochs)
    # A refit folder left without a finished epoch, or trained for another plan, is clf's: replaced (own files only)
    return fit(refit_config(validated, run_dir, plan), overwrite=True, reporter=reporter, runtime=runtime,
               labelled=labelled)
