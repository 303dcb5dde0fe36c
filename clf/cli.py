"""The `clf` command line: parse, build a config, call the library, print with rich. No logic here.

Heavy libraries (torch, timm, onnx, onnxruntime) are imported inside the commands that need them,
so `clf --help` answers instantly.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clf.config import (AUGMENT_PRESETS, AUTO_AUGMENTS, AVERAGES, MAX_INPUT_SIZE, DEFAULT_ATOL, DEFAULT_ATOL_FP16, ID_FORMATS, OPTIMIZERS, RESIZE_MODES, SCHEDULERS, TOPK_FORMATS,
                        TRAIN_DEVICES, TTA_VIEWS, EvalConfig, InferConfig, TrainConfig)
from clf.config import (CALIBRATION_METHODS, DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT,
                        DEFAULT_TRITON_MAX_BATCH)
from clf.choices import DEVICES, EXPORTERS, MAX_BATCH, MAX_OPSET, MIN_OPSET, OPSETS
from clf.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, ClfError, ParityError, Terminated

if TYPE_CHECKING:  # the export results' types, for the tables below (their modules import torch/onnx)
    from clf.export.int8 import Int8Report
    from clf.export.onnx_export import ExportResult
    from clf.export.parity import ParityReport
    from clf.export.triton import TritonResult

# True once the app runs as the process itself (the `clf` script, `python -m clf`), not in-process (CliRunner).
_RUNS_AS_PROCESS = {"enabled": False}


class _ClfTyper(typer.Typer):
    """The app as the `clf` script and `python -m clf` call it: once its command has ended, the process only exits.

    A Ctrl-C or SIGTERM from then on (torch's teardown takes a while) used to land in a finaliser, e.g. a
    WeakKeyDictionary callback, and print "Exception ignored in: ... KeyboardInterrupt" after the work was done:
    the command's own end ignores them (`_ignore_late_signals`), and the exit code stays the command's.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _RUNS_AS_PROCESS["enabled"] = True
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _ignore_late_signals()


def _ignore_late_signals() -> None:
    """The command's outcome is settled: SIGINT and SIGTERM are ignored for the rest of the process (its teardown).

    Only when the app is the process (in-process callers keep their handlers) and on the main thread."""
    import signal
    import threading

    if _RUNS_AS_PROCESS["enabled"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


app = _ClfTyper(
    name="clf",
    help="Image classification: images -> train -> ONNX (+ parity proof) -> batched inference -> submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: typer's rich help imports a Markdown parser (0.1 s of every --help)
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)
logger = logging.getLogger("clf")


def _setup_logging(verbose: bool = False) -> Callable[[], None]:
    """Library modules log through `logging`; show their warnings (bad images, fallbacks) on stderr.

    On a terminal rich draws them; in a log file or CI each record stays one plain line (rich would wrap it
    at 80 columns and break grep). Returns the function that puts the `clf` logger back as it was: the
    command line configures logging for one invocation and restores it on exit (tests invoke it many times
    in one process).
    """
    if err_console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("clf")
    saved = (list(root.handlers), root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False

    def restore() -> None:
        root.handlers[:], level, root.propagate = saved[0], saved[1], saved[2]
        root.setLevel(level)

    return restore


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _handle_sigterm() -> Callable[[], None]:
    """SIGTERM (a job scheduler's stop) unwinds like Ctrl-C: saves in progress finish, temp files go, exit 143.

    Only where the default action was in place: a SIGTERM that the parent chose to ignore stays ignored.
    Returns the function that restores the previous handler.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ClfError into one red line and its exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Each way out ignores late signals first: a second Ctrl-C while the line is printed (or under torchrun, the
        # stop signal torchrun sends this rank) must not replace the exit code or print a traceback.
        try:
            return command(*args, **kwargs)
        except ClfError as exc:
            _ignore_late_signals()
            # escape: a path like data/[2024]/ is text, not rich markup (it vanished, or "[/x]" crashed the print)
            err_console.print(f"[bold red]error:[/] {escape(_one_line_text(str(exc)))}", highlight=False,
                              soft_wrap=True)
            if _under_torchrun():
                _end_torchrun_worker(exc.exit_code, meet_other_ranks=exc.every_rank)
            raise typer.Exit(exc.exit_code) from None
        except Terminated:
            _ignore_late_signals()
            err_console.print("[yellow]terminated (SIGTERM)[/]")
            raise typer.Exit(EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            _ignore_late_signals()
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as exc:  # an output path that cannot be written, a disk that is full, ...
            _ignore_late_signals()
            where = exc.filename or "clf"
            err_console.print(f"[bold red]error:[/] {escape(str(where))}: {escape(exc.strerror or str(exc))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        finally:
            _ignore_late_signals()

    return wrapper


def _one_line_text(text: str) -> str:
    """The error stays one line when a path holds a newline or other control character: shown escaped."""
    return "".join(repr(c)[1:-1] if c.isprintable() is False and c != "\t" else c for c in text)


def _non_empty_path(text: str, name: str, what: str) -> Path:
    """A path argument; "" (an unset shell variable) is refused, not read as the current folder."""
    if not text.strip():
        raise ClfError(f"{name} is empty; give {what}")
    return Path(text)


def _choices(values: tuple[str, ...]) -> str:
    """--help shows the library's own choice list; the config checks the value, once, with one error line."""
    return "[" + "|".join(values) + "]"


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging, onnxruntime's own log too.")] = False,
) -> None:
    """clf: from a folder of images to a competition submission and a deployable ONNX model."""
    ctx.call_on_close(_setup_logging(verbose))
    ctx.call_on_close(_handle_sigterm())


@app.command("sample-data")
@user_errors
def sample_data(
    out_dir: Annotated[str, typer.Argument(metavar="OUT_DIR", help="Folder to write the sample competition into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = 0,
    per_class: Annotated[int, typer.Option(help="Training images per class.")] = 60,
    test: Annotated[int, typer.Option(help="Unlabelled test images.")] = 80,
    size: Annotated[int, typer.Option(help="Image side in pixels, 16..1024.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace clf's own earlier sample data there (nothing else).")] = False,
) -> None:
    """Write a small, learnable, competition-shaped dataset: train/<class>/, test/, sample_submission.csv."""
    from clf.data.sample import generate_sample_competition

    summary = generate_sample_competition(
        _non_empty_path(out_dir, "OUT_DIR", "the folder to write the sample competition into"), seed=seed, n_train_per_class=per_class, n_test=test, image_size=size, overwrite=overwrite
    )
    console.print(
        f"wrote {summary['n_train']} training images in {len(summary['classes'])} classes "
        f"({', '.join(summary['classes'])}) and {summary['n_test']} test images to {escape(str(out_dir))}",
        highlight=False,
    )


@app.command("models")
@user_errors
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Filter, e.g. 'resnet*' or '*coatnet*'.")] = None,
    params: Annotated[bool, typer.Option("--params", help="Add parameter counts and FLOPs (builds each model).")] = False,
    img_size: Annotated[int, typer.Option(help="Input size for --params FLOPs.")] = 224,
    num_classes: Annotated[int, typer.Option(help="Classes for --params.")] = 1000,
) -> None:
    """List trainable architectures: clf's own `cnn`, torchvision's `alexnet`, every timm model."""
    from clf.models.registry import list_models

    if img_size < 1:
        raise ClfError(f"--img-size must be >= 1, got {img_size}")
    if img_size > MAX_INPUT_SIZE:  # 100000 asked torch for 120 GB and died with its traceback
        raise ClfError(f"--img-size must be <= {MAX_INPUT_SIZE}, got {img_size}")
    if num_classes < 1:
        raise ClfError(f"--num-classes must be >= 1, got {num_classes}")
    if num_classes > MAX_MODELS_CLASSES:
        raise ClfError(f"--num-classes must be <= {MAX_MODELS_CLASSES}, got {num_classes}")
    names = list_models(pattern)
    if not names:
        raise ClfError(f"no architecture matches {pattern!r}; try `clf models` without a pattern")
    table = Table(title=f"{len(names)} architectures", show_lines=False)
    table.add_column("arch")
    if params and len(names) > 100:
        raise ClfError(f"--params would build {len(names)} models; narrow the list with a PATTERN such as 'resnet*'")
    if params:
        from clf.models.registry import check_img_size, create_model
        from clf.models.summary import count_flops, count_parameters

        table.add_column("params", justify="right")
        table.add_column(f"GFLOPs @{img_size}", justify="right")
        for name in names:
            model = create_model(name, num_classes=num_classes, img_size=img_size)
            check_img_size(name, img_size, model)  # one line, not a shape error from the FLOP counter
            flops = count_flops(model, img_size)
            table.add_row(name, f"{count_parameters(model) / 1e6:.2f}M", f"{flops / 1e9:.3f}")
    else:
        for name in names:
            table.add_row(name)
    console.print(table)


class _RichTrainReporter:
    """Draws a rich progress bar per epoch and one summary line per epoch (quiet: summary lines only)."""

    def __init__(self, show_progress: bool) -> None:
        self.show_progress = show_progress
        self.progress = None
        self.task = None
        self.epochs = 0

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        if not self.show_progress:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.0f} img/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=batches, loss=0.0, ips=0.0)

    def batch(self, index: int, loss: float, images_per_second: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=index + 1, loss=loss, ips=images_per_second)

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        # train acc is None with mixup/cutmix (blended labels): "-", never a misleading number
        train_acc = "-" if row.get("train_acc") is None else f"{row['train_acc']:.4f}"
        val = ""
        if row.get("val_acc") is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
        if row.get("ema_val_acc") is not None:
            val += f"  ema loss {row['ema_val_loss']:.4f} acc {row['ema_val_acc']:.4f}"
        if val and is_best:
            val += "  [green]best[/]"
        console.print(
            f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f} acc {train_acc}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s",
            highlight=False,
        )


def _train_default(name: str) -> Any:
    """TrainConfig's default for a field: --help shows the real value, typed once in clf/config.py."""
    return TrainConfig.__dataclass_fields__[name].default


def _given_options(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user typed (or set through the environment), by TrainConfig field name.

    By the source's name: typer carries its own copy of click, whose ParameterSource is not click's.
    """
    typed = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    return {name: value for name, value in values.items()
            if getattr(ctx.get_parameter_source(name), "name", None) in typed}


# The augmentation flags of `clf train` and `clf augment-preview`: None takes the --augment preset's value.
_FROM_PRESET = " [default: from --augment]"
AugmentOption = Annotated[str, typer.Option(metavar=_choices(AUGMENT_PRESETS), help="Augmentation preset; the flags below override single ops of it (see `clf augment-preview`).")]
HflipOption = Annotated[Optional[float], typer.Option(help="Horizontal flip probability; 0 disables (digits, text)." + _FROM_PRESET)]
VflipOption = Annotated[Optional[float], typer.Option(help="Vertical flip probability." + _FROM_PRESET)]
RotateOption = Annotated[Optional[float], typer.Option(help="Rotation range in degrees; 0 disables." + _FROM_PRESET)]
CropScaleOption = Annotated[Optional[float], typer.Option(help="Random-resized-crop: the smallest crop's area fraction; 1 disables." + _FROM_PRESET)]
TranslateOption = Annotated[Optional[float], typer.Option(help="Random shift by up to this fraction of each side (pad-and-crop, mirrored border, no zoom), 0..0.5; 0 disables." + _FROM_PRESET)]
ColorJitterOption = Annotated[Optional[float], typer.Option(help="Brightness/contrast/saturation jitter strength (hue a quarter of it); 0 disables." + _FROM_PRESET)]
GrayscaleOption = Annotated[Optional[float], typer.Option(help="Random grayscale probability." + _FROM_PRESET)]
BlurOption = Annotated[Optional[float], typer.Option(help="Gaussian blur probability." + _FROM_PRESET)]
EraseOption = Annotated[Optional[float], typer.Option(help="Random erasing probability." + _FROM_PRESET)]
AutoAugmentOption = Annotated[Optional[str], typer.Option(metavar=_choices(AUTO_AUGMENTS), help="Policy: trivial (TrivialAugment-wide) or rand (RandAugment, 2 ops at magnitude 9)." + _FROM_PRESET)]

MAX_MODELS_CLASSES = 100_000  # `clf models --params`: a head this wide still fits in memory


@app.command("train")
@user_errors
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(help="Labelled images: DATA/<class>/*.jpg, or a folder with --labels-csv. Optional with --resume, or when --config gives it.")] = None,
    arch: Annotated[str, typer.Option(help="Architecture (see `clf models`): cnn, alexnet, resnet18, rexnet_100, coatnet_0_rw_224, ...")] = _train_default("arch"),
    epochs: Annotated[int, typer.Option(help="Total epochs; may be raised on --resume to train further.")] = _train_default("epochs"),
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (per process under torchrun). [default: 32, smaller for small data: at least 16 steps an epoch]")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Square input size in pixels. [default: 64 for cnn, 224 for the others]")] = None,
    lr: Annotated[float, typer.Option(help="Base learning rate.")] = _train_default("lr"),
    optimizer: Annotated[str, typer.Option(metavar=_choices(OPTIMIZERS), help="Optimizer.")] = _train_default("optimizer"),
    scheduler: Annotated[str, typer.Option(metavar=_choices(SCHEDULERS), help="LR schedule after warmup.")] = _train_default("scheduler"),
    warmup_epochs: Annotated[int, typer.Option(help="Linear LR warmup epochs.")] = _train_default("warmup_epochs"),
    weight_decay: Annotated[float, typer.Option(help="Weight decay (not on biases and norms).")] = _train_default("weight_decay"),
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the cross-entropy loss.")] = _train_default("label_smoothing"),
    val_split: Annotated[float, typer.Option(help="Stratified validation fraction.")] = _train_default("val_split"),
    no_val: Annotated[bool, typer.Option("--no-val", help="Train on all the data (best.pt = last epoch).")] = False,
    augment: AugmentOption = _train_default("augment"),
    hflip: HflipOption = None,
    vflip: VflipOption = None,
    rotate: RotateOption = None,
    crop_scale: CropScaleOption = None,
    translate: TranslateOption = None,
    color_jitter: ColorJitterOption = None,
    grayscale: GrayscaleOption = None,
    blur: BlurOption = None,
    erase: EraseOption = None,
    auto_augment: AutoAugmentOption = None,
    mixup: Annotated[float, typer.Option(help="Mixup Beta alpha (e.g. 0.2); 0 disables.")] = _train_default("mixup"),
    cutmix: Annotated[float, typer.Option(help="CutMix Beta alpha (e.g. 1.0); 0 disables.")] = _train_default("cutmix"),
    mix_prob: Annotated[float, typer.Option(help="Probability that a batch is mixed (with --mixup/--cutmix).")] = _train_default("mix_prob"),
    mix_switch: Annotated[float, typer.Option(help="Probability of CutMix rather than mixup when both are on.")] = _train_default("mix_switch"),
    ema: Annotated[float, typer.Option(help="EMA decay of the weights (e.g. 0.999), validated beside the raw weights; 0 disables.")] = _train_default("ema"),
    drop_path: Annotated[float, typer.Option(help="Stochastic depth rate (timm models that have it).")] = _train_default("drop_path"),
    dropout: Annotated[Optional[float], typer.Option(help="Dropout before the classifier. [default: the architecture's own]")] = None,
    resize: Annotated[str, typer.Option(metavar=_choices(RESIZE_MODES), help="stretch, or shorter_crop (shorter side + center crop).")] = _train_default("resize"),
    workers: Annotated[int, typer.Option(help="DataLoader worker processes (0 = in the main process; -1 = auto: 0 on CPU, up to 8 on GPU).")] = _train_default("workers"),
    seed: Annotated[int, typer.Option(help="Random seed (split, init, shuffling, augmentation).")] = _train_default("seed"),
    name: Annotated[str, typer.Option(help="Run name (empty: ARCH-SIZE, numbered when taken).")] = _train_default("name"),
    out: Annotated[str, typer.Option(help="Folder holding run folders.")] = _train_default("out"),
    resume: Annotated[Optional[str], typer.Option(help="Continue a run folder (its last.pt) or a checkpoint.")] = None,
    patience: Annotated[int, typer.Option(help="Early stop after P epochs without a val gain (accuracy, then lower loss; 0 = off).")] = _train_default("patience"),
    device: Annotated[str, typer.Option(metavar=_choices(TRAIN_DEVICES), help="Training device.")] = _train_default("device"),
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16, else fp16).")] = _train_default("amp"),
    cache_images: Annotated[Optional[bool], typer.Option("--cache-images/--no-cache-images", help="Keep decoded, resized images in RAM. [default: auto, when they take at most 2 GiB and a quarter of the free memory]", show_default=False)] = _train_default("cache_images"),
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start from timm's pretrained weights (local cache only).")] = _train_default("pretrained"),
    pretrained_path: Annotated[Optional[str], typer.Option(help="Start from weights you have: a clf checkpoint (best.pt, last.pt, a run folder), a torch.save state dict or .safetensors; the head is re-initialised for another class count.")] = _train_default("pretrained_path"),
    layer_decay: Annotated[Optional[float], typer.Option(help="Layer-wise LR decay D (e.g. 0.75): the head trains at --lr, each earlier layer at D times the next one's. [default: off]")] = _train_default("layer_decay"),
    freeze_epochs: Annotated[int, typer.Option(help="Train only the head for the first N epochs (body frozen, its BatchNorm in eval mode), then everything.")] = _train_default("freeze_epochs"),
    labels_csv: Annotated[Optional[str], typer.Option(help="CSV of filename,label for the images in DATA (Kaggle style).")] = _train_default("labels_csv"),
    id_col: Annotated[str, typer.Option(help="Filename column of --labels-csv.")] = _train_default("id_col"),
    label_col: Annotated[str, typer.Option(help="Label column of --labels-csv.")] = _train_default("label_col"),
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first unreadable image instead of skipping it.")] = _train_default("strict"),
    overwrite: Annotated[bool, typer.Option(help="Replace a run folder of the same name (clf's own files only, once the new run's first epoch is saved).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, one line per epoch.")] = _train_default("quiet"),
    folds: Annotated[Optional[int], typer.Option(help="Cross-validate: K stratified folds, K runs in runs/NAME/fold-k, then oof.csv and the CV score (--resume runs/NAME continues the group).")] = _train_default("folds"),
    fold_seed: Annotated[int, typer.Option(help="Seed of the fold assignment (with --folds).")] = _train_default("fold_seed"),
    refit: Annotated[bool, typer.Option("--refit", help="After the validated run, train the same recipe on every image for the epoch count validation chose, in runs/NAME/refit (--resume runs/NAME continues either).")] = _train_default("refit"),
    config: Annotated[Optional[str], typer.Option(help="Settings from a .yaml/.yml/.toml file (keys: the option names), or a run's config.json to replay its recipe; flags given here win over the file.")] = None,
) -> None:
    """Train ARCH on DATA: writes runs/NAME/ (config.json, split.json, history.csv, curves.png, best.pt, last.pt)."""
    from clf.train.fit import fit, resolve_config
    from clf.train.folds import wants_folds
    from clf.train.refit import wants_refit

    values = dict(
        data=data, arch=arch, epochs=epochs, batch_size=batch_size, img_size=img_size,
        lr=lr, optimizer=optimizer, scheduler=scheduler, warmup_epochs=warmup_epochs, weight_decay=weight_decay,
        label_smoothing=label_smoothing, val_split=val_split, augment=augment, hflip=hflip, vflip=vflip, rotate=rotate,
        crop_scale=crop_scale, color_jitter=color_jitter, grayscale=grayscale, blur=blur, erase=erase,
        translate=translate,
        auto_augment=auto_augment, mixup=mixup, cutmix=cutmix, mix_prob=mix_prob, mix_switch=mix_switch, ema=ema,
        drop_path=drop_path, dropout=dropout, resize=resize,
        workers=workers, seed=seed, name=name, out=out, patience=patience, device=device, amp=amp,
        cache_images=cache_images, pretrained=pretrained, pretrained_path=pretrained_path, layer_decay=layer_decay,
        freeze_epochs=freeze_epochs, labels_csv=labels_csv, id_col=id_col, label_col=label_col,
        strict=strict, folds=folds, fold_seed=fold_seed, refit=refit,
    )
    given = _given_options(ctx, values)
    if no_val:
        given["val_split"] = 0.0
    if config is not None:
        from clf.train.config_file import read_config_file, settings_under_flags

        given = settings_under_flags(read_config_file(config), given)
    given.setdefault("quiet", quiet)  # per sitting: a resumed run does not inherit an earlier sitting's --quiet
    if _under_torchrun():
        from clf.train.runtime import meet_at_exit

        meet_at_exit()  # user_errors prints a shared error on every rank, then the ranks meet before exiting
    if wants_folds(given, resume):
        _train_folds(given, resume, overwrite)
        return
    if wants_refit(given, resume):
        _train_refit(given, resume, overwrite)
        return
    cfg, ckpt = resolve_config(given, resume)
    if cfg.quiet:
        logger.setLevel(max(logger.level, logging.WARNING))  # --quiet: epoch lines and warnings only
    reporter = _RichTrainReporter(show_progress=console.is_terminal and not cfg.quiet)
    result = fit(cfg, resume_ckpt=ckpt, overwrite=overwrite, reporter=reporter)
    if result.is_main:  # under torchrun rank 0 prints the one summary line
        best = "n/a (no validation split)" if result.best_val_acc is None else f"{result.best_val_acc:.4f}"
        stop = " (early stop)" if result.stopped_early else ""
        console.print(f"[bold]{escape(str(result.run_dir))}[/]: {result.epochs_done} epochs{stop}, best val acc {best}",
                      highlight=False)
    if result.distributed:
        _end_torchrun_worker(0)


def _train_folds(given: dict[str, Any], resume: Optional[str], overwrite: bool) -> None:
    """`clf train --folds K` (or --resume of a fold group): the folds one after the other, then the CV table."""
    from clf.train.folds import DONE, RESUME, fit_group

    if given["quiet"]:
        logger.setLevel(max(logger.level, logging.WARNING))
    reporter = _RichTrainReporter(show_progress=console.is_terminal and not given["quiet"])

    def on_fold(fold: int, folds: int, run_dir: Path, action: str) -> None:
        how = {DONE: "finished earlier, kept", RESUME: "resuming from its last.pt"}.get(action, "training")
        console.print(f"[bold]fold {fold + 1}/{folds}[/] {escape(str(run_dir))}: {how}", highlight=False)

    result = fit_group(given, resume, overwrite=overwrite, reporter=reporter, on_fold=on_fold)
    if result.is_main:
        console.print(_cv_table(result))
    if result.distributed:
        _end_torchrun_worker(0)


def _train_refit(given: dict[str, Any], resume: str | None, overwrite: bool) -> None:
    """`clf train --refit` (or --resume of such a run): the validated run, then the refit; one line for each."""
    from clf.train.refit import DONE, fit_with_refit

    if given["quiet"]:
        logger.setLevel(max(logger.level, logging.WARNING))
    reporter = _RichTrainReporter(show_progress=console.is_terminal and not given["quiet"])
    result = fit_with_refit(given, resume, overwrite=overwrite, reporter=reporter)
    if result.is_main:
        validated, plan, refit = result.validated, result.plan, result.refit
        stop = " (early stop)" if validated.stopped_early else ""
        acc = "n/a" if plan.val_acc is None else f"{plan.val_acc:.4f}"
        console.print(f"[bold]{escape(str(validated.run_dir))}[/]: {validated.epochs_done} epochs{stop}, best val acc "
                      f"{acc} at epoch {plan.epochs} ({plan.weights} weights)", highlight=False)
        earlier = " (finished earlier)" if result.refit_action == DONE else ""
        console.print(f"[bold]{escape(str(refit.run_dir))}[/]: refit on all {result.images} images for "
                      f"{refit.epochs_done} epochs{earlier}", highlight=False)
    if result.distributed:
        _end_torchrun_worker(0)


def _cv_table(result: Any) -> Table:
    """Each fold's best val accuracy, then mean ± std and the out-of-fold accuracy and log-loss."""
    cv = result.group.cv
    table = Table(title=f"{escape(str(result.group_dir))}: {len(result.folds)}-fold cross-validation")
    for column, justify in (("fold", "left"), ("val images", "right"), ("best val acc", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for fold in result.folds:
        acc = "n/a" if fold.val_acc is None else f"{fold.val_acc:.4f}"
        table.add_row(escape(fold.run_dir.name), str(fold.val_images), acc, "" if fold.trained_now else "earlier")
    table.add_section()
    table.add_row("mean ± std", "", f"{cv['mean_val_acc']:.4f} ± {cv['std_val_acc']:.4f}", "")
    table.add_row("out-of-fold", str(sum(f.val_images for f in result.folds)), f"{cv['oof_acc']:.4f}",
                  f"log-loss {cv['oof_log_loss']:.4f}")
    return table


@app.command("augment-preview")
@user_errors
def augment_preview(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Labelled images (DATA/<class>/*.jpg, or a folder with --labels-csv), or a run folder or fold group: its own recorded augmentation.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The PNG to write.")] = "augment-preview.png",
    rows: Annotated[int, typer.Option(help="Images shown, one per row, spread over the classes (1..64).")] = 8,
    columns: Annotated[int, typer.Option(help="Augmented draws per image, 1..64 (the first column is the image itself); the grid holds at most 100 megapixels.")] = 8,
    arch: Annotated[str, typer.Option(help="Architecture (sets the default --img-size as in `clf train`).")] = _train_default("arch"),
    img_size: Annotated[Optional[int], typer.Option(help="Square input size in pixels. [default: as `clf train`]")] = None,
    resize: Annotated[str, typer.Option(metavar=_choices(RESIZE_MODES), help="stretch, or shorter_crop.")] = _train_default("resize"),
    augment: AugmentOption = _train_default("augment"),
    hflip: HflipOption = None,
    vflip: VflipOption = None,
    rotate: RotateOption = None,
    crop_scale: CropScaleOption = None,
    translate: TranslateOption = None,
    color_jitter: ColorJitterOption = None,
    grayscale: GrayscaleOption = None,
    blur: BlurOption = None,
    erase: EraseOption = None,
    auto_augment: AutoAugmentOption = None,
    labels_csv: Annotated[Optional[str], typer.Option(help="CSV of filename,label for the images in DATA.")] = None,
    id_col: Annotated[str, typer.Option(help="Filename column of --labels-csv.")] = _train_default("id_col"),
    label_col: Annotated[str, typer.Option(help="Label column of --labels-csv.")] = _train_default("label_col"),
    seed: Annotated[int, typer.Option(help="Seed of the images chosen and of the draws.")] = 0,
) -> None:
    """See what the model sees: a PNG grid, a row per image, its preprocessed self then augmented draws."""
    from clf.data.folds import is_fold_group
    from clf.data.preview import check_grid_counts, is_run_folder, plan_for_data, plan_for_group, plan_for_run, \
        write_plan_preview

    check_grid_counts(rows, columns)  # the pixel count is checked once the image size is known, before any image
    values = dict(arch=arch, img_size=img_size, resize=resize, augment=augment, hflip=hflip, vflip=vflip,
                  rotate=rotate, crop_scale=crop_scale, color_jitter=color_jitter, grayscale=grayscale, blur=blur,
                  erase=erase, auto_augment=auto_augment, labels_csv=labels_csv, id_col=id_col, label_col=label_col,
                  translate=translate)
    given = _given_options(ctx, values)
    source = _non_empty_path(data, "DATA", "a data folder or a run folder")
    group = is_fold_group(source)
    if group or is_run_folder(source):
        if given:
            what = "a fold group's" if group else "a run folder's"
            raise ClfError(f"{source}: {what} augmentation is the one it trained with; drop "
                           f"{', '.join(TrainConfig.flag(name) for name in given)} or preview its data folder")
        plan = plan_for_group(source) if group else plan_for_run(source)
    else:
        plan = plan_for_data(TrainConfig(data=str(source), seed=seed, **given))
    shown = write_plan_preview(plan, output, rows=rows, columns=columns, seed=seed)
    console.print(f"[bold]{escape(output)}[/]: {len(shown)} images x {columns} draws of {escape(plan.source)} "
                  f"({len(plan.pipeline)} ops: {', '.join(op.name for op in plan.pipeline.ops) or 'none'})",
                  highlight=False)


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _end_torchrun_worker(code: int = 0, meet_other_ranks: bool = False) -> None:
    """Exit a torchrun worker now with `code`, output flushed, without the interpreter's teardown.

    DistributedDataParallel keeps the gloo process group alive after destroy_process_group (torch 2.x: its
    threads `gloo_tcp_loop` and `pt_gloo_runloop` are still running at exit, however the wrapper is released).
    Tearing them down with the interpreter aborted about 1 run in 9 under load: "terminate called without an
    active exception", SIGABRT, and torchrun reported a failure for a finished run. On a failure, every rank
    reports the same error; torchrun sends SIGTERM to the others as soon as one exits, so a rank still in the
    (slow) teardown was reported as killed (-15) instead of its own exit code.

    An error every rank raised together (`meet_other_ranks`) waits until each rank has printed it: otherwise the
    first rank to exit had torchrun stop a slower sibling before its line (seen under load).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if meet_other_ranks:
        from clf.train.runtime import meet_other_ranks as meet

        meet()
    logging.shutdown()
    os._exit(code)


@app.command("runs")
@user_errors
def runs(
    root_text: Annotated[str, typer.Argument(metavar="ROOT", help="Folder holding run folders.")] = "runs",
    expand: Annotated[bool, typer.Option("--folds", "--expand", help="List each fold group's runs beneath it.")] = False,
) -> None:
    """The table of training runs: arch, epochs, batch size, image size, best val accuracy, params, time.

    Fold groups (`clf train --folds K`) get a table of their own, one line each with the CV score.
    """
    from clf.train.runs import collect_groups, collect_runs

    root = _non_empty_path(root_text, "ROOT", "the folder holding run folders (default: runs)")
    summaries = collect_runs(root)
    groups = collect_groups(root)
    if not summaries and not groups:
        raise ClfError(f"{root}: no training runs found (a run folder holds config.json); train one with `clf train`")
    if summaries:
        _print_runs_table(root, summaries)
    if groups:
        console.print(_groups_table(root, groups, expand))


def _print_runs_table(root: Path, summaries: list[Any]) -> None:
    table = Table(title=f"training runs in {escape(str(root))}")
    for column, justify in (("run", "left"), ("arch", "left"), ("epochs", "right"), ("batch", "right"),
                            ("img size", "right"), ("best val acc", "right"), ("params", "right"), ("time", "right")):
        table.add_column(column, justify=justify, no_wrap=column == "run", overflow="fold")  # full run names: they are what --resume takes
    for run in summaries:  # escape: run names are text, not rich markup
        table.add_row(
            escape(run.name), escape(run.arch), str(run.epochs), str(run.batch_size), str(run.img_size),
            "" if run.best_val_acc is None else f"{run.best_val_acc:.4f}",
            f"{run.params / 1e6:.2f}M", _duration(run.seconds),
        )
    console.print(table)


def _groups_table(root: Path, groups: list[Any], expand: bool) -> Table:
    """One line per fold group (arch, K, CV mean ± std, OOF accuracy and log-loss, state); --folds adds its runs.

    No-wrap columns: "0.9100 ± 0.0200" is one number and must stay on one line at a terminal's 80 columns (the state
    wraps: "2/3 folds (fold-1 missing)")."""
    table = Table(title=f"fold groups in {escape(str(root))}")
    for column, justify in (("group", "left"), ("arch", "left"), ("K", "right"), ("CV val acc", "right"),
                            ("OOF acc", "right"), ("OOF loss", "right"), ("state", "left"), ("time", "right")):
        table.add_column(column, justify=justify, no_wrap=column not in ("arch", "state"), overflow="fold",
                         min_width={"arch": 4, "state": 9}.get(column))
    for summary in groups:
        group, cv = summary.group, summary.cv or {}  # no CV claimed over folds that are gone
        mean, std = _cv_number(cv, "mean_val_acc"), _cv_number(cv, "std_val_acc")
        table.add_row(
            escape(summary.name), escape(group.arch), str(group.folds), f"{mean} ± {std}" if mean else "",
            _cv_number(cv, "oof_acc"), _cv_number(cv, "oof_log_loss"), summary.state, _duration(summary.seconds),
        )
        for run in summary.members if expand else ():
            done = "done" if run.name in group.done else f"{run.epochs} epochs"
            table.add_row("  " + escape(run.name), escape(run.arch), "",
                          "" if run.best_val_acc is None else f"{run.best_val_acc:.4f}", "", "", done,
                          _duration(run.seconds))
    return table


def _cv_number(cv: dict[str, Any], key: str) -> str:
    """A CV score from group.json, or "" where the record lacks it (a hand-edited record is data, not a crash)."""
    value = cv.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _parse_batch_sizes(text: str) -> tuple[int, ...]:
    """"1,8" -> (1, 8); ExportConfig checks the values."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ClfError(f"--batch-sizes takes comma-separated integers like 1,8, got {text!r}") from None


@app.command("export")
@user_errors
def export(
    runs: Annotated[list[str], typer.Argument(help="A run folder (uses its best.pt), a checkpoint file, or a fold group (the ensemble of its folds); several runs make one ensemble (-o required).", metavar="RUN")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX with clf metadata and a parity proof (the default target).")] = True,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Model file, or an existing folder to write model.onnx into (default: beside the checkpoint). Missing folders are created.")] = None,
    opset: Annotated[int, typer.Option(help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} ({', '.join(f'{name} {low}-{high}' for name, (low, high) in OPSETS.items())}).")] = 18,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision weights and compute; input/output stay float32.")] = False,
    simplify: Annotated[bool, typer.Option("--simplify", help="Simplify the graph with onnxslim, then re-check parity.")] = False,
    check_images: Annotated[Optional[str], typer.Option(help="Images for the parity check (default: the validation images listed in the run's split.json).")] = None,
    atol: Annotated[Optional[float], typer.Option(help=f"Max abs logit difference allowed, >= 0 (default {DEFAULT_ATOL:g}, {DEFAULT_ATOL_FP16:g} with --fp16).")] = None,
    batch_sizes: Annotated[str, typer.Option(help=f"Batch sizes the parity check runs, 1-{MAX_BATCH} (one > 1 proves the dynamic axis).")] = "1,8",
    device: Annotated[str, typer.Option(metavar=f"[{'|'.join(DEVICES)}]", help="onnxruntime device for the parity check (the one inference will use).")] = "auto",
    exporter: Annotated[str, typer.Option(metavar=f"[{'|'.join(EXPORTERS)}]", help="auto: dynamo, then TorchScript.")] = "auto",
    average: Annotated[str, typer.Option(metavar=f"[{'|'.join(AVERAGES)}]", help="Ensemble and TTA views: average softmax probabilities (output: their log) or logits.")] = "prob",
    weights: Annotated[Optional[str], typer.Option(help="One weight per member, e.g. 1,2 (normalised; default equal).")] = None,
    tta: Annotated[str, typer.Option(metavar=f"[{'|'.join(TTA_VIEWS)}]", help="Flipped views averaged inside the graph.")] = "none",
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Fit a temperature on the validation images (a fold group: its oof.csv) and bake it in.")] = False,
    force: Annotated[bool, typer.Option("--force", help="--tta with flips the runs were not trained with.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Static int8 (QDQ) quantisation of the proven fp32 model, behind an accuracy gate on the validation images (model_int8.onnx).")] = False,
    calibration_images: Annotated[Optional[int], typer.Option(help=f"--int8: training images to calibrate on, spread over the classes (default {DEFAULT_CALIBRATION_IMAGES}, or all when fewer).")] = None,
    calibration_method: Annotated[Optional[str], typer.Option(metavar=f"[{'|'.join(CALIBRATION_METHODS)}]", help=f"--int8: how activation ranges are chosen (default {CALIBRATION_METHODS[0]}).")] = None,
    min_agreement: Annotated[Optional[float], typer.Option(help=f"--int8 gate: least top-1 agreement with the fp32 model, 0-1 (default {DEFAULT_MIN_AGREEMENT:g}).")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help=f"--int8 gate: most accuracy lost, 0-1 (default {DEFAULT_MAX_DROP:g} = half a point).")] = None,
    triton: Annotated[Optional[str], typer.Option(metavar="REPO", help="Write a Triton model repository entry REPO/<model>/ (config.pbtxt, labels.txt, preprocess.json, 1/model.onnx); composes with --int8/--fp16.")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(help=f"--triton: the largest batch Triton forms, 1-{MAX_BATCH} (default {DEFAULT_TRITON_MAX_BATCH}).")] = None,
    model_name: Annotated[Optional[str], typer.Option(help="--triton: the model's name and folder (default: the run's name).")] = None,
) -> None:
    """Export a checkpoint to ONNX with its classes and preprocessing inside, and prove parity with PyTorch.

    Several runs, or a fold group, become ONE graph averaging every member (with --tta views and a --calibrate
    temperature inside it too); its output stays `logits`, so every consumer runs it like a single model.
    """
    from clf.config import ExportConfig
    from clf.export.targets import run_export

    target = "triton" if triton is not None else "onnx"  # --onnx is the default target
    cfg = ExportConfig(
        checkpoint=runs[0], output=output, target=target, opset=opset, fp16=fp16,
        simplify=simplify, check_images=check_images, atol=atol,
        batch_sizes=_parse_batch_sizes(batch_sizes), device=device, exporter=exporter,
        more_runs=tuple(runs[1:]), average=average, weights=_parse_weights(weights), tta=tta, calibrate=calibrate,
        force=force,
        int8=int8, calibration_images=calibration_images, calibration_method=calibration_method,
        min_agreement=min_agreement, max_drop=max_drop,
        triton=triton, max_batch_size=max_batch_size, model_name=model_name,
    )
    try:
        with err_console.status("exporting and checking parity"):
            result = run_export(cfg)
    except ParityError as exc:
        if exc.result is not None:
            console.print(_export_table(exc.result))  # the numbers behind the failure; the error line follows
        raise
    if result.kind == "triton":  # the repository entry, then the export behind it
        console.print(_triton_table(result))
    console.print(_export_table(result.onnx_result()))


def _parse_weights(text: Optional[str]) -> tuple[float, ...]:
    """"1,2" -> (1.0, 2.0); ExportConfig checks the values, the export their count."""
    if text is None:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ClfError(f"--weights takes comma-separated numbers like 1,2, got {text!r}") from None


_WEIGHTS_SHOWN = {"ema": "EMA (averaged)", "raw": "raw",
                  "mixed": "EMA (averaged) for some members, raw for the others"}


def _export_table(result: ExportResult) -> Table:
    """file, proof, size, opset, exporter, precision, provider, what was compared, the differences and the verdict."""
    parity = result.parity
    table = Table(title="ONNX export", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("file", escape(str(result.path))),
        ("proof", escape(str(result.proof))),
        ("size", f"{result.size_bytes / 1e6:.2f} MB"),
        ("opset", str(result.opset)),
        ("exporter", result.exporter + (" + onnxslim" if result.simplified else "")),
        ("precision", result.precision),
        ("weights", _WEIGHTS_SHOWN.get(result.weights, result.weights)),
        ("provider", parity.provider),
        *(_int8_rows(parity) if parity.kind == "int8" else _parity_rows(parity)),
        ("verdict", "[green]PASS[/]" if parity.passed else "[bold red]FAIL[/]"),
        *_ensemble_rows(result),
    ):
        table.add_row(key, value)
    return table


def _parity_rows(parity: ParityReport) -> list[tuple[str, str]]:
    return [
        ("checked on", escape(f"{parity.images} inputs ({parity.image_source}), "
                              f"batch sizes {','.join(map(str, parity.batch_sizes))}")),
        ("max abs diff", f"{parity.max_abs_diff:.3g} (atol {parity.atol:g})"),
        ("mean abs diff", f"{parity.mean_abs_diff:.3g}"),
        ("top-1 agreement", f"{parity.top1_agreement:.2%}"),
    ]


def _int8_rows(report: Int8Report) -> list[tuple[str, str]]:
    """The fp32 graph's parity in one row, then the calibration and the int8 accuracy gate."""
    calib = report.calibration

    def acc(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    drop = "n/a (no class folders)" if report.accuracy_drop is None else f"{report.accuracy_drop * 100:.2f} points"
    return [
        ("fp32 parity", escape(f"max abs diff {report.max_abs_diff:.3g} (atol {report.atol:g}) on "
                               f"{report.parity_images} inputs ({report.parity_source})")),
        ("calibration", escape(f"{calib['method']}, {calib['images']} images ({calib['source']}), "
                               f"{calib['activations']} activations, {calib['weights']} weights")),
        ("gate on", escape(f"{report.images} inputs ({report.image_source})")),
        ("top-1 agreement", f"{report.top1_agreement:.2%} with fp32 (min {report.min_agreement:.2%})"),
        ("accuracy", f"fp32 {acc(report.fp32_accuracy)}, int8 {acc(report.int8_accuracy)}; drop {drop} "
                     f"(max {report.max_drop * 100:.2f})"),
    ]


def _triton_table(result: TritonResult) -> Table:
    """The Triton model folder: where, which files, the batching Triton will do."""
    table = Table(title="Triton model repository", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("model folder", escape(str(result.folder))),
        ("model name", escape(result.model_name)),
        ("files", escape(", ".join(result.files))),
        ("max batch size", str(result.max_batch_size)),
        ("preferred batches", ",".join(map(str, result.preferred_batch_sizes))),
    ):
        table.add_row(key, value)
    return table


def _ensemble_rows(result: ExportResult) -> list[tuple[str, str]]:
    """Members, average, TTA, temperature (with NLL/ECE before -> after) and throughput of a deployed ensemble."""
    deployed, calibration = result.deployment, result.calibration
    if deployed is None:
        return []
    rows = []
    for index, member in enumerate(deployed.members, start=1):
        acc = member.get("best_val_acc")
        rows.append((f"member {index}", escape(f"{member['run']} ({member['arch']}), weight {member['weight']:.3g}"
                                               + (f", best val acc {acc:.2%}" if acc is not None else ""))))
    rows += [("average", deployed.average), ("tta", deployed.tta)]
    if calibration is not None:
        rows.append(("temperature", escape(f"{calibration.temperature:.4g} (fitted on {calibration.images} "
                                           f"{calibration.source})")))
        rows.append(("NLL", f"{calibration.nll_before:.4f} -> {calibration.nll_after:.4f}"))
        rows.append(("ECE", f"{calibration.ece_before:.4f} -> {calibration.ece_after:.4f}"))
    speed = result.throughput
    if speed:
        ratio = speed["deployed"] / speed["single member"] if speed["single member"] else float("nan")
        rows.append(("throughput", f"{speed['deployed']:.0f} images/s at batch 8 ({ratio:.2f}x a single member's "
                                   f"{speed['single member']:.0f})"))
    return rows


def _parse_floats3(text: Optional[str], flag: str) -> Optional[tuple[float, float, float]]:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ClfError(f"{flag} takes three comma-separated numbers like 0.485,0.456,0.406, got {text!r}")
    return values  # type: ignore[return-value]


_DEVICE_HELP = "auto: CUDA when it really loads, else CPU."


# The options of `infer` and `eval` that describe a model exported by another tool (no clf metadata).
_ImgSizeOption = Annotated[Optional[int], typer.Option(help="Only for an .onnx without clf metadata: input size.")]
_MeanOption = Annotated[Optional[str], typer.Option(help="Only without clf metadata: mean, e.g. 0.485,0.456,0.406.")]
_StdOption = Annotated[Optional[str], typer.Option(help="Only without clf metadata: std, e.g. 0.229,0.224,0.225.")]
_LabelsOption = Annotated[Optional[str], typer.Option(help="Only without clf metadata: class names (a,b,c or a file).")]
_QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
_TtaOption = Annotated[str, typer.Option(metavar=_choices(tuple(TTA_VIEWS)), help="Test-time augmentation: also run the model on flipped images and average the probabilities (h = left-right, v = up-down).")]


@app.command("infer")
@user_errors
def infer(
    images: Annotated[Path, typer.Argument(help="Folder of images to predict.")],
    model: Annotated[Path, typer.Option(help="An .onnx exported by `clf export`.")],
    csv: Annotated[Path, typer.Option(help="Submission CSV to write.")] = Path("submission.csv"),
    batch_size: Annotated[int, typer.Option(help="Images per session.run.")] = 32,
    device: Annotated[str, typer.Option(metavar=_choices(DEVICES), help=_DEVICE_HELP)] = "auto",
    sample_submission: Annotated[Optional[Path], typer.Option(help="Keep exactly this CSV's columns and row order.")] = None,
    id_col: Annotated[str, typer.Option(help="Id column name.")] = "id",
    label_col: Annotated[str, typer.Option(help="Label column name.")] = "label",
    id_format: Annotated[str, typer.Option(metavar=_choices(ID_FORMATS), help="Id from the file: stem (img_01), name (img_01.jpg) or relpath (sub/img_01.jpg).")] = "stem",
    topk: Annotated[int, typer.Option(help="Write the K best labels: the best in the label column, then LABEL_2..LABEL_K.")] = 1,
    topk_format: Annotated[str, typer.Option(metavar=_choices(TOPK_FORMATS), help="columns (LABEL, LABEL_2, ...) or space ('a b c' in the label column, MAP@K style).")] = "columns",
    probs: Annotated[Optional[Path], typer.Option(help="Also write every class probability to this CSV.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 4 when any image was skipped (the other rows are still written).")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", help="Also look in sub-folders.")] = False,
    threads: Annotated[int, typer.Option(help="Decode threads (0 = one per core).")] = 0,
    tta: _TtaOption = "none",
    img_size: _ImgSizeOption = None,
    mean: _MeanOption = None,
    std: _StdOption = None,
    labels: _LabelsOption = None,
    quiet: _QuietOption = False,
) -> None:
    """Predict a folder of images with onnxruntime and write a Kaggle-style submission CSV."""
    from clf.serve.infer import run_inference

    cfg = InferConfig(
        images=str(images), model=str(model), csv=str(csv), batch_size=batch_size, device=device,
        sample_submission=str(sample_submission) if sample_submission else None, id_col=id_col, label_col=label_col,
        id_format=id_format, topk=topk, topk_format=topk_format, probs=str(probs) if probs else None, strict=strict,
        recursive=recursive, threads=threads, tta=tta, img_size=img_size, mean=_parse_floats3(mean, "--mean"),
        std=_parse_floats3(std, "--std"), labels=labels,
    )
    with _ImageProgress(enabled=console.is_terminal and not quiet) as bar:
        result = run_inference(cfg, progress=bar.update, on_start=bar.start, verbose=logger.isEnabledFor(logging.DEBUG))
    skipped, extra = len(result.failures), len(result.not_in_sample)
    with_tta = f"with {result.tta} TTA " if result.tta != "none" else ""
    console.print(
        f"[bold]{escape(str(result.csv))}[/]: {result.predicted} of {result.images} images predicted on {result.provider} "
        f"{with_tta}({result.images_per_second:.0f} img/s)" + (f", [yellow]{skipped} skipped[/]" if skipped else "")
        + (f", [yellow]{extra} not in the sample submission[/]" if extra else ""),
        highlight=False,
    )


class _ImageProgress:
    """A rich progress bar over images, with images/s; silent when disabled (not a TTY, --quiet)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> "_ImageProgress":
        return self

    def start(self, total: int, provider: str) -> None:
        err_console.print(f"{total} images, onnxruntime provider: [bold]{provider}[/]", highlight=False)
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[ips]:.0f} img/s"), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("predict", total=total, ips=0.0)
        self.started = time.perf_counter()

    def update(self, done: int) -> None:
        if self.progress is not None:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, completed=done, ips=rate)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command("eval")
@user_errors
def eval_(
    labelled: Annotated[Path, typer.Argument(help="Labelled images: class folders, or a folder with --labels-csv.")],
    model: Annotated[Path, typer.Option(help="An .onnx, a checkpoint (.pt) or a run folder (exported to a temporary .onnx, parity checked).")],
    labels_csv: Annotated[Optional[Path], typer.Option(help="CSV of id,label for the images in LABELLED.")] = None,
    id_col: Annotated[str, typer.Option(help="Id column of --labels-csv.")] = "id",
    label_col: Annotated[str, typer.Option(help="Label column of --labels-csv.")] = "label",
    report: Annotated[Optional[Path], typer.Option(help="Write the full report as JSON.")] = None,
    confusion: Annotated[Optional[Path], typer.Option(help="Write the confusion matrix as a PNG.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per session.run.")] = 32,
    device: Annotated[str, typer.Option(metavar=_choices(DEVICES), help=_DEVICE_HELP)] = "auto",
    tta: Annotated[str, typer.Option(metavar=_choices(tuple(TTA_VIEWS)), help="Also score the model with these flipped views averaged: accuracy, log-loss and ECE without and with TTA side by side.")] = "none",
    img_size: _ImgSizeOption = None,
    mean: _MeanOption = None,
    std: _StdOption = None,
    labels: _LabelsOption = None,
    quiet: _QuietOption = False,
) -> None:
    """Accuracy, log-loss, ECE, per-class precision/recall/F1 and confusion matrix of a model on labelled images."""
    import dataclasses

    from clf.export.for_eval import onnx_for_evaluation
    from clf.serve.evaluate import evaluate, load_eval_data

    cfg = EvalConfig(
        labelled=str(labelled), model=str(model), labels_csv=str(labels_csv) if labels_csv else None, id_col=id_col,
        label_col=label_col, report=str(report) if report else None, confusion=str(confusion) if confusion else None,
        batch_size=batch_size, device=device, tta=tta, img_size=img_size, mean=_parse_floats3(mean, "--mean"),
        std=_parse_floats3(std, "--std"), labels=labels,
    )
    data = load_eval_data(cfg)  # data and outputs checked before a checkpoint's export
    bar = _ImageProgress(enabled=console.is_terminal and not quiet)
    with onnx_for_evaluation(cfg.model, cfg.device) as onnx_path, bar:
        result = evaluate(dataclasses.replace(cfg, model=onnx_path), data, on_start=bar.start, progress=bar.update,
                          verbose=logger.isEnabledFor(logging.DEBUG))
    _print_report(result.report, model)
    console.print(_probability_line(result.report), highlight=False)
    if result.failures:
        console.print(f"[yellow]{len(result.failures)} unreadable image(s) skipped[/] (not counted above)",
                      highlight=False)


def _print_report(result: dict[str, Any], model: Path) -> None:
    views = result["tta"]["views"]
    with_tta = f" with {views} TTA" if views != "none" else ""
    table = Table(title=f"{escape(str(model))}: accuracy {result['accuracy']:.4f}{with_tta} on {result['num_samples']} "
                        "images")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, stats in result["per_class"].items():
        table.add_row(escape(name), f"{stats['precision']:.4f}", f"{stats['recall']:.4f}", f"{stats['f1']:.4f}", str(stats["support"]))
    console.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in result["classes"]:  # class names are data: "[/red]" is a name, not rich markup
        matrix.add_column(escape(name), justify="right")
    for name, row in zip(result["classes"], result["confusion_matrix"]):
        matrix.add_row(escape(name), *(str(v) for v in row))
    console.print(matrix)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _probability_line(report: dict[str, Any]) -> str:
    """Log-loss and ECE; with TTA, accuracy, log-loss and ECE without -> with the views, side by side."""
    tta = report["tta"]
    if "without" not in tta:
        return f"log-loss {_score(report['log_loss'])}, ECE {_score(report['ece'])} ({report['ece_bins']} bins)"
    before, after = tta["without"], tta["with"]
    pairs = (("accuracy", "accuracy"), ("log-loss", "log_loss"), ("ECE", "ece"))
    arrow = "→" if console.encoding.lower().startswith("utf") else "->"  # a latin-1 terminal cannot print the arrow
    return ", ".join(f"{name} {_score(before[key])} {arrow} {_score(after[key])}" for name, key in pairs) + \
        f" with {tta['views']} TTA ({report['ece_bins']}-bin ECE)"


@app.command("score")
@user_errors
def score(
    submission: Annotated[Path, typer.Argument(help="A submission CSV written by `clf infer`.")],
    answers: Annotated[Path, typer.Argument(help="The answers CSV (same id and label columns).")],
    id_col: Annotated[str, typer.Option(help="Id column.")] = "id",
    label_col: Annotated[str, typer.Option(help="Label column.")] = "label",
    probs: Annotated[Optional[Path], typer.Option(help="The probabilities CSV `clf infer --probs` wrote: also report log-loss and ECE.")] = None,
) -> None:
    """Accuracy of a submission against the answers (e.g. the sample competition's test_labels.csv), and with
    --probs the log-loss and expected calibration error of its probabilities.

    Every id of the answers needs a prediction (and probabilities); ids only in the submission are not scored (a
    warning counts them). Probability rows are rescaled to sum to 1, as Kaggle does.
    """
    from clf.serve.score import score_submission

    result = score_submission(submission, answers, id_col, label_col, probs=probs)
    scores = "" if result.log_loss is None else (
        f", log-loss {result.log_loss:.4f}, ECE {result.ece:.4f} ({result.ece_bins} bins) from {escape(str(probs))}")
    console.print(f"[bold]{escape(str(submission))}[/]: accuracy {result.accuracy:.4f} on {result.rows} rows of "
                  f"{escape(str(answers))}{scores}", highlight=False)


@app.command("serve")
@user_errors
def serve(
    model: Annotated[str, typer.Argument(help="An .onnx exported by `clf export`.", metavar="MODEL")],
    host: Annotated[str, typer.Option(help="Address the HTTP proxy listens on (local mode: keep it on loopback unless something in front authenticates).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(help="Model replicas (processes), each with its own session.")] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Images per dynamic batch, gathered from concurrent requests.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to fill its batch.")] = 5.0,
    address: Annotated[Optional[str], typer.Option(help="Deploy onto this Ray cluster (e.g. ray://head:10001, auto) instead of a local Ray bound to loopback.")] = None,
    device: Annotated[str, typer.Option(metavar=_choices(DEVICES), help=_DEVICE_HELP)] = "auto",
    threads: Annotated[int, typer.Option(help="onnxruntime threads per replica (0 = the usable cores / replicas).")] = 0,
) -> None:
    """Serve a model over HTTP on Ray Serve: POST an image to /predict, several to /predict/batch.

    Answers are JSON (label, top-k, every class probability), computed exactly as `clf infer` computes them.
    Ctrl-C or SIGTERM stops Serve and the local Ray instance.
    """
    from clf.config import ServeConfig
    from clf.serve.ray_app import serve as run_server

    cfg = ServeConfig(model=str(_non_empty_path(model, "MODEL", "an .onnx file")), host=host, port=port,
                      replicas=replicas, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, address=address,
                      device=device, threads=threads)

    def ready(url: str, classes: list[str], replica_threads: int) -> None:
        console.print(
            f"[bold]{escape(str(model))}[/] ({len(classes)} classes) served at [bold]{escape(url)}[/]: "
            f"{cfg.replicas} replica(s) x {replica_threads} thread(s), batches of up to {cfg.max_batch_size} "
            f"within {cfg.batch_wait_ms:g} ms. POST an image to {escape(url)}/predict; Ctrl-C stops.",
            highlight=False,
        )

    run_server(cfg, on_ready=ready)
