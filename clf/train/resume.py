"""Resume: the config of a new or continued run, the checks that a checkpoint may be continued, and restoring
the RNG and LR schedule exactly as last.pt left them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from clf.choices import CLASS_WEIGHT_RULES
from clf.config import TrainConfig
from clf.config.tracking import is_store_folder
from clf.data.multilabel import classes_file
from clf.errors import ClfError, ModelError, one_line
from clf.models.checkpoint import SOURCE_KEY
from clf.models.checkpoint_load import load_checkpoint, resolve_checkpoint
from clf.ownership import read_marker
from clf.train import runtime as rt
from clf.train.losses import check_loss_option
from clf.run_files import CONFIG_FILE, LAST_CKPT, has_checkpoint
from clf.train.run_folder import NO_EPOCH_TO_RESUME


def resolve_config(given: dict[str, Any], resume: str | None = None) -> tuple[TrainConfig, dict | None]:
    """The TrainConfig for a new run (from the options given) or a resumed one (checkpoint's config + allowed
    overrides).

    Args:
        given: the options the user gave (field name -> value); the others keep TrainConfig's defaults
            (a new run) or the checkpoint's values (a resumed run).
        resume: a run folder or checkpoint to continue.

    Returns:
        (config, checkpoint dict or None); the checkpoint's path is under its "source" key.
    """
    given = absolute_paths(given)
    if resume is None:
        if not given.get("data"):
            raise ClfError("clf train needs DATA (a folder of class folders, or images with --labels-csv)")
        _refuse_fold_seed_without_folds(given)
        check_loss_option(given.get("loss"))
        return TrainConfig(**given), None
    _check_something_to_resume(Path(resume))
    path = resolve_checkpoint(resume, prefer="last")
    ckpt = load_checkpoint(path)
    saved = _saved_config(ckpt, path)
    cfg = continued_config(saved, given, path)
    _check_resumable_file(path, ckpt)
    if not Path(cfg.data).exists():
        raise ClfError(f"{cfg.data}: the run's data folder is gone; pass DATA to say where it is now")
    if cfg.epochs <= ckpt["epoch"]:
        raise ClfError(f"{path}: already trained {ckpt['epoch']} epochs; "
                       f"pass --epochs N with N > {ckpt['epoch']} to train further")
    return cfg, ckpt


def _refuse_fold_seed_without_folds(given: dict[str, Any]) -> None:
    """--fold-seed only seeds the fold assignment of --folds K: without it, it would be ignored without a word."""
    if "fold_seed" in given and given.get("folds") is None:
        raise ClfError(f"--fold-seed {given['fold_seed']} seeds the fold assignment of --folds K, which was not given; "
                       "add --folds K for cross-validation, or leave out --fold-seed (--seed seeds the split)")


def continued_config(saved: TrainConfig, given: dict[str, Any], source: Path, what: str = "checkpoint") -> TrainConfig:
    """`saved` with the given options a resumed run may change; any other given option must equal the saved one.

    Args:
        source: the file the saved config was read from (named in the refusal); `what` calls it that.
    """
    replace(saved, **given)  # each given value valid on its own (--lr inf is refused as such, not as a change)
    resumable = TrainConfig.resumable_fields()
    for key, value in given.items():
        if key not in resumable and value != getattr(saved, key):
            if key == "arch":
                raise ModelError(f"{source}: {what} is arch '{saved.arch}', not '{value}'; resume with the same --arch")
            raise ClfError(
                f"{source}: {TrainConfig.flag(key)} {value} differs from the {what}'s {getattr(saved, key)}; "
                "a resumed run keeps its training settings (start a new run to change them)"
            )
    return replace(saved, **{k: v for k, v in given.items() if k in resumable})


def _saved_config(ckpt: dict, path: Path) -> TrainConfig:
    """The training settings a checkpoint carries; a damaged or foreign "config" is a bad model, not a crash."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise ModelError(f"{path}: checkpoint has no training settings ('config' is {type(config).__name__}, "
                         "not a mapping); resume a checkpoint written by `clf train`")
    try:
        return TrainConfig.from_saved(config)
    except (ClfError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path}: checkpoint's training settings are invalid ({one_line(exc)}); "
                         "resume a checkpoint written by `clf train`") from None


def _check_something_to_resume(run_dir: Path) -> None:
    """A run folder interrupted before its first epoch ended has no checkpoint: say what to do instead."""
    if run_dir.is_dir() and not has_checkpoint(run_dir) and (
        read_marker(run_dir) is not None or (run_dir / CONFIG_FILE).exists()
    ):
        raise ClfError(f"{run_dir}: {NO_EPOCH_TO_RESUME}")


def absolute_paths(given: dict[str, Any]) -> dict[str, Any]:
    """Data (and weights) paths are stored absolute: resume and export must find them from any working directory."""
    fixed = dict(given)
    for key in ("data", "labels_csv", "pretrained_path", "pseudo_labels", "pseudo_images", "teacher", "unlabelled"):
        if fixed.get(key):
            fixed[key] = _resolved(fixed[key])
    if fixed.get("class_weights") and fixed["class_weights"] not in CLASS_WEIGHT_RULES:  # a weights file
        fixed["class_weights"] = _resolved(fixed["class_weights"])
    if fixed.get("classes") and classes_file(fixed["classes"]) is not None:  # --classes FILE, not a,b,c
        fixed["classes"] = _resolved(fixed["classes"])
    if fixed.get("tensorboard"):
        fixed["tensorboard"] = _resolved(fixed["tensorboard"])
    if fixed.get("mlflow_uri") and is_store_folder(fixed["mlflow_uri"]):
        fixed["mlflow_uri"] = _resolved(fixed["mlflow_uri"])
    return fixed


def _resolved(path: str) -> str:
    """The absolute path; a symbolic link loop is a bad input (Path.resolve raises RuntimeError or OSError on it)."""
    try:
        return str(Path(path).expanduser().resolve())
    except (RuntimeError, OSError) as exc:
        raise ClfError(f"{path}: cannot resolve the path ({one_line(exc)}); is it a symbolic link loop? "
                       "give the real folder") from None


def _check_resumable_file(path: Path, ckpt: dict) -> None:
    """Resume continues the run folder the checkpoint sits in: it must be one, and the file its newest state."""
    run_dir = path.parent
    if not (run_dir / CONFIG_FILE).exists():
        raise ClfError(f"{path}: not inside a clf run folder; resume a run folder (runs/NAME) instead")
    last = run_dir / LAST_CKPT
    if path.resolve() != last.resolve() and last.exists():
        newest = load_checkpoint(last)["epoch"]
        if newest > ckpt["epoch"]:
            raise ClfError(
                f"{path}: holds epoch {ckpt['epoch']} but {last} holds epoch {newest}; resuming from it would erase "
                f"the later epochs; resume {run_dir} (its last.pt)"
            )


def checkpoint_run_dir(ckpt: dict) -> Path:
    """The run folder a loaded checkpoint continues: the folder it was read from."""
    return Path(ckpt[SOURCE_KEY]).parent


def check_resume_fits(ckpt: dict, classes: list[str]) -> None:
    if list(ckpt["classes"]) != list(classes):
        raise ModelError(
            f"{ckpt[SOURCE_KEY]}: checkpoint was trained on classes {ckpt['classes']} but the data has {classes}; "
            "resume with the same data or start a new run"
        )


def rng_state(runtime: rt.Runtime) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if runtime.cuda:
        state["cuda"] = torch.cuda.get_rng_state(runtime.device)
    return state


def restore_rng(state: dict[str, Any], runtime: rt.Runtime) -> None:
    torch.set_rng_state(state["torch"])
    if runtime.cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], runtime.device)


def restore_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's LR at the saved step from *this* run's schedule.

    optimizer.load_state_dict brings back the LR the previous sitting set, computed for its --epochs: after
    `--resume --epochs N` with a larger N the first resumed epoch would train (and log) the old schedule's
    nearly-finished cosine LR. LambdaLR's own formula, so an unchanged schedule gives bit-identical values.
    """
    lrs = [base_lr * factor(scheduler.last_epoch) for factor, base_lr in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports
