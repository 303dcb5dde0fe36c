"""A task's activation as torch ops: clf.tasks names it, numpy computes it in clf.probabilities, torch here.

Train (out-of-fold probabilities) and export (the ensemble / TTA / temperature graph) take the activation of their
task from this table, so that a new task's activation is one entry here beside its numpy twin.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from clf.tasks import Task

# activation name -> (scores, log-scores) over the last dimension of torch logits
TORCH_ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "softmax": (lambda logits: torch.softmax(logits, dim=-1), lambda logits: torch.log_softmax(logits, dim=-1)),
    "sigmoid": (torch.sigmoid, torch.nn.functional.logsigmoid),
}


def scores(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """The task's scores [N, C] of torch logits (single-label: softmax probabilities)."""
    return TORCH_ACTIVATIONS[task.activation][0](logits)


def log_scores(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """log(scores) [..., C] of torch logits, without log(0) (single-label: log-softmax)."""
    return TORCH_ACTIVATIONS[task.activation][1](logits)
