"""One trial of `clf tune`, run by Ray Tune in a worker: an ordinary clf run in SEARCH/trial-k, reporting each
epoch's objective to Tune (ASHA decides on those reports whether it goes on).

A trial that Tune restarts (`clf tune --resume`, or a worker lost) continues its own run folder from last.pt, as
`clf train --resume` does: the run folder, not a Tune checkpoint, is the trial's state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clf.run_files import HISTORY_FILE, LAST_CKPT
from clf.train.history import epoch_acc, read_history_csv
from clf.train.trainer import TrainReporter

logger = logging.getLogger(__name__)

OBJECTIVE = "objective"  # the key of each report: the validation metric (or the CV score with --folds)
EPOCH = "epoch"  # ASHA's time axis
TRIAL_PREFIX = "trial-"


def trial_name(trial_id: str) -> str:
    """Tune's trial id ends in the trial's index (`abc12_00003`): its run folder is trial-3."""
    return f"{TRIAL_PREFIX}{int(trial_id.rsplit('_', 1)[-1])}"


class TuneReporter(TrainReporter):
    """Each finished epoch's objective to Ray Tune (the weights that won the epoch: raw or EMA)."""

    def __init__(self, metric: str, report: Any) -> None:
        self.metric, self.report, self.reported = metric, report, 0

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None:
        value = epoch_acc(row, self.metric)
        self.report({EPOCH: int(row["epoch"]), OBJECTIVE: float("nan") if value is None else float(value),
                     "val_loss": row.get("val_loss"), "train_loss": row.get("train_loss")})
        self.reported += 1


def run_trial(config: dict[str, Any], *, fixed: dict[str, Any], search_dir: str, threads: int) -> None:
    """Ray Tune's function trainable: the fixed settings with this trial's parameters, trained as one clf run (or
    a fold group with --folds, reported once, with its CV score)."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    name = trial_name(tune.get_context().get_trial_id())
    given = {**fixed, **config, "out": search_dir, "name": name, "quiet": True}
    run_dir = Path(search_dir) / name
    if fixed.get("folds"):
        _run_fold_group(given, run_dir, tune.report)
        return
    from clf.train.fit import fit, resolve_config

    resume = str(run_dir) if (run_dir / LAST_CKPT).is_file() else None
    cfg, ckpt = resolve_config({k: v for k, v in given.items() if k not in ("name", "out")} if resume else given,
                               resume)
    reporter = TuneReporter(cfg.metric, tune.report)
    if resume is not None:  # the last epoch again first: ASHA decides on it (clf.tune.scheduler) before any more
        rows = read_history_csv(run_dir / HISTORY_FILE)
        if rows:
            reporter.epoch_end(rows[-1], False)
    fit(cfg, resume_ckpt=ckpt, overwrite=True, reporter=reporter)


def _run_fold_group(given: dict[str, Any], group_dir: Path, report: Any) -> None:
    from clf.train.folds import fit_group

    resume = str(group_dir) if group_dir.is_dir() else None
    result = fit_group(given if resume is None else {k: v for k, v in given.items() if k not in ("name", "out")},
                       resume, overwrite=False)
    cv = result.group.cv or {}
    value = cv.get("oof_metric", cv.get("oof_acc"))
    report({EPOCH: int(given.get("epochs") or 0), OBJECTIVE: float("nan") if value is None else float(value)})
