"""Shared bits of the training tests: a tiny sample competition and short `fit` calls (32 px cnn, CPU, no workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clf.data.sample import generate_sample_competition
from clf.train import trainer as trainer_module
from clf.train.fit import FitResult, fit, resolve_config

# Small enough for a busy 2-core box: 12 images per class -> 40 train / 8 val, 5 batches of 8 per epoch.
# EMA off unless a test is about it (tests/test_ema.py and the EMA cases below set it): the default is 0.999.
TINY = dict(arch="cnn", img_size=32, batch_size=8, workers=0, device="cpu", quiet=True, lr=3e-3, seed=0, ema=0.0)


def make_data(root: Path, n_per_class: int = 12, classes: tuple[str, ...] | None = None) -> Path:
    """Write the sample competition under `root` and return its labelled train/ folder."""
    extra = {} if classes is None else {"classes": classes}
    summary = generate_sample_competition(root, n_train_per_class=n_per_class, n_test=4, image_size=32, **extra)
    return Path(summary["train_dir"])


def make_easy_data(root: Path, n_per_class: int = 40) -> Path:
    """Two classes a 32 px cnn tells apart within two epochs (the bright half: left or top), so validation
    saturates at accuracy 1.00 while the loss keeps falling. Returns the labelled folder."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("left", "top"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(n_per_class):
            image = rng.normal(60, 25, (32, 32, 3))
            half = (slice(None), slice(0, 16)) if name == "left" else (slice(0, 16), slice(None))
            image[half] += 140
            cv2.imwrite(str(root / name / f"{index:02d}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return root


def train(data: Path, out: Path, name: str, **options: Any) -> FitResult:
    """A new run through the library, as `clf train` builds it."""
    cfg, _ = resolve_config({**TINY, "data": str(data), "out": str(out), "name": name, **options})
    return fit(cfg)


def resume(run_dir: Path, **options: Any) -> FitResult:
    """`clf train --resume RUN_DIR` with the per-machine options a user passes again."""
    cfg, ckpt = resolve_config({"workers": 0, "device": "cpu", "quiet": True, **options}, str(run_dir))
    return fit(cfg, resume_ckpt=ckpt)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def without_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows less what differs between a run trained in one go and the same run resumed: the time each epoch
    took and the sitting that trained it."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "sitting")} for row in rows]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ}"


def interrupt_in_epoch(monkeypatch, epoch: int, after_batches: int = 2) -> None:
    """Ctrl-C after `after_batches` optimizer steps of the `epoch`-th epoch this process trains."""
    real = trainer_module.train_one_epoch
    calls = []

    def train_one_epoch(model, loader, *args, **kwargs):
        calls.append(1)
        if len(calls) < epoch:
            return real(model, loader, *args, **kwargs)

        def until_interrupted():
            for index, batch in enumerate(loader):
                if index == after_batches:
                    raise KeyboardInterrupt
                yield batch

        return real(model, until_interrupted(), *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_one_epoch", train_one_epoch)
