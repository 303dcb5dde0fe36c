"""Inference with onnxruntime: sessions on the right provider, the batched Predictor, submissions, metrics.

Never imports torch. Names are loaded on first use (PEP 562), so ``import clf.serve`` costs nothing and
``from clf.serve import Predictor`` pulls in only OpenCV, numpy and (when a session is made) onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Predictor": "predictor",
    "PredictionResult": "predictions",
    "Batch": "predictions",
    "softmax": "predictor",
    "ModelInfo": "metadata",
    "info_to_props": "metadata",
    "info_from_props": "metadata",
    "has_clf_metadata": "metadata",
    "create_session": "session",
    "provider_candidates": "session",
    "preload_cuda_libraries": "session",
    "write_submission": "submission",
    "write_probs": "submission",
    "make_ids": "submission",
    "check_sample_ids": "submission",
    "classification_report": "metrics",
    "save_confusion_png": "metrics",
    "make_predictor": "loading",
    "run_inference": "infer",
    "InferResult": "infer",
    "EvalResult": "evaluate",  # the function is clf.serve.evaluate.evaluate (the module shares its name)
    "score_submission": "score",
    "ScoreResult": "score",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from clf.serve.evaluate import EvalResult
    from clf.serve.infer import InferResult, run_inference
    from clf.serve.loading import make_predictor
    from clf.serve.metadata import ModelInfo, has_clf_metadata, info_from_props, info_to_props
    from clf.serve.metrics import classification_report, save_confusion_png
    from clf.serve.predictions import Batch, PredictionResult
    from clf.serve.predictor import Predictor, softmax
    from clf.serve.score import ScoreResult, score_submission
    from clf.serve.session import create_session, preload_cuda_libraries, provider_candidates
    from clf.serve.submission import check_sample_ids, make_ids, write_probs, write_submission


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
