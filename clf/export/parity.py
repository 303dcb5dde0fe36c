"""Parity proof: PyTorch vs onnxruntime on the same preprocessed batch of real images."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from clf.atomic import atomic_write_text
from clf.config import Preprocess
from clf.data.preprocess import preprocess
from clf.errors import ClfError, DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityReport:
    """What the check compared and what it found; written as parity.json beside the model."""

    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float
    images: int  # distinct inputs compared (a short list is repeated to fill the largest batch, not counted twice)
    image_source: str  # "validation images of <run>", "<dir>", or "random tensors"
    batch_sizes: list[int]
    provider: str
    model: str
    precision: str

    def reason(self) -> str:
        """Why it failed, in one line ('' when it passed)."""
        problems = []
        if not self.max_abs_diff <= self.atol:  # also catches NaN
            problems.append(f"max abs diff {self.max_abs_diff:.3g} > atol {self.atol:.3g}")
        if self.top1_agreement < 1.0:
            problems.append(f"top-1 agreement {self.top1_agreement:.2%} < 100%")
        return "; ".join(problems)

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def run_images(ckpt: dict[str, Any], limit: int) -> tuple[list[str], str]:
    """The run's own validation images (recomputed from its data path, split and seed), and what they are.

    Returns:
        (paths, source): at most ``limit`` paths spread over the classes, and "validation images of <run>"
        ("training images of <run> (no validation split)" for --no-val runs); ([], "") when the data is gone.
    """
    from clf.data.datasets import load_labelled
    from clf.data.split import stratified_split

    config = ckpt.get("config") or {}
    data, run = config.get("data"), ckpt.get("run_name") or "the run"
    if not data or not Path(data).exists():
        return [], ""
    try:
        labelled = load_labelled(data, config.get("labels_csv"), id_col=config.get("id_col", "filename"),
                                 label_col=config.get("label_col", "label"))
    except DataError as exc:
        logger.warning("cannot read the run's data for the parity check (%s)", exc)
        return [], ""
    split = config.get("val_split", 0.0)
    _, val_idx = stratified_split(labelled.labels, split, config.get("seed", 0)) if split else (None, [])
    if len(val_idx):
        return spread([labelled.paths[i] for i in val_idx], limit), f"validation images of {run}"
    return spread(list(labelled.paths), limit), f"training images of {run} (no validation split)"


def spread(items: Sequence[str], limit: int) -> list[str]:
    """At most ``limit`` items evenly spaced over ``items`` (sorted by class, so every class gets a share)."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def folder_images(folder: str, limit: int) -> list[str]:
    """At most ``limit`` images of ``folder`` and its sub-folders, spread over them (e.g. over class folders)."""
    from clf.data.files import list_images

    return spread([str(p) for p in list_images(folder, recursive=True)], limit)


def load_batch(paths: Sequence[str], pre: Preprocess) -> np.ndarray:
    """The same preprocessed float32 [N,3,H,W] batch for both runtimes; unreadable files are skipped."""
    arrays = []
    for path in paths:
        try:
            arrays.append(preprocess(path, pre))
        except DataError as exc:
            logger.warning("%s; skipped for the parity check", exc)
    return np.stack(arrays) if arrays else np.empty((0, 3, *pre.size), np.float32)


def random_batch(pre: Preprocess, count: int, seed: int = 0) -> np.ndarray:
    """Fallback only: normalised noise with the statistics of real inputs."""
    return np.random.default_rng(seed).standard_normal((count, 3, *pre.size)).astype(np.float32)


def _chunks(batch: np.ndarray, size: int) -> list[np.ndarray]:
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def compare(model: nn.Module, session: Any, batch: np.ndarray, batch_sizes: Sequence[int]) -> tuple[float, float, float]:
    """Run both at every batch size; returns (max abs diff, mean abs diff, top-1 agreement) over all runs."""
    input_name = session.get_inputs()[0].name
    diffs, agree, total = [], 0, 0
    with torch.no_grad():
        reference = model(torch.from_numpy(batch)).float().numpy()  # [N, C]
    for size in batch_sizes:
        outputs = [session.run(None, {input_name: chunk})[0] for chunk in _chunks(batch, size)]
        onnx_logits = np.concatenate(outputs).astype(np.float32)
        if onnx_logits.shape != reference.shape:
            raise ClfError(f"ONNX output shape {onnx_logits.shape} != PyTorch {reference.shape} at batch {size}")
        diffs.append(np.abs(onnx_logits - reference))
        agree += int((onnx_logits.argmax(1) == reference.argmax(1)).sum())
        total += len(reference)
    every = np.concatenate([d.ravel() for d in diffs])
    return float(every.max()), float(every.mean()), agree / max(total, 1)
