"""The configurations of the deployed side: `clf infer`, `clf eval` and `clf serve` (all onnxruntime, no torch).

Each field with a help line is an option of its command (clf/cli/options.py); the others are its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clf.choices import COMPETITION_METRICS, DEVICES, ID_FORMATS, TASK_NAMES, TOPK_FORMATS, TTA_VIEWS
from clf.config.base import JsonMixin, check_choice, column_checks, is_loopback_host, raise_first_failure, setting
from clf.errors import ClfError

DEVICE_HELP = "auto: CUDA when it really loads, else CPU."


def _three_numbers(flag: str) -> Callable[[str], tuple[float, float, float]]:
    """The parser of --mean and --std: "0.485,0.456,0.406" -> a 3-tuple, or one line naming the flag."""

    def parse(text: str) -> tuple[float, float, float]:
        try:
            values = tuple(float(part) for part in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise ClfError(f"{flag} takes three comma-separated numbers like 0.485,0.456,0.406, got {text!r}")
        return values  # type: ignore[return-value]

    return parse


@dataclass(frozen=True)
class _RuntimeOptions(JsonMixin):
    """What `clf infer` and `clf eval` share: batching, device, threads, and how to read a model without clf
    metadata (exported by another tool)."""

    batch_size: int = setting(32, "Images per session.run.")
    device: str = setting("auto", DEVICE_HELP, choices=DEVICES)
    threads: int = setting(0, "Decode threads (0 = one per core).")  # at most 8
    img_size: int | None = setting(None, "Only for an .onnx without clf metadata: input size.")
    mean: tuple[float, float, float] | None = setting(None, "Only without clf metadata: mean, e.g. "
                                                            "0.485,0.456,0.406.", parse=_three_numbers("--mean"))
    std: tuple[float, float, float] | None = setting(None, "Only without clf metadata: std, e.g. 0.229,0.224,0.225.",
                                                     parse=_three_numbers("--std"))
    # comma-separated class names, or a text file with one per line
    labels: str | None = setting(None, "Only without clf metadata: class names (a,b,c or a file).")


def _model_option_checks(cfg: Any) -> tuple[tuple[bool, str], ...]:
    """The checks shared by infer and eval: batching, device, and the options of a model without clf metadata."""
    return (
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        check_choice("--device", cfg.device, DEVICES),
        (cfg.threads >= 0, f"--threads must be >= 0 (0 = one per core), got {cfg.threads}"),
        (cfg.img_size is None or cfg.img_size >= 1, f"--img-size must be >= 1, got {cfg.img_size}"),
        # NaN passes a "> 0" test and turns every output into NaN, which would then be blamed on the model
        (cfg.mean is None or (len(cfg.mean) == 3 and all(map(math.isfinite, cfg.mean))),
         f"--mean takes 3 finite numbers, got {cfg.mean}"),
        (cfg.std is None or (len(cfg.std) == 3 and all(math.isfinite(v) and v > 0 for v in cfg.std)),
         f"--std takes 3 values > 0, got {cfg.std}"),
    )


def _ray_checks(cfg: Any) -> tuple[tuple[bool, str], ...]:
    """clf infer --ray / --address: a cluster address that is not empty, and a local Ray on loopback only (the rule
    of clf serve and clf tune)."""
    return (
        (cfg.address is None or cfg.address.strip() != "",
         "--address is empty; give the Ray cluster's address (ray://HOST:10001, HOST:PORT or auto), or use --ray for "
         "a local Ray"),
        (cfg.address is not None or is_loopback_host(cfg.host),
         f"--host {cfg.host}: a local clf infer --ray binds Ray to loopback only (127.0.0.1); to use other machines, "
         "start a Ray cluster there and give its --address"),
        (cfg.actors >= 0, f"--actors must be >= 0 (0 = the usable cores, at least 2), got {cfg.actors}"),
        (cfg.actor_threads >= 1, f"--actor-threads must be >= 1, got {cfg.actor_threads}"),
    )


@dataclass(frozen=True)
class InferConfig(_RuntimeOptions):
    """What ``clf infer`` needs; every value is checked here, once (the CLI hands Typer the same choice lists)."""

    images: str = ""  # the IMAGES argument
    model: str = setting("", "An .onnx exported by `clf export`.", required=True, cli_type=Path)
    csv: str = setting("submission.csv", "Submission CSV to write.", cli_type=Path)
    sample_submission: str | None = setting(None, "Keep exactly this CSV's columns and row order.", cli_type=Path)
    id_col: str = setting("id", "Id column name.")
    label_col: str = setting("label", "Label column name.")
    id_format: str = setting("stem", "Id from the file: stem (img_01), name (img_01.jpg) or relpath "
                                     "(sub/img_01.jpg).", choices=ID_FORMATS)
    topk: int = setting(1, "Write the K best labels: the best in the label column, then LABEL_2..LABEL_K.")
    topk_format: str = setting("columns", "columns (LABEL, LABEL_2, ...) or space ('a b c' in the label column, "
                                          "MAP@K style).", choices=TOPK_FORMATS)
    probs: str | None = setting(None, "Also write every class probability to this CSV.", cli_type=Path)
    # skipped images make the run fail (IncompleteError, exit 4) after every other row is written
    strict: bool = setting(False, "Exit 4 when any image was skipped (the other rows are still written).")
    recursive: bool = setting(False, "Also look in sub-folders.")
    # a TTA_VIEWS name: flipped views averaged at run time
    tta: str = setting("none", "Test-time augmentation: also run the model on flipped images and average the "
                               "probabilities (h = left-right, v = up-down).", choices=tuple(TTA_VIEWS))
    # Ray Data (clf.serve.ray_infer): the same rows, from several processes or machines
    ray: bool = setting(False, "Predict on a local Ray Data pipeline (bound to loopback): --actors processes, each "
                               "with its own onnxruntime session; the same CSV as without it. Needs clf[data].")
    address: str | None = setting(None, "Predict on an existing Ray cluster (ray://HOST:10001, HOST:PORT, or auto on "
                                        "one of its nodes) instead of a local Ray; IMAGES and --model must be paths "
                                        "every node sees.", metavar="RAY")
    actors: int = setting(0, "--ray/--address: Ray actors, each with one onnxruntime session (0 = the usable cores, "
                             "at least 2; on a cluster its CPUs / --actor-threads).")
    actor_threads: int = setting(1, "--ray/--address: onnxruntime threads per actor.")
    host: str = setting("127.0.0.1", "--ray: the address the local Ray instance binds: loopback only (use --address "
                                     "to reach other machines).")

    @property
    def on_ray(self) -> bool:
        """--ray or --address: the Ray Data path."""
        return self.ray or self.address is not None

    def __post_init__(self) -> None:
        raise_first_failure(_model_option_checks(self) + _ray_checks(self) + (
            (self.topk >= 1, f"--topk must be >= 1, got {self.topk}"),
            check_choice("--tta", self.tta, tuple(TTA_VIEWS)),
            check_choice("--id-format", self.id_format, ID_FORMATS),
            check_choice("--topk-format", self.topk_format, TOPK_FORMATS),
            *column_checks(self.id_col, self.label_col),
            (self.topk_format != "columns" or self.id_col not in self.topk_columns(),
             f"--id-col {self.id_col!r} is also a top-k column ({', '.join(self.topk_columns())}); "
             "give another --id-col or --label-col"),
        ))

    def topk_columns(self) -> list[str]:
        """The columns --topk adds after the label column (--topk-format columns)."""
        return [f"{self.label_col}_{rank}" for rank in range(2, self.topk + 1)]


@dataclass(frozen=True)
class LabelsCsvFields(JsonMixin):
    """How a model's evaluation reads the labels of its images from a CSV instead of class folders: `clf eval` and
    `clf report --images` share these fields (and clf.serve.evaluate.load_eval_data reads them)."""

    labels_csv: str | None = setting(None, "CSV of id,label for the labelled images (instead of class folders); "
                                           "a multi-label model's label cell holds space-separated tags.",
                                     cli_type=Path)
    id_col: str = setting("id", "Id column of --labels-csv.")
    label_col: str = setting("label", "Label column of --labels-csv.")

    def labels_csv_checks(self) -> tuple[tuple[bool, str], ...]:
        """--id-col and --label-col name two columns (checked only with --labels-csv: class folders have none)."""
        return column_checks(self.id_col, self.label_col) if self.labels_csv else ()


@dataclass(frozen=True)
class EvalConfig(LabelsCsvFields, _RuntimeOptions):
    """What ``clf eval`` needs: labelled images, an ONNX model, and where to write the report and the picture."""

    labelled: str = ""  # the LABELLED argument
    # an .onnx (the command line turns a checkpoint or run folder into one first)
    model: str = setting("", "An .onnx, a checkpoint (.pt) or a run folder (exported to a temporary .onnx, parity "
                             "checked).", required=True, cli_type=Path)
    report: str | None = setting(None, "Write the full report as JSON.", cli_type=Path)
    confusion: str | None = setting(None, "Write the confusion matrix as a PNG.", cli_type=Path)
    # a TTA_VIEWS name: the report shows the numbers without and with these views side by side
    tta: str = setting("none", "Also score the model with these flipped views averaged: accuracy, log-loss and ECE "
                               "(multilabel: F1s, exact match, mAP) without and with TTA side by side.",
                       choices=tuple(TTA_VIEWS))
    # explicit: it decides how --labels-csv is read before the model is opened (a checkpoint is exported first)
    task: str = setting("single_label", "multilabel: --labels-csv holds space-separated tags; report F1s, mAP and "
                                        "per-class AUC.", choices=TASK_NAMES)

    def __post_init__(self) -> None:
        multilabel = self.task == "multilabel"
        raise_first_failure(_model_option_checks(self) + (
            check_choice("--tta", self.tta, tuple(TTA_VIEWS)),
            check_choice("--task", self.task, TASK_NAMES),
            (not (multilabel and not self.labels_csv), "--task multilabel reads each image's tags from --labels-csv "
                                                       "(class folders give one class per image); pass it"),
            (not (multilabel and self.confusion), "--confusion draws single-label confusions; with --task multilabel "
                                                  "the per-class table says each class's errors: leave it out"),
        ) + self.labels_csv_checks())


MAX_SERVE_BATCH = 1024  # images per dynamic batch; far above what helps on CPUs, far below what exhausts memory
MAX_BATCH_WAIT_MS = 10_000.0  # a longer wait only delays every lone request


@dataclass(frozen=True)
class ServeConfig(JsonMixin):
    """What ``clf serve`` needs: the model, where to listen, how to batch and how many replicas to run."""

    model: str = ""  # the MODEL argument
    host: str = setting("127.0.0.1", "Address Serve's HTTP server listens on (local mode: keep it on loopback unless "
                                     "something in front authenticates).")
    port: int = setting(8000, "HTTP port.")
    replicas: int = setting(1, "Model replicas (processes), each with its own session.")
    # images per session.run, gathered from concurrent requests (@serve.batch)
    max_batch_size: int = setting(16, "Images per dynamic batch, gathered from concurrent requests.")
    batch_wait_ms: float = setting(5.0, "How long a request waits for others to fill its batch.")
    # an existing Ray cluster; None: a local Ray instance bound to loopback
    address: str | None = setting(None, "Deploy onto this Ray cluster (e.g. ray://head:10001, auto) instead of a "
                                        "local Ray bound to loopback.")
    device: str = setting("auto", DEVICE_HELP, choices=DEVICES)
    threads: int = setting(0, "onnxruntime threads per replica (0 = the usable cores / replicas).")

    def __post_init__(self) -> None:
        raise_first_failure((
            (self.host.strip() != "", "--host is empty; give an address to listen on, e.g. 127.0.0.1"),
            (1 <= self.port <= 65535, f"--port must be between 1 and 65535, got {self.port}"),
            (self.replicas >= 1, f"--replicas must be >= 1, got {self.replicas}"),
            (1 <= self.max_batch_size <= MAX_SERVE_BATCH,
             f"--max-batch-size must be between 1 and {MAX_SERVE_BATCH}, got {self.max_batch_size}"),
            (math.isfinite(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= MAX_BATCH_WAIT_MS,
             f"--batch-wait-ms must be between 0 and {MAX_BATCH_WAIT_MS:g}, got {self.batch_wait_ms:g}"),
            (self.address is None or self.address.strip() != "",
             "--address is empty; give a Ray cluster address (e.g. ray://head:10001 or auto), or leave it out"),
            check_choice("--device", self.device, DEVICES),
            (self.threads >= 0, f"--threads must be >= 0 (0 = the usable cores / replicas), got {self.threads}"),
        ))


@dataclass(frozen=True)
class ScoreConfig(JsonMixin):
    """What ``clf score`` needs: a submission, the answers, their columns, and what to score."""

    submission: str = ""  # the SUBMISSION argument
    answers: str = ""  # the ANSWERS argument
    id_col: str = setting("id", "Id column.")
    label_col: str = setting("label", "Label column.")
    probs: str | None = setting(None, "The probabilities CSV `clf infer --probs` wrote: also report log-loss and "
                                      "ECE.", cli_type=Path)
    metric: str = setting("accuracy", "The competition's metric, reported beside accuracy (roc_auc and log_loss need "
                                      "--probs; qwk needs classes named by grade: 0, 1, 2, ...).",
                          choices=COMPETITION_METRICS)
    # explicit, never guessed from the files: a single-label answer "cat" is also a one-tag multi-label answer
    task: str = setting("single_label", "multilabel: labels are space-separated tags; report F1 micro/macro/samples "
                                        "and per-class precision, recall, F1.", choices=TASK_NAMES)

    def __post_init__(self) -> None:
        multilabel = self.task == "multilabel"
        raise_first_failure((
            check_choice("--metric", self.metric, COMPETITION_METRICS),
            check_choice("--task", self.task, TASK_NAMES),
            (not (multilabel and self.probs), "--probs with --task multilabel is not supported yet; score the tags "
                                              "without it, or run `clf eval` on the labelled images for mAP and AUC"),
            (not (multilabel and self.metric != "accuracy"),
             f"--metric {self.metric} with --task multilabel: the multi-label score reports F1 micro, macro and "
             "samples (and per class) already; leave out --metric"),
        ))
