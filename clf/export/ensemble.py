"""The deployed thing as ONE torch module: ensemble members, their weights, the average, TTA views, a temperature.

`clf export RUN RUN ... --onnx -o ens.onnx`, `clf export GROUP --onnx` (a fold group: its folds), `--tta VIEWS` and
`--calibrate` all end in a `DeployedModel`, exported and parity-gated exactly like a single model. Members must share
the class list and the Preprocess (one input, one output meaning); they may differ in architecture.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from clf.choices import TTA_VIEWS
from clf.config import ExportConfig
from clf.data.folds import is_fold_group, member_folders, read_group
from clf.errors import ClfError, DataError, ModelError
from clf.export.checkpoint_info import checkpoint_weights, model_info
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from clf.run_files import (BEST_CKPT, CONFIG_FILE, GROUP_FILE, OOF_FILE, REFIT_DIR, SPLIT_FILE, RunFileError,
                           read_config, read_small_file)
from clf.models.outputs import log_scores
from clf.serve.metadata import Deployment, ModelInfo, model_task
from clf.tasks import SINGLE_LABEL, Task

logger = logging.getLogger(__name__)

_FLIP_OPS = {"h": "hflip", "v": "vflip"}  # a view's flip letter -> the augmentation op that trains for it
_FLIP_WORDS = {"h": "horizontal", "v": "vertical"}


@dataclass(frozen=True)
class Sources:
    """What to export: the member checkpoints, and the fold group they come from (None for a list of runs)."""

    checkpoints: list[Path]
    group: Path | None = None

    @property
    def inputs(self) -> dict[str, Path | None]:
        """The files an output must never replace, by what they are (for check_outputs)."""
        found: dict[str, Path | None] = {}
        for index, ckpt in enumerate(self.checkpoints):
            which = f"member {index + 1} " if index else ""  # the first member's names stay those of a single export
            split = ckpt.parent / SPLIT_FILE
            found[f"{which}checkpoint"] = ckpt
            found[f"{which}{SPLIT_FILE}"] = split if split.exists() else None
        if self.group is not None:
            for name in (GROUP_FILE, OOF_FILE):
                found[name] = self.group / name if (self.group / name).exists() else None
        return found


@dataclass
class Member:
    """One loaded member: its checkpoint, what it deploys as, its model (eval mode, fp32) and its weights kind."""

    path: Path
    ckpt: dict[str, Any]
    info: ModelInfo
    model: nn.Module
    weights: str  # "raw" or "ema"


def resolve_sources(cfg: ExportConfig) -> Sources:
    """The member checkpoints of `cfg`: a fold group's folds, or each run / checkpoint given.

    Raises:
        DataError: an unfinished fold group (naming the missing folds), or a group listed among other runs.
        ModelError: a run folder without a checkpoint, a missing path.
    """
    given = [cfg.checkpoint, *cfg.more_runs]
    groups = [run for run in given if Path(run).is_dir() and is_fold_group(run)]
    if groups and len(given) > 1:
        raise DataError(f"{groups[0]}: a fold group is exported on its own (its folds are the ensemble); "
                        "export it alone, or list its fold-k folders as runs")
    if groups:
        folder = Path(groups[0])
        return Sources([resolve_checkpoint(f, prefer="best") for f in finished_members(folder)], group=folder)
    checkpoints = [resolve_checkpoint(run, prefer="best") for run in given]
    check_distinct(given, checkpoints)
    for run in given:
        warn_refit_passed_over(Path(run))
    return Sources(checkpoints)


def warn_refit_passed_over(run: Path) -> None:
    """A run trained with --refit holds the model meant for submission in run/refit; exporting the run itself takes
    the validated model (trained on fewer images), which is allowed (to compare the two) but is said."""
    refit = run / REFIT_DIR
    if run.is_dir() and refit.is_dir() and not refit.is_symlink() and (refit / BEST_CKPT).is_file():
        logger.warning("%s: exporting the validated run; its refit on every image is %s, the model to submit "
                       "(clf export %s)", run, refit, refit)


def check_distinct(given: Sequence[str], checkpoints: Sequence[Path]) -> None:
    """Each member once: two names of one checkpoint (`runs/a`, `./runs/a/`, `runs/a/best.pt`, a link to it) would
    silently double its weight, which is what --weights is for.

    Raises:
        ClfError: naming both spellings of the first checkpoint given twice.
    """
    seen: dict[object, str] = {}
    for name, ckpt in zip(given, checkpoints):
        key = _file_identity(ckpt)
        if key in seen:
            raise ClfError(f"{name}: the same checkpoint as {seen[key]} ({ckpt}), named twice in the ensemble; "
                           "list each run once and give it more weight with --weights")
        seen[key] = name


def _file_identity(path: Path) -> object:
    """(device, inode): one key for every name of a file, links and hard links included; the real path if stat fails."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (info.st_dev, info.st_ino)


def finished_members(folder: Path) -> list[Path]:
    """The member folders of a finished fold group.

    Raises:
        DataError: the group record is unreadable, or some folds have not finished (named).
    """
    group = read_group(folder)
    missing = [name for name in group.members if name not in group.done]
    if missing:
        raise DataError(f"{folder}: unfinished fold group ({', '.join(missing)} not trained yet); "
                        f"finish it with `clf train --resume {folder}`")
    return member_folders(folder, group)


def load_members(sources: Sources) -> list[Member]:
    """Load every member checkpoint and its model; they must share the classes and the Preprocess.

    Raises:
        ModelError: a checkpoint that cannot be loaded, or members that differ (which one, which field, both values).
    """
    members = []
    for path in sources.checkpoints:
        ckpt = load_checkpoint(path)
        members.append(Member(path, ckpt, model_info(ckpt), model_from_checkpoint(ckpt).float().eval(),
                              checkpoint_weights(ckpt)))
    check_compatible(members)
    return members


def check_compatible(members: Sequence[Member]) -> None:
    """Every member must read the same input the same way and mean the same thing by each output column.

    Raises:
        ModelError: "<member>: its classes are [...], <first member> has [...]; ..." (or the first Preprocess field
            that differs).
    """
    first = members[0]
    for other in members[1:]:
        if other.info.task != first.info.task:
            raise ModelError(f"{other.path}: it was trained for the {other.info.task} task, {first.path} for "
                             f"{first.info.task}; ensemble members must predict the same kind of answer")
        if other.info.classes != first.info.classes:
            raise ModelError(f"{other.path}: its classes are {other.info.classes}, {first.path} has "
                             f"{first.info.classes}; ensemble members must be trained on the same classes")
        mine, theirs = first.info.preprocess.to_dict(), other.info.preprocess.to_dict()
        for field, value in mine.items():
            if theirs.get(field) != value:
                raise ModelError(f"{other.path}: its preprocess {field} is {json.dumps(theirs.get(field))}, "
                                 f"{first.path} has {json.dumps(value)}; ensemble members must share the "
                                 "preprocessing (retrain with the same --img-size and normalisation)")


def member_weights(cfg: ExportConfig, count: int) -> list[float]:
    """--weights normalised to sum 1 (equal weights when not given).

    Raises:
        ClfError: not one weight per member.
    """
    if not cfg.weights:
        return [1.0 / count] * count
    if len(cfg.weights) != count:
        raise ClfError(f"--weights {','.join(f'{w:g}' for w in cfg.weights)}: {len(cfg.weights)} weights for "
                       f"{count} member{'s' if count != 1 else ''}; give one per member, in order")
    total = float(sum(cfg.weights))
    return [float(w) / total for w in cfg.weights]


def check_tta_allowed(cfg: ExportConfig, members: Sequence[Member]) -> None:
    """Flipped views only for members trained with that flip, unless --force.

    Raises:
        ModelError: the first member trained without a flip the views need (or that records no augmentation).
    """
    needed = {letter for view in TTA_VIEWS[cfg.tta] for letter in view}
    if not needed or cfg.force:
        return
    for member in members:
        trained = trained_flips(member)
        for letter in sorted(needed):
            word = _FLIP_WORDS[letter]
            if trained is None:
                raise ModelError(f"--tta {cfg.tta}: {member.path} does not record its training augmentation, so "
                                 f"{word} flips cannot be checked (they are wrong for digits and text); "
                                 "pass --force to add the flipped views anyway")
            if letter not in trained:
                raise ModelError(f"--tta {cfg.tta}: {member.path} was trained without {word} flips "
                                 f"({_FLIP_OPS[letter]} 0), and flipped views are wrong where orientation matters "
                                 "(digits, text); pass --force to add them anyway")


def check_calibrate_allowed(cfg: ExportConfig, members: Sequence[Member]) -> None:
    """--calibrate fits one softmax temperature: refused for a multi-label model, whose per-class sigmoid scores
    would need a temperature per class fitted on multi-hot validation labels (not supported yet); its decisions are
    already set by the per-class thresholds tuned on validation scores.

    Raises:
        ModelError: naming the first member and what to do.
    """
    if cfg.calibrate and members[0].info.task != SINGLE_LABEL.name:
        raise ModelError(f"--calibrate: {members[0].path} is a {members[0].info.task} model; clf fits one softmax "
                         "temperature for single-label models, and per-class temperatures for sigmoid scores are not "
                         "supported yet (its tuned per-class thresholds already set each decision); export it "
                         "without --calibrate")


def trained_flips(member: Member) -> set[str] | None:
    """The flip letters ("h", "v") the member's training augmentation applied (p > 0); None when not recorded.

    The checkpoint's "augment" (version 2), else the run's config.json beside it.
    """
    spec = member.ckpt.get("augment")
    if spec is None:
        spec = _config_augment(member.path.parent)
    if not isinstance(spec, list):
        return None
    flips = set()
    for op in spec:
        if isinstance(op, dict):
            for letter, name in _FLIP_OPS.items():
                if op.get("op") == name and _positive(op.get("p", 0)):
                    flips.add(letter)
    return flips


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _config_augment(run_dir: Path) -> Any:
    """The run's config.json "augment" (the pipeline it trained with), or None when config.json is absent or
    unusable (a regular small file only)."""
    try:
        return read_config(run_dir).get("augment")
    except (FileNotFoundError, RunFileError):  # absent, or JSON that is not an object
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read it (%s); its augmentation is unknown", run_dir / CONFIG_FILE, exc)
        return None


def flip_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One TTA view of a [N, C, H, W] batch: "" as is, "h" flips the width axis, "v" the height, "hv" both."""
    dims = [axis for letter, axis in (("v", 2), ("h", 3)) if letter in view]
    return torch.flip(x, dims) if dims else x


class DeployedModel(nn.Module):
    """Members x views, averaged, optionally temperature-scaled: [N, 3, H, W] -> [N, C] log-probabilities.

    With average "prob": log(sum_m w_m * mean_v softmax(f_m(view_v(x)))), computed as a logsumexp of log-softmaxes
    (no log(0)); with "logit": sum_m w_m * mean_v f_m(view_v(x)). A temperature T divides that and log-softmax
    follows, so the output stays log-probabilities. Args: members, weights (normalised), average, views, temperature,
    and the task whose activation (clf.models.outputs: log-softmax for single-label) gives the log-probabilities.

    A multi-label task averages each class's sigmoid probability instead and outputs its logit, so that the output
    stays per-class logits whose sigmoid is the weighted mean p: logit(p) = log p - log(1 - p), both logs a logsumexp
    of log-sigmoids (logsigmoid(x) + log w and logsigmoid(-x) + log w), finite where a sigmoid saturates. It takes
    no temperature (check_calibrate_allowed).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], average: str = "prob",
                 views: Sequence[str] = ("",), temperature: float | None = None, task: Task = SINGLE_LABEL) -> None:
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(f"{len(members)} members, {len(weights)} weights")
        self.members = nn.ModuleList(members)
        self.average = average
        self.views = tuple(views)
        self.temperature = temperature
        self.task = task
        # one weight per (view, member) output, view-major like `forward` stacks them
        per_output = torch.tensor([w / len(self.views) for _ in self.views for w in weights], dtype=torch.float32)
        self.register_buffer("output_weights", per_output.view(-1, 1, 1), persistent=False)  # [V*M, 1, 1]

    def combined(self, x: torch.Tensor) -> torch.Tensor:
        """The averaged output before the temperature: [N, C]."""
        outputs = [member(flip_view(x, view)).float() for view in self.views for member in self.members]
        stacked = torch.stack(outputs)  # [V*M, N, C]
        if self.average == "logit":
            return (stacked * self.output_weights).sum(dim=0)
        log_weights = torch.log(self.output_weights)
        if self.task.multilabel:  # logit of the weighted mean sigmoid probability
            positive = torch.logsumexp(log_scores(self.task, stacked) + log_weights, dim=0)
            negative = torch.logsumexp(log_scores(self.task, -stacked) + log_weights, dim=0)
            return positive - negative
        return torch.logsumexp(log_scores(self.task, stacked) + log_weights, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.combined(x)
        if self.temperature is not None:
            out = log_scores(self.task, out / self.temperature)
        return out


def needs_wrapper(cfg: ExportConfig, members: Sequence[Member]) -> bool:
    """A plain single-run export stays the bare model (the same graph as before ensembles existed)."""
    return len(members) > 1 or cfg.tta != "none" or cfg.calibrate


def build_deployed(cfg: ExportConfig, members: Sequence[Member]) -> DeployedModel:
    """The members, their weights, the average and the views as one module (the temperature is set later)."""
    weights = member_weights(cfg, len(members))
    task = model_task(members[0].info)
    return DeployedModel([m.model for m in members], weights, cfg.average, TTA_VIEWS[cfg.tta], task=task).eval()


def deployment(cfg: ExportConfig, members: Sequence[Member], temperature: float | None) -> Deployment:
    """What the metadata and the proof say the graph computes."""
    weights = member_weights(cfg, len(members))
    listed = [{"run": m.info.run_name or m.path.parent.name, "arch": m.info.arch, "best_val_acc": m.info.best_val_acc,
               "weight": round(w, 6), "weights": m.weights} for m, w in zip(members, weights)]
    return Deployment(members=listed, average=cfg.average, tta=cfg.tta, temperature=temperature)


def ensemble_info(members: Sequence[Member], sources: Sources) -> ModelInfo:
    """The ModelInfo of the deployed file: the shared classes and Preprocess; arch and run name of the whole."""
    first = members[0].info
    if len(members) == 1:
        return first
    archs = list(dict.fromkeys(m.info.arch for m in members))
    name = sources.group.name if sources.group is not None else "+".join(m.info.run_name or m.path.parent.name
                                                                         for m in members)
    return ModelInfo(classes=first.classes, preprocess=first.preprocess, arch="+".join(archs),
                     img_size=first.img_size, clf_version=first.clf_version, run_name=name, best_val_acc=None,
                     task=first.task, thresholds=ensemble_thresholds(first, sources))


def ensemble_thresholds(first: ModelInfo, sources: Sources) -> list[float] | None:
    """A multi-label ensemble's thresholds: a fold group's, tuned on its out-of-fold scores (group.json
    "thresholds"); otherwise None, 0.5 each: each member's own were tuned on its validation scores, not on the
    average's.

    Raises:
        DataError: group.json's thresholds are not one probability per class.
    """
    if first.task == SINGLE_LABEL.name:
        return None
    if sources.group is None:
        logger.info("a multi-label ensemble of separate runs decides at 0.5 per class (the runs' own thresholds "
                    "were tuned on their validation scores, not the average's)")
        return None
    path = sources.group / GROUP_FILE
    thresholds = json.loads(read_small_file(path)).get("thresholds")
    if thresholds is None:
        logger.info("%s records no thresholds; the ensemble decides at 0.5 per class", path)
        return None
    if (not isinstance(thresholds, list) or len(thresholds) != len(first.classes)
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)):
        raise DataError(f"{path}: its thresholds must be {len(first.classes)} probabilities between 0 and 1, one "
                        "per class; retrain the group, or remove the key to decide at 0.5")
    return [float(t) for t in thresholds]


def weights_kind(members: Sequence[Member]) -> str:
    """"raw" or "ema" when every member agrees, else "mixed"."""
    kinds = {m.weights for m in members}
    return kinds.pop() if len(kinds) == 1 else "mixed"
