"""Batched onnxruntime inference with the training preprocessing, as a pipeline.

Decoding and resizing run in a thread pool (OpenCV releases the GIL) straight into a small ring of
preallocated uint8 NHWC buffers, a couple of batches ahead, while ``session.run`` (which also releases
the GIL) works on the current batch. A bad image is reported by name and reason and skipped; the
others are still predicted. With test-time augmentation (``tta``) the session also runs on flips of each
preprocessed batch and the softmax probabilities of the views are averaged, exactly as an exported TTA graph does.
The model's contract (inputs, outputs, metadata) is checked by clf.serve.model_contract, the TTA views and
their average are clf.serve.tta_views', the results handed out (PredictionResult, Batch) clf.serve.predictions'.
No torch here: a deployed host has onnxruntime, numpy and OpenCV only.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

# clf.data.preprocess first: it quiets OpenCV's own stderr warnings, which must happen before cv2 is imported.
from clf.data.preprocess import ImageSource, load_resized, max_image_pixels, normalize_batch  # isort: skip

import cv2
import numpy as np

from clf.choices import TTA_VIEWS
from clf.config import Preprocess
from clf.errors import DataError, ModelError, SettingError, one_line
from clf.probabilities import log_softmax as log_softmax  # re-exported: clf.serve's softmax / log_softmax
from clf.probabilities import softmax as softmax
from clf.system import total_memory, usable_cpus
from clf.serve.metadata import model_task
from clf.serve.model_contract import check_single_input, check_tta_in_graph, input_dtype, model_info
from clf.serve.predictions import Batch, PredictionResult
from clf.serve.session import create_session
from clf.serve.tta_views import average_views, flip_view, view_buffer

logger = logging.getLogger(__name__)


class Predictor:
    """Predict classes for images with an exported clf ONNX model (or any [N,3,H,W] -> [N,C] model).

    Args:
        model_path: the .onnx file.
        device: "auto", "cpu", "cuda" or "tensorrt"; see ``clf.serve.session.create_session``.
        batch_size: images per ``session.run`` (a model with a fixed batch dimension uses that instead).
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        preprocess: a Preprocess replacing the model's clf metadata, or a mapping of the Preprocess fields to
            change (e.g. ``{"size": (224, 224)}``); required, with at least ``size``, for models exported by
            other tools.
        classes: overrides the class names (default for non-clf models: "0", "1", ...).
        verbose: let onnxruntime's warnings through.
        workers: decode threads (None: one per usable core, at most 8).
        prefetch: batches decoded ahead of the one being run.
        tta: test-time augmentation, a name of clf.choices.TTA_VIEWS: the session runs on every flipped view of each
            batch and the views' scores are averaged (softmax probabilities; a multi-label model's sigmoid
            probabilities, the logits being logit(mean p)) ("none": one run).

    Attributes:
        provider: the execution provider actually running the model.
        info: ModelInfo (classes, preprocess, provenance).

    Thread safety: one Predictor may serve several threads at once. ``predict`` and ``iter_predict`` keep their
    buffers (the uint8 decode ring and the float input) per call, allocated once per call, and onnxruntime's
    ``session.run`` is thread-safe; nothing a call writes is shared with another call.

    Raises (at construction): DataError for a file onnxruntime cannot load, an input that is not float
    [N, 3, H, W], an output that is not [N, C], repeated class names or a class count that does not match, or
    ``tta`` on a model whose graph already averages TTA views.
    Raises (while predicting): ModelError when the model outputs NaN or inf (a broken model is never silent).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        preprocess: Preprocess | Mapping[str, Any] | None = None,
        classes: Sequence[str] | None = None,
        verbose: bool = False,
        workers: int | None = None,
        prefetch: int = 2,
        tta: str = "none",
    ) -> None:
        if batch_size < 1:
            raise SettingError(f"batch_size must be >= 1, got {batch_size}")
        if tta not in TTA_VIEWS:
            raise SettingError(f"tta must be one of {', '.join(TTA_VIEWS)}, got {tta!r}")
        self.model_path = Path(model_path)
        # No spinning: busy-waiting onnxruntime threads would take the cores from the decode threads between runs.
        self.session, self.provider = create_session(
            model_path, device=device, verbose=verbose, threads=threads, spinning=False
        )
        inputs = self.session.get_inputs()
        check_single_input(self.model_path, inputs)
        model_input, model_output = inputs[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = model_input.name, model_output.name
        props = self.session.get_modelmeta().custom_metadata_map
        self.info = model_info(self.model_path, props, preprocess, classes, model_output.shape)
        self._input_dtype = input_dtype(self.model_path, model_input, self.preprocess.size)
        fixed_batch = model_input.shape[0]
        self._fixed_batch = fixed_batch if isinstance(fixed_batch, int) and fixed_batch > 0 else None
        self.batch_size = self._fixed_batch or int(batch_size)
        self.workers = int(workers) if workers else min(8, usable_cpus())
        self.prefetch = max(0, int(prefetch))
        check_tta_in_graph(self.model_path, props, tta)
        self.task = model_task(self.info)
        self.tta = tta
        self.views = TTA_VIEWS[tta]

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.model_path)!r}, provider={self.provider!r}, classes={len(self.classes)}, "
            f"size={self.preprocess.size}, batch_size={self.batch_size}, tta={self.tta!r})"
        )

    def predict(
        self,
        sources: Sequence[ImageSource],
        strict: bool = False,
        progress: Callable[[int], Any] | None = None,
        check_finite: bool = True,
    ) -> PredictionResult:
        """Predict every source; unreadable ones are skipped and listed in ``failures``.

        Args:
            sources: image paths, encoded image bytes, or RGB uint8 arrays (H, W, 3).
            strict: raise DataError on the first unreadable image instead of skipping it.
            progress: called after each batch with the number of sources handled so far.
            check_finite: raise ModelError for NaN/inf outputs; False leaves that to the caller's ``check_result``
                on the whole run (a Ray actor predicts a part of it: the error must name the run's images).

        Returns:
            PredictionResult in input order (with TTA, ``plain_logits`` holds the unflipped view's logits too).

        Raises:
            DataError: with ``strict``, the first unreadable image.
            ModelError: the model output NaN or inf for some images (how many, and the first few are named).
        """
        sources = list(sources)
        max_image_pixels()  # a bad $CLF_MAX_IMAGE_PIXELS is one error for the run, not a skip of every image
        ok_parts, logit_parts, plain_parts, failures = [], [], [], []
        for batch, plain in self._batches(sources, strict, progress):
            ok_parts.append(batch.ok_indices)
            logit_parts.append(batch.logits)
            plain_parts.append(plain)
            failures.extend(batch.failures)
        num_classes = len(self.classes)

        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, num_classes), np.float32)

        result = PredictionResult(
            sources=sources,
            logits=joined(logit_parts),
            ok_indices=np.concatenate(ok_parts) if ok_parts else np.zeros(0, np.int64),
            failures=failures,
            classes=list(self.classes),
            plain_logits=joined(plain_parts) if len(self.views) > 1 else None,
            task=self.task,
        )
        if check_finite:
            self.check_result(result)
        return result

    def check_result(self, result: PredictionResult) -> None:
        """Raises ModelError when the model output NaN or inf for some of the result's images (named)."""
        self._check_finite(result.logits, result.ok_indices, result.sources)

    def iter_predict(
        self,
        sources: Sequence[ImageSource],
        strict: bool = False,
        progress: Callable[[int], Any] | None = None,
    ) -> Iterator[Batch]:
        """Like ``predict`` but yields one Batch at a time, in input order (for streaming output).

        A batch with NaN or inf outputs raises ModelError (naming that batch's images) instead of being yielded.
        """
        sources = list(sources)
        for batch, _ in self._batches(sources, strict, progress):
            self._check_finite(batch.logits, batch.ok_indices, sources)
            yield batch

    def _batches(
        self, sources: list[Any], strict: bool, progress: Callable[[int], Any] | None
    ) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """The decode/run pipeline, yielding each Batch with its unflipped view's logits (None without TTA).
        Its buffers belong to this call: concurrent calls share nothing they write."""
        starts = iter(range(0, len(sources), self.batch_size))
        height, width = self.preprocess.size
        capacity = max(1, min(self.batch_size, len(sources)))  # a one-image request allocates one row, not a batch
        self._check_buffer_memory(capacity, height, width)
        ring = [np.empty((capacity, height, width, 3), np.uint8) for _ in range(self.prefetch + 1)]
        # One float input for the whole call: session.run has consumed it before the next batch is normalised.
        float_input = np.empty((capacity, 3, height, width), np.float32)
        flipped: list[np.ndarray] = []  # with TTA: the one contiguous buffer the flipped views are copied into
        pending: deque[tuple[range, np.ndarray, list[Future]]] = deque()
        done = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="clf-decode") as pool:

            def submit_next(buffer: np.ndarray) -> None:
                start = next(starts, None)
                if start is not None:
                    indices = range(start, min(start + self.batch_size, len(sources)))
                    pending.append((indices, buffer, self._submit(pool, buffer, indices, sources)))

            try:
                for buffer in ring:
                    submit_next(buffer)
                while pending:
                    indices, buffer, futures = pending.popleft()
                    failed = self._collect(futures, sources, strict)  # {index: reason}
                    rows = [r for r, i in enumerate(indices) if i not in failed]
                    batch_input = self._normalize(buffer, rows, len(indices), float_input)
                    submit_next(buffer)  # the buffer is free again: decode the next batch into it during run
                    if len(self.views) == 1:
                        logits, plain = self._run(batch_input, len(rows)), None
                    else:
                        logits, plain = self._run_views(batch_input, len(rows), flipped)
                    done += len(indices)
                    if progress is not None:
                        progress(done)
                    ok = np.fromiter((indices[r] for r in rows), dtype=np.int64, count=len(rows))
                    yield Batch(ok, logits, [(sources[i], failed[i]) for i in sorted(failed)]), plain
            finally:  # an error, strict stop or an abandoned generator: drop the queued decode work
                for _, _, futures in pending:
                    for future in futures:
                        future.cancel()

    def _check_buffer_memory(self, capacity: int, height: int, width: int) -> None:
        """Refuse buffers larger than the machine's memory (a huge --batch-size or input size) before allocating
        them: numpy would raise MemoryError, or the kernel kill the process, partway through the run."""
        floats = 4 if len(self.views) == 1 else 8  # one float32 batch, and its flipped copy with TTA
        per_image = height * width * 3 * (self.prefetch + 1 + floats)  # + the uint8 ring
        total = total_memory()
        if not total or capacity * per_image <= total:
            return
        fix = "lower --batch-size" if per_image <= total else "the model's input size is too large for this machine"
        raise DataError(
            f"{self.model_path}: batches of {capacity} images of {height}x{width} need "
            f"{capacity * per_image / 1e9:.3g} GB of buffers, more than this machine's {total / 1e9:.3g} GB; {fix}"
        )

    def _submit(
        self, pool: ThreadPoolExecutor, buffer: np.ndarray, indices: range, sources: list[Any]
    ) -> list[Future]:
        """Split a batch into one contiguous chunk per worker: per-image tasks cost more than tiny decodes."""
        chunk = -(-len(indices) // self.workers)
        return [
            pool.submit(_decode_into, buffer, row, indices[row : row + chunk], sources, self.preprocess)
            for row in range(0, len(indices), chunk)
        ]

    def _collect(self, futures: list[Future], sources: list[Any], strict: bool) -> dict[int, str]:
        failed: dict[int, str] = {}
        for future in futures:
            failed.update(future.result())
        for i in sorted(failed):
            name = _display_name(sources[i], i)
            if strict:
                raise DataError(f"{name}: {failed[i]} (--strict)")
            logger.warning("%s: %s; skipped", name, failed[i])
        return failed

    def _normalize(self, buffer: np.ndarray, rows: list[int], filled: int, out: np.ndarray) -> np.ndarray:
        """The decoded rows as float NCHW in `out`; padded with zeros when the model has a fixed batch size."""
        images = buffer[:filled] if len(rows) == filled else buffer[rows]
        batch = normalize_batch(images, self.preprocess, out=out[: len(images)])
        if self._fixed_batch and len(batch) < self._fixed_batch:
            batch = np.concatenate([batch, np.zeros((self._fixed_batch - len(batch), *batch.shape[1:]), batch.dtype)])
        return batch if self._input_dtype is np.float32 else batch.astype(self._input_dtype)

    def _run(self, batch: np.ndarray, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        (logits,) = self.session.run([self.output_name], {self.input_name: batch})
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape != (len(batch), len(self.classes)):
            raise DataError(f"{self.model_path}: output '{self.output_name}' has shape {list(logits.shape)} for "
                            f"{len(batch)} images, not [N, C] with C = {len(self.classes)} classes; "
                            "clf needs a classifier with one row of class scores per image")
        return logits[:count]

    def _run_views(self, batch: np.ndarray, count: int, flipped: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The session on every TTA view of the batch: (log of the views' mean softmax, the unflipped logits).

        onnxruntime needs a contiguous input, so each flipped view is copied into one buffer reused for the call.
        """
        outputs = [self._run(batch, count)]
        view_input = view_buffer(flipped, batch)
        for view in self.views[1:]:
            np.copyto(view_input, flip_view(batch, view))
            outputs.append(self._run(view_input, count))
        return average_views(outputs, self.task), outputs[0]

    def _check_finite(self, logits: np.ndarray, ok_indices: np.ndarray, sources: list[Any]) -> None:
        """A model that outputs NaN or inf is broken (diverged training, bad export): never pass it on silently,
        as argmax would turn every such row into class 0."""
        bad_rows = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if bad_rows.size == 0:
            return
        first = [_display_name(sources[ok_indices[r]], int(ok_indices[r])) for r in bad_rows[:3]]
        more = ", ..." if bad_rows.size > 3 else ""
        raise ModelError(
            f"{self.model_path}: the model outputs NaN or inf for {bad_rows.size} of {len(logits)} images "
            f"({', '.join(first)}{more}); it is broken (diverged training or a bad export): re-train or re-export it"
        )


def _decode_into(
    buffer: np.ndarray, first_row: int, indices: range, sources: list[Any], pre: Preprocess
) -> dict[int, str]:
    """Worker: decode + resize sources[indices] into buffer[first_row:]; returns {index: reason} for bad ones."""
    failed: dict[int, str] = {}
    for row, i in enumerate(indices, start=first_row):
        try:
            buffer[row] = load_resized(sources[i], pre)
        except (DataError, cv2.error) as exc:
            failed[i] = _reason(exc, sources[i])
    return failed


def _display_name(source: Any, index: int) -> str:
    """How a source is named in messages: its path, or its position for in-memory inputs."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    kind = "array" if isinstance(source, np.ndarray) else "bytes"
    return f"<{kind} #{index}>"


def _reason(exc: Exception, source: Any) -> str:
    """The DataError text without its leading "<source>: " (the caller knows the source)."""
    if isinstance(exc, cv2.error):
        return f"cannot process image ({one_line(exc)})"
    text = str(exc)  # the prefix first: a file name may hold a newline, which one_line would cut the reason at
    prefixes = [str(source)] if isinstance(source, (str, os.PathLike)) else ["<bytes>", "in-memory image"]
    for prefix in prefixes:
        if text.startswith(prefix + ": "):
            return one_line(DataError(text[len(prefix) + 2 :]))
    return one_line(exc)
