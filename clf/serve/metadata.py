"""The clf metadata an ONNX model carries in ``metadata_props``, so the file alone is enough to deploy.

Every value is a string (ONNX metadata is ``str -> str``): class names and the Preprocess are JSON,
numbers are their decimal text. A plain onnxruntime client can read them from
``session.get_modelmeta().custom_metadata_map`` without clf installed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from clf.config import Preprocess
from clf.errors import DataError, one_line
from clf.tasks import DEFAULT_TASK, TASKS, Task, get_task

KEY_CLASSES = "clf.classes"
KEY_PREPROCESS = "clf.preprocess"
KEY_ARCH = "clf.arch"
KEY_IMG_SIZE = "clf.img_size"
KEY_VERSION = "clf.version"
KEY_RUN_NAME = "clf.run_name"
KEY_BEST_VAL_ACC = "clf.best_val_acc"
REQUIRED_KEYS = (KEY_CLASSES, KEY_PREPROCESS)
# What the logits mean (clf.tasks): written for a multi-label model only, so a single-label file is what it always
# was; absent = single_label (every model before the multilabel task). thresholds: JSON list, one sigmoid probability
# per class (a class is predicted when its score reaches it).
KEY_TASK = "clf.task"
KEY_THRESHOLDS = "clf.thresholds"
# What the graph computes beyond one model (added keys, only in ensemble / --tta / --calibrate exports): informative,
# the graph already does it. members: JSON list of {"run", "arch", "best_val_acc", "weight", "weights"}.
KEY_MEMBERS = "clf.members"
KEY_AVERAGE = "clf.average"  # "prob" (softmax probabilities averaged) or "logit"
KEY_TTA = "clf.tta"  # a name of clf.choices.TTA_VIEWS: the flipped views the graph averages ("none": none)
KEY_TEMPERATURE = "clf.temperature"  # the calibration temperature the graph divides the logits by ("" when none)
DEPLOYMENT_KEYS = (KEY_MEMBERS, KEY_AVERAGE, KEY_TTA, KEY_TEMPERATURE)


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed model needs besides its weights: class names and how to preprocess images.

    Args:
        classes: class names, index i is logit column i.
        preprocess: the exact preprocessing used in training.
        arch, img_size, clf_version, run_name, best_val_acc: provenance, informative only.
        task: what the logits mean, a name of clf.tasks.TASKS ("single_label" or "multilabel").
        thresholds: a multi-label model's per-class probability thresholds (None: 0.5 each).
    """

    classes: list[str]
    preprocess: Preprocess
    arch: str = ""
    img_size: int = 0
    clf_version: str = ""
    run_name: str = ""
    best_val_acc: float | None = field(default=None)
    task: str = DEFAULT_TASK
    thresholds: list[float] | None = None


def model_task(info: ModelInfo) -> Task:
    """What the model's logits mean: its metadata's task (absent: single-label), deciding a multi-label model's
    classes at its metadata's thresholds (absent: 0.5 each)."""
    task = get_task(info.task)
    return task.with_thresholds(info.thresholds) if task.multilabel else task


def info_to_props(info: ModelInfo) -> dict[str, str]:
    """ModelInfo -> ONNX ``metadata_props`` (all values strings; best_val_acc omitted when unknown)."""
    props = {
        KEY_CLASSES: json.dumps(list(info.classes), ensure_ascii=False),
        KEY_PREPROCESS: info.preprocess.to_json(),
        KEY_ARCH: info.arch,
        KEY_IMG_SIZE: str(int(info.img_size)),
        KEY_VERSION: info.clf_version,
        KEY_RUN_NAME: info.run_name,
    }
    if info.best_val_acc is not None:
        props[KEY_BEST_VAL_ACC] = repr(float(info.best_val_acc))
    if info.task != DEFAULT_TASK:
        props[KEY_TASK] = info.task
    if info.thresholds is not None:
        props[KEY_THRESHOLDS] = json.dumps([float(t) for t in info.thresholds])
    return props


@dataclass(frozen=True)
class Deployment:
    """What an ensemble / TTA / calibrated graph computes around its members (all of it inside the graph).

    Args:
        members: one dict per member: run, arch, best_val_acc (None when unknown), weight (normalised), weights
            ("raw" or "ema").
        average: "prob" (weighted mean of softmax probabilities, output log of it) or "logit" (weighted mean logits).
        tta: the TTA_VIEWS name of the flipped views averaged in the graph ("none").
        temperature: the calibration temperature the final logits are divided by (None: not calibrated).
    """

    members: list[dict[str, Any]]
    average: str = "prob"
    tta: str = "none"
    temperature: float | None = None


def deployment_to_props(deployment: Deployment) -> dict[str, str]:
    """Deployment -> the added ``metadata_props`` keys (all strings)."""
    return {
        KEY_MEMBERS: json.dumps(deployment.members, ensure_ascii=False),
        KEY_AVERAGE: deployment.average,
        KEY_TTA: deployment.tta,
        KEY_TEMPERATURE: "" if deployment.temperature is None else repr(float(deployment.temperature)),
    }


def deployment_from_props(props: Mapping[str, str], source: str) -> Deployment | None:
    """The Deployment a model's metadata records, or None for a plain single-model export (no member key).

    Raises:
        DataError: a malformed value, naming the key.
    """
    if KEY_MEMBERS not in props:
        return None
    members = _parse(props, KEY_MEMBERS, source, json.loads)
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise DataError(f"{source}: corrupt clf metadata ({KEY_MEMBERS} must be a JSON list of objects)")
    return Deployment(
        members=members,
        average=props.get(KEY_AVERAGE, "prob"),
        tta=props.get(KEY_TTA, "none") or "none",
        temperature=_parse(props, KEY_TEMPERATURE, source, _optional_float),
    )


def has_clf_metadata(props: Mapping[str, str]) -> bool:
    """True when the model was exported by clf (carries classes and preprocess)."""
    return all(key in props for key in REQUIRED_KEYS)


def info_from_props(props: Mapping[str, str], source: str) -> ModelInfo:
    """ONNX ``metadata_props`` -> ModelInfo.

    Args:
        props: the model's custom metadata map.
        source: the model file, for error messages.

    Raises:
        DataError: the clf keys are missing (a model exported by another tool) or unreadable.
    """
    if not has_clf_metadata(props):
        raise DataError(
            f"{source}: no clf metadata (exported by another tool?); "
            "pass --img-size, --mean, --std and --labels to use it"
        )
    classes = _parse(props, KEY_CLASSES, source, json.loads)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{source}: corrupt clf metadata ({KEY_CLASSES} must be a non-empty JSON list of names)")
    check_class_names(classes, source, "its clf metadata")
    preprocess = _parse(props, KEY_PREPROCESS, source, _preprocess_from_json)
    task = task_from_props(props, source)
    thresholds = _parse(props, KEY_THRESHOLDS, source, _thresholds_from_json)
    check_thresholds(thresholds, task, len(classes), source)
    return ModelInfo(
        classes=classes,
        preprocess=preprocess,
        arch=props.get(KEY_ARCH, ""),
        img_size=_parse(props, KEY_IMG_SIZE, source, lambda s: int(s) if s else 0),
        clf_version=props.get(KEY_VERSION, ""),
        run_name=props.get(KEY_RUN_NAME, ""),
        best_val_acc=_parse(props, KEY_BEST_VAL_ACC, source, _optional_float),
        task=task,
        thresholds=thresholds,
    )


def task_from_props(props: Mapping[str, str], source: str) -> str:
    """The task a model's metadata names; absent (every model before the multilabel task) = single_label.

    Raises:
        DataError: a task this clf does not know (a newer clf's model, or corrupt metadata).
    """
    task = props.get(KEY_TASK, "") or DEFAULT_TASK
    if task not in TASKS:
        raise DataError(f"{source}: corrupt clf metadata ({KEY_TASK}: unknown task {task!r}; this clf knows "
                        f"{', '.join(TASKS)}; made by a newer clf? upgrade clf)")
    return task


def check_thresholds(thresholds: list[float] | None, task: str, classes: int, source: str) -> None:
    """Thresholds belong to a multi-label model, one per class, each a probability.

    Raises:
        DataError: naming the key and what is wrong.
    """
    if thresholds is None:
        return
    if task == DEFAULT_TASK:
        raise DataError(f"{source}: corrupt clf metadata ({KEY_THRESHOLDS} on a single-label model; "
                        "thresholds decide multi-label classes only)")
    if len(thresholds) != classes:
        raise DataError(f"{source}: corrupt clf metadata ({KEY_THRESHOLDS} holds {len(thresholds)} values for "
                        f"{classes} classes; one per class)")


def check_class_names(classes: list[str], source: str, where: str) -> None:
    """Class names must be unique: two columns with one name make every prediction of the second unreadable.

    Raises:
        DataError: "<source>: class 'cat' appears twice in <where>; ..."
    """
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise DataError(f"{source}: class '{name}' appears twice in {where}; each class needs its own name")
        seen.add(name)


def _preprocess_from_json(text: str) -> Preprocess:
    """Preprocess from its JSON; an unknown key is refused: ignoring a step (made by a newer clf, or corrupt)
    would silently feed the model other inputs than it was trained on."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {text[:40]!r}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Preprocess)})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}; made by a newer clf? upgrade clf")
    return Preprocess.from_dict(data)


def _thresholds_from_json(text: str) -> list[float] | None:
    """A JSON list of probabilities in [0, 1] ('' = absent)."""
    if not text:
        return None
    values = json.loads(text)
    if not isinstance(values, list) or not all(_is_probability(v) for v in values):
        raise ValueError("must be a JSON list of numbers between 0 and 1")
    return [float(v) for v in values]


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _optional_float(text: str) -> float | None:
    return None if text in ("", "null", "None") else float(text)


def _parse(props: Mapping[str, str], key: str, source: str, parse: Any) -> Any:
    """Parse one value; a malformed one becomes a DataError naming the key (absent optional keys -> default)."""
    text = props.get(key, "")
    try:
        return parse(text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{source}: corrupt clf metadata ({key}: {one_line(exc)})") from None
