"""Shared bits of the ensemble / TTA / calibration export tests: distinct member checkpoints built without training,
fold groups built by hand (trained TINY runs as fold-0/fold-1 plus write_group/write_oof), hand-computed averages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from checkpoint_factory import checkpoint_state
from export_helpers import CLASSES, write_split
from serve_helpers import cli_state

from clf.config import Preprocess
from clf.data.folds import FoldGroup, OutOfFold, member_name, write_group, write_oof
from clf.data.preprocess import preprocess
from clf.export.parity import read_split
from clf.models.checkpoint import save_checkpoint
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint

HFLIP = [{"op": "hflip", "p": 0.5}]  # a run trained with horizontal flips (the recorded pipeline)
NO_FLIP = [{"op": "rotate", "max_degrees": 10.0}]
FAST = {"exporter": "torchscript", "batch_sizes": (1, 3)}
CLI_FAST = ["--exporter", "torchscript", "--batch-sizes", "1,3"]  # FAST as `clf export` flags


@pytest.fixture(autouse=True)
def _cli_state():
    """Each CLI invocation in a module that imports this fixture starts from a clean logging/console state."""
    with cli_state():
        yield


def make_member(folder: Path, data: Path | str = "", seed: int = 0, classes: Sequence[str] = CLASSES,
                img_size: int = 32, augment: list[dict[str, Any]] | None = HFLIP, name: str = "",
                arch: str = "cnn", **keys: Any) -> Path:
    """`folder`/best.pt: a fresh model seeded with `seed` (members differ), and the split.json of `data`."""
    torch.manual_seed(seed)
    state, _ = checkpoint_state(arch, classes, img_size, config={"data": str(data), "val_split": 0.25,
                                                                  "name": name or folder.name},
                                best_val_acc=0.5 + seed / 100, augment=augment, **keys)
    save_checkpoint(state, folder / "best.pt")
    if data:
        write_split(folder, data, 0.25)
    return folder


def model_of(folder: Path) -> torch.nn.Module:
    return model_from_checkpoint(load_checkpoint(folder / "best.pt")).float().eval()


def logits_of(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def hand_average(outputs: Sequence[np.ndarray], weights: Sequence[float], average: str) -> np.ndarray:
    """The weighted average written out: log(sum w softmax) for "prob", sum w * logits for "logit"."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    if average == "logit":
        return sum(wi * out for wi, out in zip(w, outputs))
    probs = sum(wi * np.exp(log_softmax(out)) for wi, out in zip(w, outputs))
    return np.log(probs)


def val_images(folder: Path, pre: Preprocess) -> tuple[np.ndarray, list[str], list[str]]:
    """A run's validation images (split.json) preprocessed, their ids and their class-folder labels."""
    split = read_split(folder / "split.json")
    arrays = [preprocess(Path(split["root"]) / entry, pre) for entry in split["val"]]
    return np.stack(arrays), [Path(e).stem for e in split["val"]], [Path(e).parts[0] for e in split["val"]]


def make_group(group: Path, runs: Sequence[Path], done: Sequence[str] | None = None) -> Path:
    """A fold group by hand: `runs` (trained run folders) moved in as fold-0.., group.json, and oof.csv of each fold's
    predictions on its own validation images (what `clf train --folds` writes)."""
    group.mkdir(parents=True, exist_ok=True)
    names = [member_name(k) for k in range(len(runs))]
    ids, labels, folds, probs = [], [], [], []
    for k, run in enumerate(runs):
        target = group / names[k]
        run.rename(target)
        ckpt = load_checkpoint(target / "best.pt")
        x, run_ids, run_labels = val_images(target, Preprocess.from_dict(ckpt["preprocess"]))
        p = np.exp(log_softmax(logits_of(model_from_checkpoint(ckpt).eval(), x)))
        ids += run_ids
        labels += run_labels
        folds += [k] * len(run_ids)
        probs.append(p)
    classes = list(load_checkpoint(group / names[0] / "best.pt")["classes"])
    write_group(group, FoldGroup(folds=len(runs), fold_seed=0, members=names,
                                 done=list(names if done is None else done), classes=classes, arch="cnn"))
    write_oof(group / "oof.csv", OutOfFold(ids, labels, np.array(folds), classes, np.concatenate(probs)))
    return group


def metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map


def proof(model: Path) -> dict[str, Any]:
    return json.loads(model.with_name(model.stem + ".parity.json").read_text())
