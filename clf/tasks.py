"""What a model's outputs mean: the task that train, export and serve consult instead of assuming softmax/argmax.

A task names (1) the activation from logits [N, C] to scores, (2) the decision rule from logits to labels, (3) the
losses that train it (names in the registry of clf.train.losses) and (4) the metrics that judge it. Two tasks:

- single_label: softmax scores, the arg-max class (top-k by rank), cross-entropy;
- multilabel: independent sigmoid scores per class, every class whose score reaches its threshold (0.5 unless the
  model's metadata holds tuned per-class thresholds), binary cross-entropy.

A ground module, numpy only (serve imports it: a deployed host has no torch). Its decision rule works on numpy
arrays and torch tensors alike (both have `.argmax(axis)`), so training's accuracy and inference's labels agree
by construction; the torch form of the activation is clf.models.outputs, keyed by the same name.

Adding a task: one `Task` in TASKS with its activation (a function in clf.probabilities and clf.models.outputs), its
decision rule and its loss (clf.train.losses); see CONTRIBUTING.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from clf.errors import ClfError
from clf.probabilities import log_sigmoid, log_softmax, logit, sigmoid, softmax

# activation name -> (scores, log-scores) over the last axis of numpy logits
ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "softmax": (softmax, log_softmax),
    "sigmoid": (sigmoid, log_sigmoid),
}
DEFAULT_THRESHOLD = 0.5  # a multi-label class is predicted when its sigmoid score reaches this, unless tuned


@dataclass(frozen=True)
class Task:
    """One kind of prediction.

    Attributes:
        name: the registry key ("single_label").
        activation: logits -> scores, a key of ACTIVATIONS (and of clf.models.outputs for torch).
        loss: the training loss on hard labels, a key of clf.train.losses.LOSSES.
        mixed_loss: the loss on mixup/CutMix soft targets, a key of clf.train.losses.LOSSES.
        metrics: what eval and the runs table report for it.
    """

    name: str
    activation: str
    loss: str
    mixed_loss: str
    metrics: tuple[str, ...]
    multilabel: bool = False

    def scores(self, logits: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Scores [N, C] from logits (single-label: probabilities summing to 1 per row), computed in `dtype`."""
        return ACTIVATIONS[self.activation][0](logits, dtype)

    def log_scores(self, logits: np.ndarray) -> np.ndarray:
        """log(scores) [N, C], float32, without log(0): what TTA averaging and the exported graph work in."""
        return ACTIVATIONS[self.activation][1](logits)

    def decide(self, logits: Any) -> Any:
        """The predicted class index per row [N] of logits or scores (numpy or torch; ties -> the lowest index)."""
        if isinstance(logits, np.ndarray) and logits.size == 0:
            return np.zeros(len(logits), dtype=np.int64)
        return logits.argmax(-1)

    def ranked(self, logits: np.ndarray, k: int) -> np.ndarray:
        """The k best class indices per row, best first, int64 [N, min(k, C)] (ties -> the lower index)."""
        k = max(1, min(int(k), logits.shape[-1]))
        return np.argsort(-logits, axis=-1, kind="stable")[..., :k]

    def correct(self, logits: Any, labels: Any) -> Any:
        """Per row, whether the decision is the true label (numpy or torch booleans [N])."""
        return self.decide(logits) == labels

    def agree(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per row [N]: both rows finite and the same decision. A row holding NaN or inf agrees with nothing:
        argmax picks the first NaN in both, which would count a broken graph as 100 % in agreement."""
        finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        return finite & (self.decide(a) == self.decide(b))


@dataclass(frozen=True)
class MultiLabelTask(Task):
    """Multi-label: any number of classes per image, each decided by its own sigmoid score and threshold.

    Attributes:
        thresholds: per-class probability thresholds (tuned on validation or out-of-fold predictions and recorded in
            the checkpoint and the ONNX metadata), or None for DEFAULT_THRESHOLD on every class.
    """

    thresholds: tuple[float, ...] | None = None

    def with_thresholds(self, thresholds: Any) -> MultiLabelTask:
        """This task deciding with `thresholds` (one probability per class; None: 0.5 each)."""
        return replace(self, thresholds=None if thresholds is None else tuple(float(t) for t in thresholds))

    def logit_thresholds(self, classes: int) -> np.ndarray:
        """The thresholds as logits [C] (sigmoid is monotonic: score >= t exactly when logit >= logit(t))."""
        probs = [DEFAULT_THRESHOLD] * classes if self.thresholds is None else list(self.thresholds)
        if len(probs) != classes:
            raise ClfError(f"{len(probs)} thresholds for {classes} classes; the model's metadata is inconsistent")
        return logit(np.asarray(probs)).astype(np.float32)

    def decide(self, logits: Any) -> Any:
        """Per row and class, whether the class is predicted: bool [N, C] (numpy or torch) from logits."""
        if isinstance(logits, np.ndarray):
            return logits >= self.logit_thresholds(logits.shape[-1])
        import torch  # only training passes tensors; a deployed host has numpy logits

        cut = torch.as_tensor(self.logit_thresholds(logits.shape[-1]), device=logits.device, dtype=logits.dtype)
        return logits >= cut

    def correct(self, logits: Any, labels: Any) -> Any:
        """Per row, whether every class is decided right (exact match; `labels` is multi-hot [N, C]); a row holding
        NaN or inf is never right."""
        if isinstance(logits, np.ndarray):
            finite = np.isfinite(logits).all(-1)
        else:
            import torch

            finite = torch.isfinite(logits).all(-1)
        return (self.decide(logits) == (labels > 0.5)).all(-1) & finite

    def agree(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per row [N]: both rows finite and every class decided alike."""
        finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        return finite & (self.decide(a) == self.decide(b)).all(axis=1)

    def label_agreement(self, a: np.ndarray, b: np.ndarray) -> float:
        """The fraction of (row, class) decisions that agree, non-finite rows counting as disagreeing throughout:
        int8's per-label gate."""
        finite = (np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1))[:, None]
        same = (self.decide(a) == self.decide(b)) & finite
        return float(same.mean()) if same.size else 1.0


SINGLE_LABEL = Task(name="single_label", activation="softmax", loss="cross_entropy",
                    mixed_loss="soft_target_cross_entropy", metrics=("accuracy", "log_loss", "ece"))
MULTILABEL = MultiLabelTask(name="multilabel", activation="sigmoid", loss="bce", mixed_loss="bce",
                            metrics=("f1_macro", "f1_micro", "f1_samples", "map"), multilabel=True)
TASKS: dict[str, Task] = {SINGLE_LABEL.name: SINGLE_LABEL, MULTILABEL.name: MULTILABEL}
DEFAULT_TASK = SINGLE_LABEL.name


def get_task(name: str | None = None) -> Task:
    """The task registered as `name` (None: the default, single-label: what every run and model so far is).

    Raises:
        ClfError: an unknown name, listing the known ones.
    """
    key = DEFAULT_TASK if name is None else name
    if key not in TASKS:
        raise ClfError(f"task {key!r}: unknown; choose one of {', '.join(TASKS)}")
    return TASKS[key]
