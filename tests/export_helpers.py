"""Shared bits of the export tests: clf checkpoints (and the split.json training writes beside them) built without
training, a tiny sample dataset, ONNX checks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from checkpoint_factory import checkpoint_state
from clf.data.datasets import load_labelled
from clf.data.sample import generate_sample_competition
from clf.data.split import stratified_split
from clf.models.checkpoint import save_checkpoint

CLASSES = ["circle", "square", "star", "triangle"]  # the sample competition's class folders, sorted
RUN_NAME = "test-run"
BEST_VAL_ACC = 0.75
# `clf export` flags of the CLI tests: the quicker TorchScript exporter, two batch sizes to check
CLI_FAST = ("--exporter", "torchscript", "--batch-sizes", "1,2")
PER_CLASS = 4  # with val_split 0.25: one validation image per class, 4 in all


def make_data(root: Path, per_class: int = PER_CLASS) -> Path:
    """The sample competition (32 px) under `root`; returns its labelled train/ folder."""
    summary = generate_sample_competition(root, n_train_per_class=per_class, n_test=0, image_size=32)
    return Path(summary["train_dir"])


def write_split(folder: Path, data: str | Path, val_split: float = 0.25, seed: int = 0, **changes: Any) -> Path:
    """The split.json `clf train` writes into a run folder: the data root and its val/train lists (relative paths).

    `changes` replace keys of the file (e.g. val=["../../etc/passwd"]) to build hostile ones.
    """
    root = Path(data).resolve()
    labelled = load_labelled(root)
    train_idx, val_idx = stratified_split(labelled.labels, val_split, seed)
    relative = [Path(os.path.relpath(p, root)).as_posix() for p in labelled.paths]
    payload = {"format": 1, "root": str(root), "val": [relative[i] for i in val_idx],
               "train": [relative[i] for i in train_idx], **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "split.json").write_text(json.dumps(payload, indent=1))
    return folder / "split.json"


def make_checkpoint(
    path: Path, arch: str = "cnn", img_size: int = 32, data: str | Path = "", val_split: float = 0.25,
    split: bool = True, **extra: Any
) -> Path:
    """A checkpoint dict with every contract key, as `clf train` writes it, around a freshly initialised model.

    With `data` of an existing folder (and `split`), the split.json training writes goes beside it too.
    """
    torch.manual_seed(0)
    state, _ = checkpoint_state(
        arch, CLASSES, img_size, config={"data": str(data), "val_split": val_split, "name": RUN_NAME},
        best_val_acc=BEST_VAL_ACC,
    )
    state.update(extra)  # keys set as given, after the model was built (e.g. class names that do not fit it)
    saved = save_checkpoint(state, path)
    if split and data and Path(data).is_dir():
        write_split(Path(path).parent, data, val_split)
    return saved


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input/output's shape: ints for fixed axes, the symbol's name for dynamic ones."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def assert_io_contract(path: Path, num_classes: int, height: int, width: int | None = None) -> onnx.ModelProto:
    """Full checker, input `input` float32 [N,3,H,W] with a symbolic N, output `logits` float32 [N,C]."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims, out_dims = dims(inp), dims(out)
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, height, width or height], in_dims
    assert isinstance(out_dims[0], str) and out_dims[1:] == [num_classes], out_dims
    return model


def assert_runs_like_torch(path: Path, model: torch.nn.Module, height: int, width: int | None = None,
                           batches: tuple[int, ...] = (1, 7), atol: float = 1e-4) -> None:
    """onnxruntime on CPU gives PyTorch's logits at every batch size (the dynamic axis really is dynamic)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in batches:
        x = np.random.default_rng(n).standard_normal((n, 3, height, width or height)).astype(np.float32)
        (logits,) = session.run(None, {"input": x})
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
        assert logits.shape == reference.shape == (n, reference.shape[1]) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, reference, atol=atol, rtol=0)


def scale_float_initializers(model: onnx.ModelProto, factor: float = 1.5) -> None:
    """Tamper with the weights in place: every float initializer times `factor`."""
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            array = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), init.name))


def files_in(folder: Path) -> set[str]:
    """Every name in `folder`, hidden temp files included."""
    return {p.name for p in folder.iterdir()}

