"""MLflow tracking (the clf[mlflow] extra): one MLflow run per clf run, a fold group's folds as child runs of the
group's run, and the exported ONNX logged to the run it was exported from.

Where: --mlflow-uri, else $MLFLOW_TRACKING_URI, else ./mlruns. A folder (no URI scheme) holds an SQLite store
(mlflow.db) and the artifacts (artifacts/): MLflow 3 refuses its plain file store, and SQLite needs no server
(`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` shows it). The experiment is $MLFLOW_EXPERIMENT_NAME, else
"clf".

The run folder (or group folder) records the MLflow run in mlflow.json: a resumed run continues logging to it, and
`clf export RUN --mlflow` finds it there. Metrics are history.csv's columns, one step per epoch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_text
from clf.config import TrainConfig
from clf.config.tracking import DEFAULT_MLFLOW_STORE, is_store_folder
from clf.errors import ClfError, one_line
from clf.ownership import record_files
from clf.run_files import MLFLOW_RUN_FILE, read_small_file
from clf.train.history import HISTORY_COLUMNS, METRIC_COLUMNS, SITTING_COLUMN
from clf.train.trackers import Guarded, Tracker, Trackers

DEFAULT_EXPERIMENT = "clf"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
EPOCH_METRICS = tuple(c for c in HISTORY_COLUMNS + METRIC_COLUMNS + (SITTING_COLUMN,) if c != "epoch")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch
PARENT_TAG = "mlflow.parentRunId"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlflowTarget:
    """Where runs go: the tracking URI MLflow is given, and the artifact location of an experiment clf creates
    (None: the store's default)."""

    tracking_uri: str
    artifact_location: str | None = None


def resolve_target(uri: str | None) -> MlflowTarget:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else ./mlruns; a folder becomes an SQLite store inside it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_STORE
    if not is_store_folder(uri):
        return MlflowTarget(uri)
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return MlflowTarget(f"sqlite:///{folder / STORE_FILE}", (folder / ARTIFACTS_DIR).as_uri())


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: Any, target: MlflowTarget) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=target.artifact_location)


def read_record(folder: Path) -> dict[str, Any] | None:
    """The MLflow run a run folder (or fold group) logged to, or None when it has no (readable) record."""
    try:
        record = json.loads(read_small_file(folder / MLFLOW_RUN_FILE))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("tracking_uri", "run_id")):
        return None
    return record


def _params(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The resolved config as MLflow params (text; lists as JSON), each within MLflow's length limit."""
    def text(value: Any) -> str:
        return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)

    return [(key, text(value)[:MAX_PARAM_CHARS]) for key, value in sorted(config.items())]


class MlflowTracker(Tracker):
    """One MLflow run, through MlflowClient (no global active run: a fold group holds its run and a fold's at once)."""

    name = "MLflow"

    def __init__(self, client: Any, record: dict[str, Any], folder: Path) -> None:
        self.client, self.record, self.folder = client, record, folder
        self.run_id: str = record["run_id"]
        self.write_record()

    @classmethod
    def for_run(cls, cfg: TrainConfig, folder: Path, resumed: bool, parent: MlflowTracker | None = None
                ) -> MlflowTracker:
        """The MLflow run of the clf run (or fold group) in `folder`: a resumed one continues the run its record
        names; a new one starts a run (a child of `parent`'s, in its store, for a fold)."""
        record = read_record(folder) if resumed else None
        if record is not None:
            client = _client(record["tracking_uri"])
            client.update_run(record["run_id"], status="RUNNING")
            return cls(client, record, folder)
        target = MlflowTarget(parent.record["tracking_uri"]) if parent else resolve_target(cfg.mlflow_uri)
        client = _client(target.tracking_uri)
        experiment = parent.record["experiment_id"] if parent else _experiment_id(client, target)
        tags = {PARENT_TAG: parent.run_id} if parent else {}
        run = client.create_run(experiment, run_name=folder.name, tags=tags)
        record = {"tracking_uri": target.tracking_uri, "experiment_id": experiment, "run_id": run.info.run_id}
        return cls(client, record, folder)

    def write_record(self) -> None:
        """mlflow.json in the folder (again after an --overwrite run replaced the old run's files at its first
        epoch, which removed the record written at the start)."""
        record_files(self.folder, [MLFLOW_RUN_FILE])  # clf's own file: --overwrite may remove it
        atomic_write_text(self.folder / MLFLOW_RUN_FILE, json.dumps(self.record, indent=2) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        pairs = _params(params)
        for start in range(0, len(pairs), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in pairs[start:start + PARAMS_PER_BATCH]])

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._log_metrics({key: row.get(key) for key in EPOCH_METRICS}, step=int(row["epoch"]))
        if not (self.folder / MLFLOW_RUN_FILE).is_file():
            self.write_record()

    def log_summary(self, metrics: dict[str, float]) -> None:
        self._log_metrics(metrics, step=0)

    def _log_metrics(self, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def parent_run(tracker: Tracker | None) -> MlflowTracker | None:
    """The MLflow run inside a (group's) tracker, None when it has none or it failed."""
    pending = [tracker]
    while pending:
        current = pending.pop()
        if isinstance(current, MlflowTracker):
            return current
        if isinstance(current, Guarded):
            pending.append(current.tracker)
        elif isinstance(current, Trackers):
            pending.extend(current.trackers)
    return None


def exported_from(run: str | os.PathLike) -> Path:
    """The folder whose MLflow record an export logs to: the run folder or fold group given, or a checkpoint's
    folder.

    Raises:
        ClfError: the folder has no mlflow.json (it was not trained with --mlflow).
    """
    path = Path(run)
    folder = path.parent if path.is_file() else path
    if read_record(folder) is None:
        raise ClfError(f"{folder}: no MLflow run recorded ({MLFLOW_RUN_FILE}); --mlflow on export logs the model to "
                       "the run that `clf train --mlflow` started; train with --mlflow, or leave out --mlflow")
    return folder


def log_export(folder: Path, paths: Sequence[Path]) -> str | None:
    """The exported model and its proof, logged to the MLflow run `folder` recorded; returns the run id, or None
    (with the reason) when MLflow could not take them: the export itself stands."""
    record = read_record(folder)
    assert record is not None, "checked by exported_from"
    try:
        client = _client(record["tracking_uri"])
        for path in paths:
            client.log_artifact(record["run_id"], str(path))
    except Exception as exc:  # noqa: BLE001 -- a tracker failure never undoes the export
        logger.warning("%s: the export is done, but MLflow did not take the model (%s)", folder, one_line(exc))
        return None
    return record["run_id"]
