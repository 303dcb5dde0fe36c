"""The teacher of `clf distill`: an .onnx clf wrote (single, ensemble, TTA, calibrated), or a run folder or fold
group exported to one, run through serve's Predictor on the views the student trains on."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clf.data.pseudo_labels import file_sha256
from clf.errors import DataError, one_line
from clf.serve.metadata import deployment_from_props, has_clf_metadata
from clf.serve.predictor import Predictor

logger = logging.getLogger(__name__)

NOT_A_MODEL = ("a teacher is an .onnx file clf exported (`clf export RUN --onnx`), a run folder or a fold group")
VIEW_CHUNK = 256  # images whose augmented views are held in memory at once


def teacher_sha256(path: Path) -> str:
    """The teacher's identity: an .onnx file's sha256; a folder's, the sha256 of its checkpoints' (every best.pt
    under it, by relative path), so that a resumed run can tell a retrained teacher from the one it started with.

    Raises:
        DataError: nothing at `path`, or a folder without a finished run.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; {NOT_A_MODEL}")
    if path.is_file():
        return file_sha256(path)
    checkpoints = sorted(path.rglob("best.pt"))
    if not checkpoints:
        raise DataError(f"{path}: no best.pt in this folder; {NOT_A_MODEL}")
    digest = hashlib.sha256()
    for checkpoint in checkpoints:
        digest.update(f"{checkpoint.relative_to(path).as_posix()}\0{file_sha256(checkpoint)}\n".encode())
    return digest.hexdigest()


def folder_teacher_classes(folder: Path) -> list[str]:
    """The classes of a run folder or fold group teacher, read from its checkpoints (before anything is exported).

    Raises:
        DataError: a best.pt that is not a clf checkpoint, or members of different classes.
    """
    from clf.errors import ModelError
    from clf.models.checkpoint_load import load_checkpoint

    found: dict[tuple[str, ...], Path] = {}
    for checkpoint in sorted(folder.rglob("best.pt")):
        try:
            classes = load_checkpoint(checkpoint).get("classes")
        except ModelError as exc:
            raise DataError(f"{checkpoint}: {one_line(exc)}; {NOT_A_MODEL}") from None
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            raise DataError(f"{checkpoint}: the checkpoint records no class names; {NOT_A_MODEL}")
        found.setdefault(tuple(classes), checkpoint)
    if len(found) > 1:
        first, second = list(found.items())[:2]
        raise DataError(f"{folder}: its runs have different classes ({first[1]}: {', '.join(first[0])}; "
                        f"{second[1]}: {', '.join(second[0])}); give one run or a fold group of one data set")
    return list(next(iter(found)))


def open_predictor(model: Path, device: str) -> Predictor:
    """serve's Predictor on a clf model.

    Raises:
        DataError: a file onnxruntime cannot load, or an ONNX without clf metadata.
    """
    try:
        predictor = Predictor(model, device=device, batch_size=64)
    except DataError as exc:
        raise DataError(f"{model}: not a clf model ({one_line(exc)}); {NOT_A_MODEL}") from None
    if not has_clf_metadata(predictor.session.get_modelmeta().custom_metadata_map):
        raise DataError(f"{model}: an ONNX model without clf metadata (exported by another tool?); {NOT_A_MODEL}")
    if predictor.task.multilabel:
        raise DataError(f"{model}: a multi-label model; `clf distill` takes single-label teachers")
    return predictor


def check_classes(source: Path, teacher: Sequence[str], data: Sequence[str]) -> list[int]:
    """The teacher's column of each class of DATA (same classes, any order).

    Raises:
        DataError: the class sets differ.
    """
    if sorted(teacher) != sorted(data):
        missing = [name for name in data if name not in teacher] or ["-"]
        extra = [name for name in teacher if name not in data] or ["-"]
        raise DataError(f"{source}: the teacher's classes ({', '.join(teacher)}) differ from DATA's "
                        f"({', '.join(data)}): missing {', '.join(missing)}, extra {', '.join(extra)}; distill from "
                        "a model of DATA's classes")
    return [list(teacher).index(name) for name in data]


def members_of(predictor: Predictor) -> list[dict[str, Any]]:
    """The models inside the teacher, from its metadata (an ensemble's members; a single model: itself)."""
    props = predictor.session.get_modelmeta().custom_metadata_map
    deployment = deployment_from_props(props, str(predictor.model_path))
    if deployment is not None:
        return [{"run": m.get("run"), "arch": m.get("arch"), "weight": m.get("weight")} for m in deployment.members]
    return [{"run": predictor.info.run_name, "arch": predictor.info.arch, "weight": 1.0}]


class OnnxTeacher:
    """clf.train.distillation.Teacher over an .onnx file, or a run folder / fold group exported on first use (into
    a temp folder: only rank 0 asks, once; a resumed run reads its cached predictions and never exports again).

    Args:
        source: the TEACHER argument. sha256: teacher_sha256(source). unlabelled: the --unlabelled images.
        device: onnxruntime's device (the student's --device: cpu, else auto).
    """

    def __init__(self, source: Path, sha256: str, unlabelled: Sequence[str], device: str = "auto") -> None:
        self.source, self.sha256, self.device = source, sha256, device
        self._unlabelled = list(unlabelled)
        self._record: dict[str, Any] = {"teacher": str(source), "sha256": sha256}

    @property
    def unlabelled(self) -> Sequence[str]:
        return self._unlabelled

    def record(self) -> dict[str, Any]:
        return dict(self._record)

    def soft_targets(self, paths: Sequence[str], keys: Sequence[str], views: int, make_view: Any,
                     classes: Sequence[str]) -> np.ndarray:
        with self.model_file() as model:
            predictor = open_predictor(model, self.device)
            columns = check_classes(self.source, predictor.classes, classes)
            self._record.update(members=members_of(predictor), onnx_sha256=file_sha256(model))
            probs = np.zeros((len(paths), views, len(classes)), dtype=np.float32)
            probs[:, 0] = self._predict(predictor, list(paths))[:, columns]  # the files, as `clf infer` reads them
            for view in range(1, views):
                for start in range(0, len(paths), VIEW_CHUNK):
                    part = range(start, min(start + VIEW_CHUNK, len(paths)))
                    images = [make_view(paths[i], keys[i], view) for i in part]
                    probs[start:part.stop, view] = self._predict(predictor, images)[:, columns]
        return probs

    def _predict(self, predictor: Predictor, sources: list[Any]) -> np.ndarray:
        result = predictor.predict(sources)
        if result.failures:
            source, reason = result.failures[0]
            raise DataError(f"{source}: the teacher could not read this image ({reason})")
        return result.probs().astype(np.float32)

    @contextmanager
    def model_file(self) -> Iterator[Path]:
        """The teacher's .onnx: the file itself, or a folder exported into a temp folder for as long as it runs."""
        if self.source.is_file():
            yield self.source
            return
        from clf.config import ExportConfig
        from clf.export.targets import run_export

        with tempfile.TemporaryDirectory(prefix="clf-teacher-") as folder:
            output = Path(folder) / "teacher.onnx"
            logger.info("teacher: exporting %s to ONNX", self.source)
            run_export(ExportConfig(checkpoint=str(self.source), output=str(output)))
            yield output
