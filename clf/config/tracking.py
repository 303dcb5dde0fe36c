"""Experiment tracking settings of `clf train` (and `clf distill`): MLflow and TensorBoard, the optional extras.

The fields live in TrainConfig (clf/config/training.py, so `clf train --help` lists them after the training options);
their checks and the extras' names are here. The trackers themselves are clf/train/tracking*.py.
"""

from __future__ import annotations

from clf.config.base import Check

MLFLOW_EXTRA = "mlflow"  # pip install 'clf[mlflow]'
TENSORBOARD_EXTRA = "tensorboard"  # pip install 'clf[tensorboard]'
DEFAULT_MLFLOW_STORE = "mlruns"  # a folder: clf keeps an SQLite store (mlflow.db) and the artifacts in it


def tracking_checks(mlflow: bool, mlflow_uri: str | None, mlflow_checkpoint: bool, tensorboard: str | None
                    ) -> tuple[Check, ...]:
    """The tracking options given make sense together (an empty value is an unset shell variable, not a place)."""
    return (
        (mlflow_uri is None or mlflow_uri.strip() != "",
         "--mlflow-uri is empty; give a folder, sqlite:///FILE or http(s)://SERVER, or leave it out"),
        (tensorboard is None or tensorboard.strip() != "",
         "--tensorboard is empty; give the folder TensorBoard reads (its --logdir), or leave it out"),
        (not mlflow_checkpoint or mlflow, "--mlflow-checkpoint logs best.pt to MLflow; add --mlflow"),
    )


def is_store_folder(uri: str) -> bool:
    """A --mlflow-uri without a scheme (mlruns, ./exp, /data/mlruns) is a folder clf keeps the store in; sqlite:///,
    http(s)://, databricks and file: URIs go to MLflow as they are. A Windows drive letter is a folder too."""
    scheme, colon, _ = uri.partition(":")
    return not colon or len(scheme) == 1 or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()
