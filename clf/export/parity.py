"""Parity proof: PyTorch vs onnxruntime on the same preprocessed batch of real images, and where they come from."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from clf.atomic import atomic_write_text
from clf.config import Preprocess
from clf.data.files import is_image_file
from clf.data.preprocess import preprocess
from clf.errors import ClfError, DataError, one_line
from clf.reading import read_small_regular_file

logger = logging.getLogger(__name__)

# Training writes the run's file lists beside its checkpoints:
#   {"format": 1, "root": "<absolute data root>", "val": ["<class>/<file>", ...], "train": [...]}
SPLIT_NAME = "split.json"
SPLIT_FORMAT = 1
MAX_SPLIT_BYTES = 256 * 2**20  # a list of a few million paths; more is not a file list


@dataclass(frozen=True)
class ParityReport:
    """What the check compared and what it found; written as `<model stem>.parity.json` beside the model."""

    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float
    images: int  # distinct inputs compared (a short list is repeated to fill the largest batch, not counted twice)
    image_source: str  # "validation images of <run>" (from split.json), "<dir>", or "random tensors"
    batch_sizes: list[int]
    provider: str
    model: str
    precision: str
    weights: str = "raw"  # which of the run's weights were proven: "raw" or "ema" (the checkpoint's "weights")

    def reason(self) -> str:
        """Why it failed, in one line ('' when it passed)."""
        problems = []
        if not self.max_abs_diff <= self.atol:  # also catches NaN
            problems.append(f"max abs diff {self.max_abs_diff:.3g} > atol {self.atol:.3g}")
        if self.top1_agreement < 1.0:
            problems.append(f"top-1 agreement {self.top1_agreement:.2%} < 100%")
        return "; ".join(problems)

    def write(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """The proof file; `extra`: what an ensemble / TTA / calibrated graph adds (members, temperature, ...)."""
        payload = _json_safe({**asdict(self), **(extra or {})})
        atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _json_safe(value: Any) -> Any:
    """NaN and inf as null: Python's json writes them as bare NaN/Infinity, which strict JSON readers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def run_images(folder: str | os.PathLike, run_name: str, limit: int) -> tuple[list[str], str]:
    """The run's validation images as training listed them in `folder`/split.json, and what they are.

    Only entries that resolve (links followed) to regular image files under the split's root are kept: a run
    folder is data, never a list of arbitrary paths to open. The checkpoint's own config is not consulted.

    Returns:
        (paths, source): at most ``limit`` paths spread over the list, and "validation images of <run>"
        ("training images of <run> (no validation split)" for a --no-val run); ([], "") when there is no
        usable split.json or none of its entries is usable (both logged).
    """
    split = read_split(Path(folder) / SPLIT_NAME)
    if split is None:
        return [], ""
    run = run_name or "the run"
    if split["val"]:
        entries, source = split["val"], f"validation images of {run}"
    else:
        entries, source = split["train"], f"training images of {run} (no validation split)"
    paths = confined_images(split["root"], entries, Path(folder) / SPLIT_NAME)
    return (spread(paths, limit), source) if paths else ([], "")


def read_split(path: Path) -> dict[str, Any] | None:
    """split.json as {"root": str, "val": list, "train": list}; None when absent, else logged when unusable."""
    try:
        text = read_small_regular_file(path, MAX_SPLIT_BYTES, "a file list")
    except FileNotFoundError:
        logger.debug("%s: not found (a run of clf 0.1, or a bare checkpoint)", path)
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read it (%s); not used for the parity check", path, _reason(exc))
        return None
    problem = _split_problem(text)
    if isinstance(problem, str):
        logger.warning("%s: %s; not used for the parity check", path, problem)
        return None
    return problem


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or one_line(exc)


def _split_problem(text: str) -> dict[str, Any] | str:
    """The parsed split, or what is wrong with it (never quoting the file's contents)."""
    try:
        data = json.loads(text)
    except ValueError:
        return "not valid JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("format")
    if isinstance(version, bool) or not isinstance(version, int):
        return "no format number"
    if version > SPLIT_FORMAT:
        return f"format {version} is newer than this clf reads ({SPLIT_FORMAT}); upgrade clf"
    root = data.get("root")
    if not isinstance(root, str) or not os.path.isabs(root):
        return "its root is not an absolute path"
    lists = {key: data.get(key, []) for key in ("val", "train")}
    if not all(isinstance(v, list) for v in lists.values()):
        return "val and train must be lists of paths"
    return {"root": root, **lists}


def confined_images(root: str, entries: Sequence[Any], split_path: Path) -> list[str]:
    """The entries (paths relative to `root`) that are regular image files inside `root`, links resolved.

    Nothing is opened: names and stat() only. Skipped entries are counted in one warning, by reason.
    """
    real_root = os.path.realpath(root)
    kept, skipped = [], Counter()
    for entry in entries:
        problem = _entry_problem(root, real_root, entry)
        if problem:
            skipped[problem] += 1
            logger.debug("%s: entry %r skipped (%s)", split_path, entry, problem)
        else:
            kept.append(os.path.join(root, entry))
    if skipped:
        reasons = ", ".join(f"{count} {why}" for why, count in sorted(skipped.items()))
        logger.warning("%s: %d of %d entries skipped for the parity check (%s)", split_path, sum(skipped.values()),
                       len(entries), reasons)
    return kept


def _entry_problem(root: str, real_root: str, entry: Any) -> str:
    """Why an entry of split.json is not used ('' when it is)."""
    if not isinstance(entry, str) or not entry or os.path.isabs(entry) or "\0" in entry:
        return "not a relative path"
    if not is_image_file(entry):
        return "not an image name"
    real = os.path.realpath(os.path.join(root, entry))
    if os.path.commonpath([real, real_root]) != real_root:
        return "outside the data root"
    if not is_image_file(real):
        return "a link to a non-image name"
    try:
        mode = os.stat(real).st_mode
    except (OSError, ValueError):
        return "missing"
    return "" if stat.S_ISREG(mode) else "not a regular file"


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
        agree += int(top1_agrees(onnx_logits, reference).sum())
        total += len(reference)
    every = np.concatenate([d.ravel() for d in diffs])
    return float(every.max()), float(every.mean()), agree / max(total, 1)


def top1_agrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row [N]: both rows finite and their top-1 class the same. A row holding NaN or inf agrees with nothing:
    argmax picks the first NaN in both, which would count a broken graph as 100 % in agreement."""
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    return finite & (a.argmax(axis=1) == b.argmax(axis=1))
