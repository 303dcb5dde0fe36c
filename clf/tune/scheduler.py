"""ASHA that remembers across `clf tune --resume`: Tune restores the trials but not the scheduler's rungs, so a
restored search would judge its remaining trials against nobody (a hopeless trial then trains to the end). Each
trial's run folder holds every epoch it reported: on a trial's (re)admission its history is replayed into the rungs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from clf.run_files import HISTORY_FILE
from clf.train.history import epoch_acc, read_history_csv
from clf.tune.trial import trial_name


class RunFolderASHA(ASHAScheduler):
    def __init__(self, search_dir: str, clf_metric: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.search_dir, self.clf_metric = search_dir, clf_metric

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        history = Path(self.search_dir) / trial_name(trial.trial_id) / HISTORY_FILE
        if not history.is_file():
            return
        bracket = self._trial_info[trial.trial_id]
        for row in read_history_csv(history):  # each epoch in order: every rung it passed gets its value
            value = epoch_acc(row, self.clf_metric)
            if value is None:
                continue
            epoch = int(row["epoch"])
            if bracket.on_result(trial, epoch, self._metric_op * value) == self.STOP:
                # Not acted on here (a scheduler cannot stop a trial it is adding): the value leaves its rung, the
                # resumed trial reports this epoch again first (clf.tune.trial), and that report stops it.
                rung = max((m, recorded) for m, recorded in bracket._rungs if m <= epoch)[1]
                rung.pop(trial.trial_id, None)
                break
