"""The int8 gate of a multi-label model (clf/export/int8.py runs both models and writes the proof).

A multi-label model is gated on its per-label agreement with fp32 (every (image, class) decision) and on the macro
F1 of the int8 decisions with fp32's as truth: a class int8 stops tagging costs 1/C however rare it is, which the
per-label agreement, mostly easy negatives, hides. Its drop below 1 may be at most --max-drop. The validation labels
of a CSV-labelled run are not read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clf.serve.multilabel_metrics import macro_f1_against
from clf.tasks import Task


def multilabel_gate(reference: np.ndarray, quantized: np.ndarray, task: Task) -> dict[str, Any]:
    """The gate's measurements of the int8 logits against the fp32 ones, as Int8Report fields: the per-label agreement
    (task.label_agreement, in `top1_agreement`) and the macro F1 against fp32's decisions and its drop below 1 (a row
    holding NaN or inf decides nothing right)."""
    agreement = task.label_agreement(quantized, reference)
    fp32_tags = task.decide(reference)
    finite = np.isfinite(quantized).all(axis=1, keepdims=True)
    macro_f1 = macro_f1_against(fp32_tags, np.where(finite, task.decide(quantized), ~fp32_tags))
    return {"top1_agreement": agreement, "task": task.name, "macro_f1_vs_fp32": macro_f1,
            "macro_f1_drop": 1.0 - macro_f1}


def multilabel_problems(agreement: float, min_agreement: float, macro_f1_drop: float | None,
                        max_drop: float) -> list[str]:
    """What failed in a multi-label gate, one phrase each (NaN never passes)."""
    problems = []
    if not agreement >= min_agreement:
        problems.append(f"per-label agreement with fp32 {agreement:.2%} < {min_agreement:.2%}")
    if macro_f1_drop is not None and not macro_f1_drop <= max_drop:
        problems.append(f"macro-F1 drop vs fp32 {macro_f1_drop * 100:.2f} points > {max_drop * 100:.2f}")
    return problems
