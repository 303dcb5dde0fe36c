"""The trainer: the objects of one run (model, optimizer, schedule, loaders) and the epoch loop over them,
with a checkpoint after every epoch that Ctrl-C and SIGTERM wait for."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clf.atomic import atomic_copy
from clf.config import Preprocess, TrainConfig
from clf.data.augment import Pipeline
from clf.data.datasets import LabelledSet
from clf.errors import IncompleteError, ModelError, Terminated, one_line
from clf.models.checkpoint import SOURCE_KEY, build_checkpoint, save_checkpoint
from clf.models.checkpoint_load import load_weights
from clf.models.layers import body_norm_layers
from clf.models.summary import count_parameters
from clf.run_files import BEST_CKPT, CURVES_FILE, HISTORY_FILE, LAST_CKPT
from clf.stop_signals import stop_signals_handled
from clf.tasks import get_task
from clf.train import runtime as rt
from clf.train.build import Split, build_loaders
from clf.train.ema import ModelEma
from clf.train.history import (
    best_epoch,
    epoch_acc,
    epoch_winner,
    next_sitting,
    patience_exhausted,
    plot_curves,
    saturation_note,
    write_history_csv,
)
from clf.train.loop import EpochMetrics, evaluate, train_one_epoch
from clf.train.distillation import distill_criterion
from clf.train.losses import build_criterion
from clf.train.mixing import Mixer
from clf.train.resume import restore_rng, restore_schedule, rng_state
from clf.train.schedule import build_optimizer, build_scheduler

# Drawing curves.png costs about a second of matplotlib on these CPUs, as much as a whole epoch of a small model on a
# small data set: it is redrawn after the first epoch, then at most this often, and always after the last epoch.
CURVES_INTERVAL_S = 30.0

logger = logging.getLogger(__name__)


class TrainReporter:
    """Progress hooks; the CLI subclasses this to draw a rich progress bar. Called on rank 0 only."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, index: int, loss: float, images_per_second: float) -> None: ...

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None: ...


@dataclass
class TrainState:
    """Everything that changes epoch to epoch and goes into a checkpoint."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_acc: float | None = None
    metric: str = "accuracy"  # the run's --metric: what ranks the epochs (clf.train.history's key)
    sitting: int = 1  # 1 for a new run, +1 each time it is resumed (history.csv's sitting column marks them)

    def best_epoch(self) -> int:
        """The epoch best.pt holds: the best by clf.train.history's key, the last one without validation."""
        best = best_epoch(self.history, self.metric)
        return self.epoch if best is None else best


class Trainer:
    """The objects of one run and the epoch loop over them; `checkpoint()` is everything resume needs.

    Args:
        before_first_save: called on rank 0 right before the run's first checkpoint is written (an --overwrite
            run removes the old run's files there, not earlier).
    """

    def __init__(self, cfg: TrainConfig, runtime: rt.Runtime, run_dir: Path, labelled: LabelledSet, split: Split,
                 pre: Preprocess, model: nn.Module, model_kwargs: dict[str, Any], augment: Pipeline,
                 before_first_save: Callable[[], None] | None = None) -> None:
        self.cfg, self.runtime, self.run_dir, self.classes = cfg, runtime, run_dir, list(labelled.classes)
        self.model, self.model_kwargs, self.params, self.pre = model, model_kwargs, count_parameters(model), pre
        self.augment = augment
        self.train_loader, self.val_loader, self.sampler = build_loaders(split, cfg, pre, runtime, augment)
        self.optimizer = build_optimizer(model, cfg)
        # --freeze-epochs: the body's LR is 0 (its groups' schedule) and its BatchNorm layers stay in eval mode
        self.frozen_norms = body_norm_layers(model, cfg.arch) if cfg.freeze_epochs else []
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        self.task = get_task(cfg.task)
        self.criterion = build_criterion(self.task, len(self.classes), cfg.label_smoothing, cfg.loss,
                                         focal_gamma=cfg.focal_gamma, class_weights=cfg.resolved_class_weights)
        if split.teacher is not None:  # clf distill: the KD loss on the teacher's targets
            self.criterion = distill_criterion(self.criterion, cfg)
        self.mixer = Mixer.from_config(cfg, len(self.classes))
        # Rank 0 alone averages and validates: DDP keeps the weights identical on every rank.
        self.ema = ModelEma(model, cfg.ema) if cfg.ema > 0 and runtime.is_main else None
        self.state = TrainState(metric=cfg.metric)
        self.before_first_save = before_first_save
        self.curves_drawn: tuple[int, float] | None = None  # (epoch, time.monotonic()) of the last curves.png
        self.train_model: nn.Module = model
        if runtime.distributed:
            device_ids = [runtime.local_rank] if runtime.cuda else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def release(self) -> None:
        """Drop the DDP wrapper (it holds the process group and its pending work) before the group is destroyed."""
        self.train_model = self.model

    def restore(self, ckpt: dict) -> None:
        """Model, optimizer, schedule, scaler, history and RNG exactly as last.pt left them.

        Raises:
            ModelError: the checkpoint's weights or training state do not fit (a damaged or hand-edited file).
        """
        source = str(ckpt.get(SOURCE_KEY) or "checkpoint")
        if ckpt.get("weights") == "ema":
            raise ModelError(f"{source}: holds the averaged (EMA) weights of its best epoch, not the weights training "
                             f"continues from; resume the run folder (its last.pt)")
        load_weights(self.model, ckpt.get("model"), source, self.cfg.arch)
        if self.ema is not None:
            self.restore_ema(ckpt, source)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            restore_schedule(self.optimizer, self.scheduler)
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            history = list(ckpt["history"])
            self.state = TrainState(ckpt["epoch"], history, ckpt.get("best_val_acc"), self.cfg.metric,
                                    sitting=next_sitting(history))
            restore_rng(ckpt["rng"], self.runtime)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:  # torch's: ValueError/RuntimeError
            raise ModelError(f"{source}: cannot restore the training state ({one_line(exc)}); the checkpoint is "
                             "damaged; resume an intact last.pt or start a new run") from None
        logger.info("resuming %s after epoch %d (of %d)", self.run_dir, self.state.epoch, self.cfg.epochs)

    def restore_ema(self, ckpt: dict, source: str) -> None:
        """The averaged weights and their update count (the decay's warm-up) as last.pt left them."""
        assert self.ema is not None
        state, updates = ckpt.get("ema"), ckpt.get("ema_updates")
        if not isinstance(state, dict) or isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise ModelError(f"{source}: --ema is on but the checkpoint has no EMA weights or update count; the "
                             "checkpoint is damaged; resume an intact last.pt or start a new run")
        load_weights(self.ema.module, state, f"{source} (EMA weights)", self.cfg.arch)
        self.ema.updates = updates

    def checkpoint(self) -> dict[str, Any]:
        state, ema = self.state, self.ema
        return build_checkpoint(
            arch=self.cfg.arch, model_kwargs=self.model_kwargs, classes=self.classes, preprocess=self.pre,
            config=self.cfg.to_dict(), epoch=state.epoch, model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None, rng=rng_state(self.runtime),
            history=state.history, best_val_acc=state.best_val_acc, run_name=self.run_dir.name, params=self.params,
            augment=self.augment.to_dict(), weights="raw", ema=ema.state_dict() if ema else None,
            ema_updates=ema.updates if ema else None,
        )

    def run(self, reporter: TrainReporter) -> bool:
        """Epochs from the one after state.epoch to cfg.epochs; True when early stopping ended them."""
        for epoch in range(self.state.epoch + 1, self.cfg.epochs + 1):
            row, is_best = self.run_epoch(epoch, reporter)
            if self.runtime.is_main:
                with interrupts_deferred():
                    self.save_epoch(is_best)
                reporter.epoch_end(row, is_best)
            if rt.broadcast_flag(self.should_stop(epoch), self.runtime):
                if self.runtime.is_main:
                    self.draw_curves()  # the early-stopped run's curves end where it ended
                logger.info("early stop: no val gain (%s, then loss) for %d epochs (best acc %.4f at epoch %d)",
                            self.cfg.metric, self.cfg.patience, self.state.best_val_acc or 0.0, self.state.best_epoch())
                self.note_saturation()
                return True
            rt.barrier(self.runtime)
        self.note_saturation()
        return False

    def note_saturation(self) -> None:
        """Once, at the end of training (rank 0): say when val accuracy saturated and the loss chose best.pt."""
        note = (saturation_note(self.state.history, self.ema is not None, self.cfg.metric) if self.runtime.is_main
                else None)
        if note:
            logger.warning("%s", note)

    def run_epoch(self, epoch: int, reporter: TrainReporter) -> tuple[dict[str, Any], bool]:
        """Train one epoch, validate, append the history row; returns (row, whether it is the new best epoch).

        Raises:
            IncompleteError: the train or validation loss is NaN or infinite (nothing of this epoch is saved).
        """
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if hasattr(self.train_loader.dataset, "set_epoch"):  # a distilled run's: the view its teacher predicted
            self.train_loader.dataset.set_epoch(epoch)
        started = time.perf_counter()
        lr = max(group["lr"] for group in self.optimizer.param_groups)  # the head's LR this epoch starts with
        main = self.runtime.is_main
        if main:
            reporter.epoch_start(epoch, self.cfg.epochs, len(self.train_loader))
        metrics = train_one_epoch(
            self.train_model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.scaler,
            self.runtime, on_batch=reporter.batch if main else None, mixer=self.mixer, ema=self.ema,
            frozen_norms=self.frozen_norms if epoch <= self.cfg.freeze_epochs else (),
        )
        train_loss, train_acc = _reduce_train_metrics(metrics, self.runtime)
        metric = self.cfg.metric
        scoring = {} if metric == "accuracy" else {"metric": metric, "classes": self.classes}  # the metric's inputs
        val = None
        if self.val_loader:
            val = evaluate(self.model, self.val_loader, self.criterion, self.runtime, **scoring)
        ema_val = None
        if self.val_loader and self.ema is not None:
            ema_val = evaluate(self.ema.module, self.val_loader, self.criterion, self.runtime, **scoring)
        self.check_finite(epoch, train_loss, val.loss if val else None, ema_val.loss if ema_val else None)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val.loss if val else None,
            "val_acc": val.accuracy if val else None,
            "ema_val_loss": ema_val.loss if ema_val else None,
            "ema_val_acc": ema_val.accuracy if ema_val else None,
            "lr": lr,
            "seconds": time.perf_counter() - started,
            "val_metric": val.metric if val else None,
            "ema_val_metric": ema_val.metric if ema_val else None,
            "sitting": self.state.sitting,
        }
        if metric != "accuracy":
            row["metric"] = metric  # for the epoch line (history.csv keeps its columns)
        state = self.state
        state.epoch = epoch
        state.history.append(row)
        # The best by the key (accuracy, then loss; clf.train.history): a full tie keeps the earlier epoch. Without
        # validation every epoch is the best (best.pt = the last epoch).
        is_best = state.best_epoch() == epoch
        accuracy = epoch_acc(row, metric)
        if is_best and accuracy is not None:
            state.best_val_acc = accuracy
        return row, is_best

    def check_finite(self, epoch: int, train_loss: float, val_loss: float | None,
                     ema_val_loss: float | None = None) -> None:
        """A diverged run stops here, on every rank, before its NaN weights can become best.pt or last.pt."""
        losses = (("training", train_loss), ("validation", val_loss), ("EMA validation", ema_val_loss))
        bad = next(((which, value) for which, value in losses if value is not None and not math.isfinite(value)), None)
        bad = rt.broadcast_object(bad, self.runtime)  # rank 0 alone validates: its verdict, and its line, for all
        if bad is None:
            return
        what = f"{bad[0]} loss became {bad[1]}"
        kept = (f"{self.run_dir / LAST_CKPT} keeps epoch {epoch - 1}" if epoch > 1
                else "no epoch was saved")
        error = IncompleteError(f"{self.run_dir}: {what} in epoch {epoch}; {kept}; try a lower --lr")
        rt.raise_on_every_rank(error)  # every rank stops here together

    def save_epoch(self, is_best: bool) -> None:
        """last.pt every epoch, best.pt when the epoch is the new best (every epoch without a split), history.csv, and
        curves.png when due (see curves_due)."""
        if self.before_first_save is not None:
            self.before_first_save()
            self.before_first_save = None
        run_dir, history = self.run_dir, self.state.history
        last = run_dir / LAST_CKPT
        ckpt = self.checkpoint()
        save_checkpoint(ckpt, last)
        if is_best:
            self.save_best(ckpt, last)
        write_history_csv(history, run_dir / HISTORY_FILE)
        if self.curves_due():
            self.draw_curves()

    def curves_due(self) -> bool:
        """After the first and the last epoch, else when the last drawing is CURVES_INTERVAL_S old."""
        return (self.curves_drawn is None or self.state.epoch >= self.cfg.epochs
                or time.monotonic() - self.curves_drawn[1] >= CURVES_INTERVAL_S)

    def draw_curves(self) -> None:
        """curves.png from the whole history, unless it already shows the last epoch."""
        if self.curves_drawn is not None and self.curves_drawn[0] == self.state.epoch:
            return
        title = f"{self.run_dir.name} ({self.cfg.arch}, {self.cfg.img_size}px)"
        if self.mixer is not None:
            title += "; train acc n/a with mixup/cutmix"
        plot_curves(self.state.history, self.run_dir / CURVES_FILE, title=title)
        self.curves_drawn = (self.state.epoch, time.monotonic())

    def save_best(self, ckpt: dict[str, Any], last: Path) -> None:
        """best.pt: a copy of last.pt when the raw weights won the epoch, else last.pt's state with the EMA weights."""
        best = self.run_dir / BEST_CKPT
        winner = epoch_winner(self.state.history[-1], self.ema is not None, self.cfg.metric)
        if winner == "raw":
            atomic_copy(last, best)
            return
        save_checkpoint({**ckpt, "model": ckpt["ema"], "weights": "ema"}, best)
        logger.debug("best.pt holds the EMA weights of epoch %d", self.state.epoch)

    def should_stop(self, epoch: int) -> bool:
        """--patience epochs since the best epoch by the key (the run's metric, then loss)."""
        history = self.state.history
        return self.val_loader is not None and patience_exhausted(history, self.cfg.patience, self.cfg.metric)

    def explain_interrupt(self, replacing: bool, terminated: bool) -> None:
        """The one warning after Ctrl-C or SIGTERM: what is saved and how to continue."""
        if not self.runtime.is_main:
            return
        done, run_dir = self.state.epoch, self.run_dir
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        if done == 0 and replacing:
            logger.warning("%s during epoch 1: the old run in %s was left as it was (--overwrite replaces it only "
                           "when the new run's first epoch is saved)", what, run_dir)
        elif done == 0:
            # No last.pt yet: pointing at --resume would only fail.
            logger.warning("%s during epoch 1: %s in %s; start it again with --overwrite", what,
                           "no finished epoch to resume", run_dir)
        else:
            logger.warning("%s during epoch %d; %s holds epoch %d; continue with: clf train --resume %s",
                           what, done + 1, run_dir / LAST_CKPT, done, run_dir)


def _reduce_train_metrics(metrics: EpochMetrics, runtime: rt.Runtime) -> tuple[float, float | None]:
    accuracy = metrics.accuracy
    loss_sum, correct, count = rt.all_reduce_sum(
        [metrics.loss * metrics.images, (accuracy or 0.0) * metrics.images, float(metrics.images)], runtime
    )
    return loss_sum / max(count, 1), None if accuracy is None else correct / max(count, 1)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Let Ctrl-C or SIGTERM that arrive while checkpoints are written wait until they are complete.

    Each signal's handler is put back exactly as it was afterwards; a signal that was ignored (SIG_IGN, as a
    background job inherits SIGINT) stays ignored (clf.stop_signals). A deferred SIGTERM is raised as Terminated, a
    SIGINT as KeyboardInterrupt.
    """
    caught: list[int] = []
    with stop_signals_handled(lambda received, frame: caught.append(received)):
        yield
    if signal.SIGTERM in caught:
        raise Terminated()
    if caught:
        raise KeyboardInterrupt
