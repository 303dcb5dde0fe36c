"""fit(): the whole training run — data, model, epochs, checkpoints, history, resume, early stop, DDP."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from clf import __version__
from clf.config import Preprocess, TrainConfig
from clf.data.datasets import LabelledSet, load_labelled, verify_images
from clf.data.split import stratified_split
from clf.data.torch_dataset import ImageDataset
from clf.errors import ClfError, ModelError
from clf.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, resolve_checkpoint, save_checkpoint
from clf.models.registry import check_img_size, create_model, model_kwargs_for
from clf.models.summary import count_parameters
from clf.train import runtime as rt
from clf.atomic import atomic_copy, atomic_write_bytes
from clf.train.history import plot_curves, write_history_csv
from clf.train.loop import EpochMetrics, evaluate, train_one_epoch
from clf.train.schedule import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)

# Options a resumed run may change; everything else must match the checkpoint (it shapes the weights or the schedule).
RESUME_OVERRIDES = frozenset({"data", "epochs", "patience", "workers", "device", "amp", "quiet", "cache_images", "strict"})


class TrainReporter:
    """Progress hooks; the CLI subclasses this to draw a rich progress bar. Called on rank 0 only."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, index: int, loss: float, images_per_second: float) -> None: ...

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None: ...


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    epochs_done: int
    best_val_acc: float | None
    stopped_early: bool = False
    is_main: bool = True  # False on torchrun ranks > 0: they wrote nothing and have no val metrics to report


# ---------------------------------------------------------------- configuration and run folder


def resolve_config(given: dict[str, Any], resume: str | None = None) -> tuple[TrainConfig, dict | None]:
    """The TrainConfig for a new run (from the options given) or a resumed one (checkpoint's config + allowed overrides).

    Returns (config, checkpoint dict or None).
    """
    given = _absolute_paths(given)
    if resume is None:
        if not given.get("data"):
            raise ClfError("clf train needs DATA (a folder of class folders, or images with --labels-csv)")
        return TrainConfig(**given), None
    path = resolve_checkpoint(resume, prefer="last")
    ckpt = load_checkpoint(path)
    saved = TrainConfig.from_dict(ckpt["config"])
    for key, value in given.items():
        if key not in RESUME_OVERRIDES and value != getattr(saved, key):
            if key == "arch":
                raise ModelError(f"{path}: checkpoint is arch '{saved.arch}', not '{value}'; resume with the same --arch")
            raise ClfError(
                f"{path}: --{key.replace('_', '-')} {value} differs from the checkpoint's {getattr(saved, key)}; "
                "a resumed run keeps its training settings (start a new run to change them)"
            )
    _check_resumable_file(path, ckpt)
    overrides = {k: v for k, v in given.items() if k in RESUME_OVERRIDES}
    cfg = replace(saved, **overrides)
    if not Path(cfg.data).exists():
        raise ClfError(f"{cfg.data}: the run's data folder is gone; pass DATA to say where it is now")
    if cfg.epochs <= ckpt["epoch"]:
        raise ClfError(f"{path}: already trained {ckpt['epoch']} epochs; pass --epochs N with N > {ckpt['epoch']} to train further")
    ckpt["_path"] = str(path)
    return cfg, ckpt


RUN_FILES = ("config.json", "last.pt", "best.pt", "history.csv")


def check_run_name(name: str) -> None:
    """A run name is one folder name: no path separators, no '.' or '..' (--overwrite deletes that folder)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ClfError(f"--name {name!r}: a run name is a plain folder name (no '/', '..'); use --out for the parent folder")


def _absolute_paths(given: dict[str, Any]) -> dict[str, Any]:
    """Data paths are stored absolute: resume and export must find them from any working directory."""
    fixed = dict(given)
    for key in ("data", "labels_csv"):
        if fixed.get(key):
            fixed[key] = str(Path(fixed[key]).expanduser().resolve())
    return fixed


def _check_resumable_file(path: Path, ckpt: dict) -> None:
    """Resume continues the run folder the checkpoint sits in: it must be one, and the file its newest state."""
    run_dir = path.parent
    if not (run_dir / "config.json").exists():
        raise ClfError(f"{path}: not inside a clf run folder; resume a run folder (runs/NAME) instead")
    last = run_dir / "last.pt"
    if path.resolve() != last.resolve() and last.exists():
        newest = load_checkpoint(last)["epoch"]
        if newest > ckpt["epoch"]:
            raise ClfError(
                f"{path}: holds epoch {ckpt['epoch']} but {last} holds epoch {newest}; resuming from it would erase "
                f"the later epochs; resume {run_dir} (its last.pt)"
            )


def _unique_run_dir(out: Path, name: str, overwrite: bool) -> Path:
    check_run_name(name)
    run_dir = out / name
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ClfError(
                f"{run_dir}: run folder already exists; use --resume {run_dir} to continue it, "
                "--overwrite to start over, or another --name"
            )
        if not any((run_dir / f).exists() for f in RUN_FILES):
            raise ClfError(f"{run_dir}: exists and is not a clf run folder; --overwrite only replaces run folders")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _new_run_dir(cfg: TrainConfig, overwrite: bool, runtime: rt.Runtime) -> tuple[TrainConfig, Path]:
    """Rank 0 names and creates the run folder; every rank gets that name, or its error.

    Under torchrun each rank used to pick the default name itself, after rank 0 had created it (rank 1 saw
    `cnn-32` taken and called its run `cnn-32-2`), and a refusal (folder exists) stopped rank 0 only,
    leaving the others to die waiting in DDP's first collective.
    """
    name, error = cfg.name, None
    if runtime.is_main:
        try:
            name = cfg.name or default_run_name(cfg)
            _unique_run_dir(Path(cfg.out), name, overwrite)
        except ClfError as exc:
            error = str(exc)
    name, error = rt.broadcast_object((name, error), runtime)
    if error:
        raise ClfError(error)
    return replace(cfg, name=name), Path(cfg.out) / name


def default_run_name(cfg: TrainConfig) -> str:
    """arch-size, numbered when taken: resnet18-128, resnet18-128-2, ..."""
    base = f"{cfg.arch}-{cfg.img_size}"
    out, name, n = Path(cfg.out), base, 1
    while (out / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


# ---------------------------------------------------------------- data and model


def preprocess_for(cfg: TrainConfig) -> Preprocess:
    return Preprocess(size=(cfg.img_size, cfg.img_size), resize=cfg.resize)


def load_training_set(cfg: TrainConfig) -> LabelledSet:
    """Scan the labelled data and drop files that do not decode (each reported; fatal with --strict)."""
    labelled = load_labelled(cfg.data, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col)
    ok = verify_images(labelled.paths, strict=cfg.strict, workers=max(2, os.cpu_count() or 2))
    if len(ok) < len(labelled.paths):
        logger.warning("%d of %d images could not be read and are left out", len(labelled.paths) - len(ok), len(labelled.paths))
    return labelled.subset(ok)


def resolve_workers(requested: int, runtime: rt.Runtime) -> int:
    """-1 = auto: none on the CPU, where worker processes only take cores from the model's own threads
    (measured: 0.68 vs 0.96 of the bare step's speed for cnn at 64 px on 2 cores); on a GPU, enough to feed it."""
    if requested >= 0:
        return requested
    if not runtime.cuda:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, runtime.world_size) - 1))


def build_loaders(
    labelled: LabelledSet, cfg: TrainConfig, pre: Preprocess, runtime: rt.Runtime
) -> tuple[DataLoader, DataLoader | None, DistributedSampler | None]:
    """Train loader (augmented, shuffled, DistributedSampler under torchrun) and rank 0's val loader."""
    train_idx, val_idx = stratified_split(labelled.labels, cfg.val_split, cfg.seed)
    train_part, val_part = labelled.subset(train_idx), labelled.subset(val_idx)
    train_ds = ImageDataset(
        train_part.paths, train_part.labels, pre, train=True, hflip=cfg.hflip, rotate=cfg.rotate, cache=cfg.cache_images
    )
    workers = resolve_workers(cfg.workers, runtime)
    if cfg.cache_images:
        train_ds.fill_cache(workers=max(2, workers))  # before the workers fork: they share it copy-on-write
    sampler = None
    if runtime.distributed:
        sampler = DistributedSampler(train_ds, runtime.world_size, runtime.rank, shuffle=True, seed=cfg.seed)
    per_rank = len(train_ds) // runtime.world_size
    loader_args = dict(
        num_workers=workers,
        pin_memory=runtime.cuda,
        # Not persistent: workers restart each epoch seeded from the main torch RNG, which last.pt saves, so
        # augmentation after --resume is the same as in an uninterrupted run (a fork per epoch is cheap).
        persistent_workers=False,
    )
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=per_rank > cfg.batch_size,  # a trailing batch of 1 would break BatchNorm
        **loader_args,
    )
    val_loader = None
    if len(val_part.paths) and runtime.is_main:
        val_ds = ImageDataset(val_part.paths, val_part.labels, pre, train=False, cache=cfg.cache_images)
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size * 2, shuffle=False, **loader_args)
    logger.info("data: %d train / %d val images, %d classes", len(train_part.paths), len(val_part.paths), len(labelled.classes))
    return train_loader, val_loader, sampler


def build_model(cfg: TrainConfig, num_classes: int, runtime: rt.Runtime) -> tuple[nn.Module, dict[str, Any]]:
    model_kwargs = model_kwargs_for(cfg.arch, num_classes, cfg.img_size)
    model = create_model(cfg.arch, pretrained=cfg.pretrained, **model_kwargs)
    check_img_size(cfg.arch, cfg.img_size, model)  # one clear line now, not a shape error mid-epoch
    model = model.to(runtime.device)
    if runtime.cuda:
        model = model.to(memory_format=torch.channels_last)
    return model, model_kwargs


# ---------------------------------------------------------------- checkpoints


def _rng_state(runtime: rt.Runtime) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if runtime.cuda:
        state["cuda"] = torch.cuda.get_rng_state(runtime.device)
    return state


def _restore_rng(state: dict[str, Any], runtime: rt.Runtime) -> None:
    torch.set_rng_state(state["torch"])
    if runtime.cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], runtime.device)


def _restore_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's LR at the saved step from *this* run's schedule.

    optimizer.load_state_dict brings back the LR the previous sitting set, computed for its --epochs: after
    `--resume --epochs N` with a larger N the first resumed epoch would train (and log) the old schedule's
    nearly-finished cosine LR. LambdaLR's own formula, so an unchanged schedule gives bit-identical values.
    """
    lrs = [base_lr * factor(scheduler.last_epoch) for factor, base_lr in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports


def _check_resume_fits(ckpt: dict, classes: list[str]) -> None:
    if list(ckpt["classes"]) != list(classes):
        raise ModelError(
            f"{ckpt['_path']}: checkpoint was trained on classes {ckpt['classes']} but the data has {classes}; "
            "resume with the same data or start a new run"
        )


# ---------------------------------------------------------------- the run


@dataclass
class _State:
    """Everything that changes epoch to epoch and goes into a checkpoint."""

    epoch: int = 0
    history: list[dict[str, Any]] | None = None
    best_val_acc: float | None = None

    def best_epoch(self) -> int:
        rows = [r for r in self.history or [] if r.get("val_acc") is not None]
        if not rows:
            return self.epoch
        best = max(r["val_acc"] for r in rows)
        return min(r["epoch"] for r in rows if r["val_acc"] == best)  # the first epoch that reached it


def fit(
    cfg: TrainConfig,
    resume_ckpt: dict | None = None,
    overwrite: bool = False,
    reporter: TrainReporter | None = None,
) -> FitResult:
    """Train `cfg` (continuing `resume_ckpt` when given) and write the run folder. Returns where and how it ended."""
    runtime = rt.setup_runtime(cfg.device, cfg.amp)
    try:
        return _fit(cfg, resume_ckpt, overwrite, reporter or TrainReporter(), runtime)
    except torch.cuda.OutOfMemoryError:
        raise ClfError(
            f"out of GPU memory at --batch-size {cfg.batch_size}; try --batch-size {max(1, cfg.batch_size // 2)} "
            "(or a smaller --img-size, or --amp)"
        ) from None
    finally:
        rt.teardown_runtime(runtime)


def _fit(cfg: TrainConfig, resume_ckpt: dict | None, overwrite: bool, reporter: TrainReporter, runtime: rt.Runtime) -> FitResult:
    torch.manual_seed(cfg.seed)
    labelled = load_training_set(cfg)
    if resume_ckpt is not None:
        _check_resume_fits(resume_ckpt, labelled.classes)
    # The model before the run folder: an unknown --arch must not leave an empty folder behind (it would also
    # push the next default name to ARCH-SIZE-2).
    model, model_kwargs = build_model(cfg, len(labelled.classes), runtime)
    if resume_ckpt is not None:
        run_dir = Path(resume_ckpt["_path"]).parent
        cfg = replace(cfg, name=run_dir.name, out=str(run_dir.parent))
    else:
        cfg, run_dir = _new_run_dir(cfg, overwrite, runtime)
    trainer = _Trainer(cfg, runtime, run_dir, labelled, model, model_kwargs)
    if resume_ckpt is not None:
        trainer.restore(resume_ckpt)
    if runtime.distributed:
        torch.manual_seed(cfg.seed + 1000 * runtime.rank + trainer.state.epoch)  # each rank augments differently
    if runtime.is_main:
        _write_config(run_dir, cfg, labelled, trainer.pre, model_kwargs, trainer.params)
        if cfg.patience and trainer.val_loader is None:
            logger.warning("--patience needs a validation split; early stopping is off")
    try:
        stopped_early = trainer.run(reporter)
    except KeyboardInterrupt:
        trainer.explain_interrupt()
        raise
    state = trainer.state
    return FitResult(run_dir, state.epoch, state.best_val_acc, stopped_early, runtime.is_main)


class _Trainer:
    """The objects of one run and the epoch loop over them; `checkpoint()` is everything resume needs."""

    def __init__(self, cfg: TrainConfig, runtime: rt.Runtime, run_dir: Path, labelled: LabelledSet,
                 model: nn.Module, model_kwargs: dict[str, Any]) -> None:
        self.cfg, self.runtime, self.run_dir, self.classes = cfg, runtime, run_dir, list(labelled.classes)
        self.model, self.model_kwargs, self.params = model, model_kwargs, count_parameters(model)
        self.pre = preprocess_for(cfg)
        self.train_loader, self.val_loader, self.sampler = build_loaders(labelled, cfg, self.pre, runtime)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.state = _State(history=[])
        self.train_model: nn.Module = model
        if runtime.distributed:
            device_ids = [runtime.local_rank] if runtime.cuda else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def restore(self, ckpt: dict) -> None:
        """Model, optimizer, schedule, scaler, history and RNG exactly as last.pt left them."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        _restore_schedule(self.optimizer, self.scheduler)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = _State(ckpt["epoch"], list(ckpt["history"]), ckpt.get("best_val_acc"))
        _restore_rng(ckpt["rng"], self.runtime)
        logger.info("resuming %s after epoch %d (of %d)", self.run_dir, self.state.epoch, self.cfg.epochs)

    def checkpoint(self) -> dict[str, Any]:
        cfg, state = self.cfg, self.state
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "clf_version": __version__,
            "arch": cfg.arch,
            "model_kwargs": self.model_kwargs,
            "img_size": cfg.img_size,
            "classes": self.classes,
            "preprocess": self.pre.to_dict(),
            "config": cfg.to_dict(),
            "epoch": state.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": _rng_state(self.runtime),
            "history": state.history,
            "best_val_acc": state.best_val_acc,
            "run_name": self.run_dir.name,
            "params": self.params,
        }

    def run(self, reporter: TrainReporter) -> bool:
        """Epochs from the one after state.epoch to cfg.epochs; True when early stopping ended them."""
        for epoch in range(self.state.epoch + 1, self.cfg.epochs + 1):
            row, is_best = self.run_epoch(epoch, reporter)
            if self.runtime.is_main:
                with _interrupts_deferred():
                    _save_epoch(self.run_dir, self.checkpoint(), self.state, is_best, self.cfg)
                reporter.epoch_end(row, is_best)
            if rt.broadcast_flag(self.should_stop(epoch), self.runtime):
                logger.info("early stop: no val accuracy gain for %d epochs (best %.4f at epoch %d)",
                         self.cfg.patience, self.state.best_val_acc or 0.0, self.state.best_epoch())
                return True
            rt.barrier(self.runtime)
        return False

    def run_epoch(self, epoch: int, reporter: TrainReporter) -> tuple[dict[str, Any], bool]:
        """Train one epoch, validate, append the history row; returns (row, whether val accuracy improved)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]  # the LR this epoch starts with
        main = self.runtime.is_main
        if main:
            reporter.epoch_start(epoch, self.cfg.epochs, len(self.train_loader))
        metrics = train_one_epoch(
            self.train_model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.scaler,
            self.runtime, on_batch=reporter.batch if main else None,
        )
        train_loss, train_acc = _reduce_train_metrics(metrics, self.runtime)
        val = evaluate(self.model, self.val_loader, self.criterion, self.runtime) if self.val_loader else None
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val.loss if val else None,
            "val_acc": val.accuracy if val else None,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        state = self.state
        state.epoch = epoch
        state.history.append(row)
        is_best = val is None or state.best_val_acc is None or val.accuracy > state.best_val_acc
        if val is not None and is_best:
            state.best_val_acc = val.accuracy
        return row, is_best

    def should_stop(self, epoch: int) -> bool:
        patience = self.cfg.patience
        return bool(patience) and self.val_loader is not None and epoch - self.state.best_epoch() >= patience

    def explain_interrupt(self) -> None:
        if not self.runtime.is_main:
            return
        done, run_dir = self.state.epoch, self.run_dir
        if done == 0:
            # No last.pt yet: pointing at --resume would only fail with "no best.pt or last.pt".
            logger.warning("interrupted during epoch 1: no epoch finished, nothing to resume in %s", run_dir)
        else:
            logger.warning("interrupted during epoch %d; %s holds epoch %d; continue with: clf train --resume %s",
                        done + 1, run_dir / "last.pt", done, run_dir)


def _reduce_train_metrics(metrics: EpochMetrics, runtime: rt.Runtime) -> tuple[float, float]:
    loss_sum, correct, count = rt.all_reduce_sum(
        [metrics.loss * metrics.images, metrics.accuracy * metrics.images, float(metrics.images)], runtime
    )
    return loss_sum / max(count, 1), correct / max(count, 1)


@contextmanager
def _interrupts_deferred():
    """Let a Ctrl-C that arrives while checkpoints are written wait until they are complete."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _save_epoch(run_dir: Path, ckpt: dict[str, Any], state: _State, is_best: bool, cfg: TrainConfig) -> None:
    """last.pt every epoch, best.pt when val accuracy improved (every epoch without a split), then history + curves."""
    last = run_dir / "last.pt"
    save_checkpoint(ckpt, last)
    if is_best:
        atomic_copy(last, run_dir / "best.pt")
    write_history_csv(state.history or [], run_dir / "history.csv")
    plot_curves(state.history or [], run_dir / "curves.png", title=f"{run_dir.name} ({cfg.arch}, {cfg.img_size}px)")


def _write_config(run_dir: Path, cfg: TrainConfig, labelled: LabelledSet, pre: Preprocess,
                  model_kwargs: dict[str, Any], params: int) -> None:
    resolved = {
        "train": cfg.to_dict(),
        "arch": cfg.arch,
        "model_kwargs": model_kwargs,
        "classes": list(labelled.classes),
        "preprocess": pre.to_dict(),
        "params": params,
        "images": len(labelled.paths),
        "clf_version": __version__,
    }
    atomic_write_bytes(run_dir / "config.json", (json.dumps(resolved, indent=2) + "\n").encode())
