"""What a checkpoint deploys as: the metadata its .onnx carries, and which of the run's weights it holds.

Read by every export (clf/export/ensemble.py loads each member through it; a single model is an ensemble of one).
"""

from __future__ import annotations

from clf import __version__
from clf.errors import ModelError
from clf.models.checkpoint_load import preprocess_from_checkpoint
from clf.serve.metadata import ModelInfo
from clf.choices import TASK_METRICS
from clf.tasks import DEFAULT_TASK, TASKS

THRESHOLDS_KEY = "thresholds"  # best.pt's per-class thresholds of a multi-label run (tuned on validation)


def model_info(ckpt: dict) -> ModelInfo:
    """The metadata a deployed .onnx carries: classes, Preprocess, provenance.

    Raises:
        ModelError: the checkpoint has no class names, or not as many as the model has outputs.
    """
    source = ckpt.get("source", "checkpoint")
    classes = ckpt.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ModelError(f"{source}: checkpoint has no class names; export a checkpoint written by `clf train`")
    outputs = (ckpt.get("model_kwargs") or {}).get("num_classes", len(classes))
    if outputs != len(classes):
        raise ModelError(f"{source}: checkpoint lists {len(classes)} class names for a model with {outputs} outputs")
    pre = preprocess_from_checkpoint(ckpt)
    return ModelInfo(
        classes=[str(name) for name in classes],
        preprocess=pre,
        arch=ckpt["arch"],
        img_size=int(ckpt.get("img_size") or pre.size[0]),
        clf_version=__version__,
        run_name=ckpt.get("run_name") or "",
        best_val_acc=ckpt.get("best_val_acc"),
        task=checkpoint_task(ckpt),
        thresholds=checkpoint_thresholds(ckpt, len(classes)),
    )


def checkpoint_task(ckpt: dict) -> str:
    """The task the run trained (its config's "task"; absent in every checkpoint before the multilabel task:
    single_label).

    Raises:
        ModelError: a task this clf does not know.
    """
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    task = config.get("task") or DEFAULT_TASK
    if task not in TASKS:
        raise ModelError(f"{ckpt.get('source', 'checkpoint')}: its config's task is {task!r}, not one of "
                         f"{', '.join(TASKS)}; export it with the clf that trained it")
    return task


def checkpoint_metric(ckpt: dict) -> str:
    """The competition's metric the run was trained for (its config's "metric"; absent in checkpoints before
    --metric: the task's default, accuracy for single-label).

    Raises:
        ModelError: a metric that does not apply to the checkpoint's task.
    """
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    task = checkpoint_task(ckpt)
    name = config.get("metric") or TASK_METRICS[task][0]
    if name not in TASK_METRICS[task]:
        raise ModelError(f"{ckpt.get('source', 'checkpoint')}: its config's metric is {name!r}, not one of "
                         f"{', '.join(TASK_METRICS[task])} for the {task} task; export it with the clf that trained it")
    return name


def checkpoint_thresholds(ckpt: dict, classes: int) -> list[float] | None:
    """A multi-label checkpoint's per-class thresholds (key "thresholds"), None for 0.5 each (absent) and for a
    single-label checkpoint.

    Raises:
        ModelError: not one probability per class.
    """
    thresholds = ckpt.get(THRESHOLDS_KEY)
    if thresholds is None or checkpoint_task(ckpt) == DEFAULT_TASK:
        return None
    source = ckpt.get("source", "checkpoint")
    if (not isinstance(thresholds, (list, tuple)) or len(thresholds) != classes
            or not all(_is_probability(t) for t in thresholds)):
        raise ModelError(f"{source}: its thresholds must be {classes} probabilities between 0 and 1, one per class; "
                         "export a checkpoint written by `clf train`")
    return [float(t) for t in thresholds]


def _is_probability(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


def checkpoint_weights(ckpt: dict) -> str:
    """"ema" or "raw": which weights a checkpoint's "model" holds (checkpoints before EMA hold raw weights).

    Raises:
        ModelError: any other value (a damaged or hand-edited checkpoint).
    """
    weights = ckpt.get("weights") or "raw"
    if weights not in ("raw", "ema"):
        raise ModelError(f"{ckpt.get('source', 'checkpoint')}: 'weights' is {weights!r}, not 'raw' or 'ema'; "
                         "export a checkpoint written by `clf train`")
    return weights
