"""`clf infer --ray` / `--address`: the same rows as plain `clf infer`, predicted on Ray Data.

The image listing is the one plain infer builds (same order, filters, links and FIFOs: clf's reader opens each path
inside the actors, exactly as the Predictor does in one process). It becomes a dataset of (index, path) rows, which
``map_batches`` hands to a pool of actors, each holding ONE Predictor (one onnxruntime session, decoding with clf's
own reader): a bad image comes back as a row with its reason, never a crash. The driver puts the rows back in index
order and hands them to clf.serve.infer as a PredictionResult, so the submission is written by the same code.

Ray is imported inside the functions only (clf without the data extra, and `clf --help`, never load it); the local
Ray instance is clf.ray_local's (loopback only, no dashboard server, nothing left running).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from clf import errors, ray_local
from clf.config import InferConfig
from clf.errors import ClfError, one_line
from clf.serve.loading import labels_file, make_predictor
from clf.serve.predictions import PredictionResult
from clf.serve.predictor import Predictor
from clf.system import usable_cpus

logger = logging.getLogger(__name__)

DATA_EXTRA_HINT = "clf infer --ray needs the data extra: pip install 'clf[data]'"
DATA_EXTRA_MODULES = ("ray", "pandas", "pyarrow")  # what `ray[data]` brings that ray.data imports
# Images per actor call (one map_batches batch): large enough that Ray's per-call cost is small beside decoding and
# session.run (cnn @ 64 px on 2 cores: calls of ~250 images take 0.3-0.5 s and follow each other within ~0.02 s in
# an actor), small enough that every actor gets work early and the progress bar moves.
ROWS_PER_CALL = 256
MIN_LOCAL_ACTORS = 2
CALLS_PER_ACTOR = 2  # the fewest calls each actor gets when there are few images
CPU_PROVIDER = "CPUExecutionProvider"


def check_data_extra() -> None:
    """Raises ClfError (one line, exit 2) when Ray Data is not installed (looked up without importing ray: it reads
    its loopback environment once, at import)."""
    if any(importlib.util.find_spec(name) is None for name in DATA_EXTRA_MODULES):
        raise ClfError(DATA_EXTRA_HINT)


def local_actors(cfg: InferConfig) -> int:
    """--actors, else the usable cores (at least 2: Ray Data's pipeline overlaps one actor's decode with another's
    session.run)."""
    return cfg.actors or max(MIN_LOCAL_ACTORS, usable_cpus())


def cluster_actors(cfg: InferConfig, cluster_cpus: float) -> int:
    """--actors, else as many as the cluster's CPUs hold at --actor-threads each."""
    return cfg.actors or max(1, int(cluster_cpus // cfg.actor_threads))


def plan_calls(images: int, actors: int) -> tuple[int, int]:
    """(actor calls, actors) for `images`: calls of about ROWS_PER_CALL images, yet a few images still make
    CALLS_PER_ACTOR calls per actor (every actor works); no more actors than calls (one without a call would only
    start up)."""
    calls = max(-(-images // ROWS_PER_CALL), min(images, CALLS_PER_ACTOR * actors))
    return calls, min(actors, calls)


class PredictorActor:
    """One Ray actor: ONE Predictor (one onnxruntime session) for every batch of (index, path) rows it is given.

    Returns per row: its index, whether it decoded, its logits (NaN where it did not), the reason it did not, and
    the actor's clf error (empty when none). A clf error travels as data: Ray Data re-raises an actor's exception
    as its own UserCodeException, whose text is a remote traceback and whose cause is lost.
    """

    def __init__(self, cfg: InferConfig) -> None:
        self.predictor: Predictor | None = None
        self.error = ""
        try:  # one decode thread beside the session's: the actors share the cores out between them
            self.predictor = make_predictor(cfg, session_threads=cfg.actor_threads, workers=1)
        except ClfError as exc:  # a node that cannot open the model: said with the first rows
            self.error = _error_text(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(path) for path in batch["path"]]
        if self.predictor is None:
            return _error_rows(batch, self.error)
        try:  # NaN/inf outputs are left to the driver, which names the images of the whole run
            result = self.predictor.predict(paths, strict=False, check_finite=False)
        except ClfError as exc:
            return _error_rows(batch, _error_text(exc))
        ok = np.zeros(len(paths), bool)
        ok[result.ok_indices] = True
        logits = np.full((len(paths), len(self.predictor.classes)), np.nan, np.float32)
        logits[result.ok_indices] = result.logits
        reasons = np.full(len(paths), "", dtype=object)
        reasons[np.flatnonzero(~ok)] = [reason for _, reason in result.failures]  # failures come in input order
        return {"index": np.asarray(batch["index"], np.int64), "ok": ok, "logits": logits, "reason": reasons,
                "error": np.full(len(paths), "", dtype=object)}


def _error_text(exc: ClfError) -> str:
    """'ModelError:<one line>': the class and the message, so the driver raises the same error."""
    return f"{type(exc).__name__}:{one_line(exc)}"


def _error_rows(batch: dict[str, np.ndarray], error: str) -> dict[str, np.ndarray]:
    count = len(batch["index"])
    return {"index": np.asarray(batch["index"], np.int64), "ok": np.zeros(count, bool),
            "logits": np.zeros((count, 1), np.float32), "reason": np.full(count, "", dtype=object),
            "error": np.full(count, error, dtype=object)}


def _raise_actor_error(text: str) -> None:
    """Raise the clf error an actor returned (its class from clf.errors, ClfError when unknown)."""
    name, _, message = text.partition(":")
    error = getattr(errors, name, ClfError)
    raise (error if isinstance(error, type) and issubclass(error, ClfError) else ClfError)(message)


def predict_on_ray(
    cfg: InferConfig, predictor: Predictor, paths: list[str], progress: Callable[[int], Any] | None = None
) -> PredictionResult:
    """Predict `paths` on Ray Data (a local Ray bound to loopback, or the cluster at cfg.address) and return what
    ``predictor.predict(paths)`` returns: rows in input order, unreadable images listed (and logged here, by name,
    as plain infer logs them).

    Args:
        predictor: the model opened here (checked before Ray starts): its classes and task read the rows.
        progress: called with the running count of images done.

    Raises:
        ClfError: Ray did not start or the cluster cannot be reached; an actor's own clf error (ModelError for NaN
            output, DataError for a model a node cannot open) as it was raised there.
    """
    local = cfg.address is None
    ray = ray_local.use_loopback() if local else importlib.import_module("ray")
    times = [time.perf_counter()]
    try:
        ray_local.start_ray(ray, cfg.address, usable_cpus())
        times.append(time.perf_counter())
        columns = _run_pipeline(ray, _for_every_node(cfg), paths, predictor, progress)
        times.append(time.perf_counter())
    finally:
        ray_local.shutdown_ray(ray)
    times.append(time.perf_counter())
    if len(times) == 4:  # read by benchmarks/infer_ray.py (with -v)
        logger.debug("Ray Data timing: start %.2f s, pipeline %.2f s, stop %.2f s", *np.diff(times))
    return _prediction_result(columns, paths, predictor)


def _for_every_node(cfg: InferConfig) -> InferConfig:
    """The model (and a --labels file) as absolute paths: the actors may run in another folder or machine."""
    labels = labels_file(cfg)
    return dataclasses.replace(cfg, model=os.path.abspath(cfg.model),
                               labels=os.path.abspath(labels) if labels else cfg.labels)


def _run_pipeline(ray: Any, cfg: InferConfig, paths: list[str], predictor: Predictor,
                  progress: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """from_items -> map_batches(PredictorActor) -> every row back here, as columns in the order they arrived."""
    import ray.data

    _quiet_ray_data(ray.data.DataContext.get_current())
    local = cfg.address is None
    wanted = local_actors(cfg) if local else cluster_actors(cfg, float(ray.cluster_resources().get("CPU", 0.0)))
    calls, actors = plan_calls(len(paths), wanted)
    items = [{"index": i, "path": os.path.abspath(path)} for i, path in enumerate(paths)]
    with warnings.catch_warnings():
        # max_restarts=0 (a failing actor fails the run: its error is the user's answer) is a "ray_remote_args" to
        # map_batches, deprecated from Ray 2.64 on; without it Ray restarts the actor, and its core worker logs an
        # error line about restarting one whose constructor arguments sit in the object store.
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items(items, override_num_blocks=calls).map_batches(
            PredictorActor, fn_constructor_kwargs={"cfg": cfg}, batch_format="numpy",
            batch_size=-(-len(paths) // calls),  # one block, one actor call: Ray Data never splits or bundles blocks
            compute=ray.data.ActorPoolStrategy(size=actors), max_restarts=0,
            **_actor_resources(cfg, predictor, actors, local),
        )
    logger.debug("Ray Data: %d images in %d batches on %d actor(s)", len(paths), calls, actors)
    try:
        return _gather(dataset, progress)
    except ClfError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else Ray Data raises (its own errors, an actor that died)
        raise ClfError(f"Ray Data could not predict ({one_line(exc)}); see Ray's logs under "
                       "/tmp/ray/session_latest/logs") from None


def _gather(dataset: Any, progress: Callable[[int], Any] | None) -> dict[str, np.ndarray]:
    """Run the pipeline; its rows as columns, in the order they arrived."""
    parts: list[dict[str, np.ndarray]] = []
    done, started = 0, time.perf_counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if not parts:  # the actors' start-up (imports, session) is in this wait
            logger.debug("Ray Data timing: first rows after %.2f s", time.perf_counter() - started)
        if len(batch["error"]) and batch["error"][0]:
            _raise_actor_error(str(batch["error"][0]))
        parts.append(batch)
        done += len(batch["index"])
        if progress is not None:
            progress(done)
    return {key: np.concatenate([part[key] for part in parts]) for key in ("index", "ok", "logits", "reason")}


def _actor_resources(cfg: InferConfig, predictor: Predictor, actors: int, local: bool) -> dict[str, float]:
    """Locally the actors share this machine's cores (and its GPU when the model runs on one); on a cluster each asks
    for the cores its session uses (and a GPU when this machine's model runs on one)."""
    gpu = predictor.provider != CPU_PROVIDER
    if local:
        return {"num_cpus": usable_cpus() / actors, "num_gpus": 1 / actors if gpu else 0}
    return {"num_cpus": float(cfg.actor_threads), "num_gpus": 1 if gpu else 0}


def _quiet_ray_data(context: Any) -> None:
    """clf draws its own progress bar and summary line: no Ray Data bars or per-run INFO lines (unless -v)."""
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def _prediction_result(columns: dict[str, np.ndarray], paths: list[str], predictor: Predictor) -> PredictionResult:
    """The rows in index order as a PredictionResult; each unreadable image logged as plain infer logs it.

    Raises:
        ModelError: the model output NaN or inf for some images.
    """
    order = np.argsort(columns["index"], kind="stable")
    index, ok = columns["index"][order], columns["ok"][order]
    failures = [(paths[i], str(reason)) for i, reason in zip(index[~ok], columns["reason"][order][~ok])]
    for path, reason in failures:
        logger.warning("%s: %s; skipped", path, reason)
    result = PredictionResult(sources=list(paths), logits=columns["logits"][order][ok], ok_indices=index[ok],
                              failures=failures, classes=list(predictor.classes), task=predictor.task)
    predictor.check_result(result)  # NaN/inf: the same ModelError, naming the same images, as plain infer
    return result
