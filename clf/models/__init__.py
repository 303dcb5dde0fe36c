"""Models: architecture registry (own CNN, torchvision, timm), size summary, checkpoint I/O.

timm and torchvision are imported only when a model is listed or built.
"""

from clf.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    save_checkpoint,
    to_plain,
)
from clf.models.checkpoint_load import (
    load_checkpoint,
    model_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)
from clf.models.cnn import SimpleCNN
from clf.models.registry import (
    OWN_ARCHS,
    check_img_size,
    create_model,
    is_known_arch,
    list_models,
    model_kwargs_for,
    takes_img_size,
)
from clf.models.summary import count_flops, count_parameters

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "OWN_ARCHS",
    "SimpleCNN",
    "check_img_size",
    "count_flops",
    "count_parameters",
    "create_model",
    "is_known_arch",
    "list_models",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_kwargs_for",
    "preprocess_from_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "takes_img_size",
    "to_plain",
]
