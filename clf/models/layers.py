"""Which parameters are the classifier head, and the layer each parameter belongs to (input side first).

Fine-tuning needs both: a weights file's head is re-initialised when its shape differs (clf/models/pretrained.py),
--layer-decay gives each layer its own learning rate and --freeze-epochs trains the top layer (the head) alone
(clf/train/schedule.py). timm models say it themselves (``pretrained_cfg["classifier"]``, ``group_matcher``, as
timm's own ``param_groups_layer_decay`` reads them); the own cnn and torchvision's alexnet are described here.
"""

from __future__ import annotations

from torch import nn

# The own archs: (the body's Sequential, whose numbered children are the layers; the head module, the top layer).
_OWN_LAYOUT = {"cnn": ("features", "head"), "alexnet": ("features", "classifier")}


def classifier_prefixes(model: nn.Module, arch: str) -> tuple[str, ...]:
    """The module names of the last Linear layer(s) that produce the logits: what a new class count reshapes.

    Args:
        model: a module built by ``create_model(arch, ...)``.
        arch: its architecture name.

    Returns:
        Module names such as ``("head.2",)`` (cnn), ``("classifier.6",)`` (alexnet), ``("fc",)`` (timm resnet);
        a parameter belongs to the classifier when its name starts with one of them plus ".".
    """
    if arch in _OWN_LAYOUT:
        head = _OWN_LAYOUT[arch][1]
        linears = [name for name, module in model.named_modules() if name.startswith(head + ".")
                   and isinstance(module, nn.Linear)]
        return (linears[-1],)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if classifier:
        return tuple(classifier) if isinstance(classifier, (tuple, list)) else (classifier,)
    found = model.get_classifier()  # timm's API for every model; a tuple for distilled ones
    modules = found if isinstance(found, tuple) else (found,)
    return tuple(name for name, module in model.named_modules() if any(module is m for m in modules))


def in_prefixes(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when the parameter or state-dict key ``name`` lies under one of the module names ``prefixes``."""
    return any(name.startswith(prefix + ".") for prefix in prefixes)


def layer_ids(model: nn.Module, arch: str) -> dict[str, int]:
    """Parameter name -> layer number: 0 at the input, the largest for the head (whatever follows the last block).

    The own cnn: each of its four conv blocks, then the head; alexnet: each conv layer of ``features``, then the
    whole ``classifier``; timm models: ``group_matcher(coarse=False)`` as timm's ``param_groups_layer_decay`` uses it
    (stem, each block, then the unmatched neck and head), or timm's ``auto_group_layers`` without a matcher.
    """
    if arch in _OWN_LAYOUT:
        return _own_layer_ids(model, *_OWN_LAYOUT[arch])
    from timm.models import group_parameters  # lazy: slow import
    from timm.optim import auto_group_layers

    if hasattr(model, "group_matcher"):
        found = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    else:
        found = auto_group_layers(model)
    top = max(found.values())
    return {name: found.get(name, top) for name, _ in model.named_parameters()}


def _own_layer_ids(model: nn.Module, body: str, head: str) -> dict[str, int]:
    """``body.N.*`` -> the rank of N among the body's numbered children that hold parameters; the rest -> the top."""
    names = [name for name, _ in model.named_parameters()]
    indices = sorted({int(name.split(".")[1]) for name in names if name.startswith(body + ".")})
    rank = {index: position for position, index in enumerate(indices)}
    top = len(indices)
    return {name: rank[int(name.split(".")[1])] if name.startswith(body + ".") else top for name in names}


def head_parameter_names(model: nn.Module, arch: str) -> frozenset[str]:
    """The parameters of the top layer: what trains during --freeze-epochs."""
    ids = layer_ids(model, arch)
    top = max(ids.values())
    return frozenset(name for name, layer in ids.items() if layer == top)


def body_norm_layers(model: nn.Module, arch: str) -> list[nn.Module]:
    """The BatchNorm layers below the head: kept in eval mode while the body is frozen, so that their running
    statistics stay those of the weights file."""
    head = head_parameter_names(model, arch)
    norms = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        params = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        if not params or not all(p in head for p in params):
            norms.append(module)
    return norms
