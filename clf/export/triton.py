"""`clf export --triton REPO`: a model folder of an NVIDIA Triton Inference Server model repository.

    REPO/<model>/config.pbtxt      platform onnxruntime_onnx, batch axis left to max_batch_size, dynamic batching
    REPO/<model>/labels.txt        one class name a line: Triton's classification extension answers with names
    REPO/<model>/preprocess.json   the Preprocess, exactly as in the model's metadata (clients call clf's preprocess)
    REPO/<model>/1/model.onnx      the model, exported and gated exactly as `clf export` does (+ its proof beside it)
    REPO/<model>/.clf-folder.json  clf's ownership marker: a re-export replaces only a folder clf wrote

The export runs into a temporary folder first; nothing reaches REPO unless its gate passed. The new model folder is
built beside the old one under a clf temp name and renamed into place; other models in REPO are never touched.
Folders and files get the permissions `cp` would give them (0777 / 0666 minus the umask): a Triton server running
under another user must read them. A folder under clf's temp name that a killed export left in REPO is removed by
the next export there, when clf.atomic.is_stale_temp proves it stale and it holds only what its marker lists.

The model is named --model-name, else after what is exported: the run, the fold group, or for an ensemble of runs
`ensemble-<member>-<member>...` (each member's folder name), so that an ensemble never replaces the folder a single
export of its first member writes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import onnx

from clf.atomic import (TEMP_SUFFIX, atomic_copy, check_output_file, check_outputs, clean_stale_temps, folder_mode,
                        is_stale_temp, storage_error, temp_prefix)
from clf.config import ExportConfig
from clf.errors import ClfError, ModelError, ParityError
from clf.export.onnx_export import (ExportResult, default_name, export_onnx, kept_aside_path, proof_path,
                                   remove_stale_temps)
from clf.ownership import MARKER_NAME, clear_owned, foreign_entries, mark_folder, read_marker, record_files
from clf.serve.metadata import KEY_CLASSES, KEY_PREPROCESS

logger = logging.getLogger(__name__)

KIND = "triton-model"  # the ownership marker's kind of a model folder clf wrote
WHAT = "Triton model folder"
CONFIG_NAME = "config.pbtxt"
LABELS_NAME = "labels.txt"
PREPROCESS_NAME = "preprocess.json"
VERSION = "1"
MODEL_FILE = "model.onnx"  # Triton's onnxruntime backend default_model_filename
PLATFORM = "onnxruntime_onnx"
MAX_QUEUE_DELAY_US = 1000  # how long Triton may hold a request to fill a batch: 1 ms
# ONNX tensor element type -> Triton data type
DATA_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
              onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT64: "TYPE_INT64"}


@dataclass(frozen=True)
class TritonResult:
    """What `export_triton` wrote: the model folder, its files, and the export (with its proof) behind it."""

    kind: ClassVar[str] = "triton"  # the export target (clf.export.targets)

    folder: Path
    model_name: str
    max_batch_size: int
    preferred_batch_sizes: list[int]
    files: list[str]
    export: ExportResult

    def onnx_result(self) -> ExportResult:
        """The ONNX export behind the repository entry (its model file and parity proof)."""
        return self.export


MAX_NAME = 128  # clf.config.MODEL_NAME_RULE


def model_name(cfg: ExportConfig, checkpoint: Path, run_name: str) -> str:
    """--model-name, else the run's name (its folder's name for a bare checkpoint) made a safe folder name.

    A name cut to MAX_NAME characters ends in a hash of the whole name, so two long names never share a folder.
    """
    if cfg.model_name:
        return cfg.model_name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name or checkpoint.parent.name).lstrip("._-")
    if len(name) > MAX_NAME:
        tag = "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: MAX_NAME - len(tag)] + tag
    return name or "model"


def exported_name(checkpoints: list[Path], group: Path | None) -> str:
    """What the export is called before it is made a folder name: the fold group's name; for an ensemble of runs
    "ensemble-" and each member's folder name; "" for one run (its checkpoint's run name is used)."""
    if group is not None:
        return group.name
    if len(checkpoints) > 1:
        return "-".join(["ensemble", *(ckpt.parent.name for ckpt in checkpoints)])
    return ""


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 4 up to max_batch_size, and max_batch_size itself: the batches Triton tries to form."""
    sizes = [n for n in (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if n < max_batch_size]
    return [*sizes, max_batch_size]


def tensor_spec(value: onnx.ValueInfoProto) -> tuple[str, str, list[int]]:
    """(name, Triton data type, dims without the batch axis) of a graph input or output.

    Raises:
        ModelError: a type Triton config cannot state here, or a dynamic axis besides the batch.
    """
    tensor = value.type.tensor_type
    if tensor.elem_type not in DATA_TYPES:
        raise ModelError(f"{value.name}: ONNX element type {tensor.elem_type} has no Triton data type here")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:]
    return value.name, DATA_TYPES[tensor.elem_type], dims


def config_text(name: str, model: onnx.ModelProto, max_batch_size: int) -> str:
    """config.pbtxt for the model: names, types and dims read from the ONNX graph itself (never typed twice)."""
    (inp,), (out,) = model.graph.input, model.graph.output
    in_name, in_type, in_dims = tensor_spec(inp)
    out_name, out_type, out_dims = tensor_spec(out)
    preferred = ", ".join(map(str, preferred_batch_sizes(max_batch_size)))
    return f"""name: "{name}"
platform: "{PLATFORM}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{in_name}"
    data_type: {in_type}
    dims: [ {", ".join(map(str, in_dims))} ]
  }}
]
output [
  {{
    name: "{out_name}"
    data_type: {out_type}
    dims: [ {", ".join(map(str, out_dims))} ]
    label_filename: "{LABELS_NAME}"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
}}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""


def labels_text(classes: list[str]) -> str:
    """labels.txt: one class name a line, in logit order.

    Raises:
        ModelError: a class name with a line break (it would shift every name after it).
    """
    for name in classes:
        if "\n" in name or "\r" in name:
            raise ModelError(f"class {name!r} contains a line break; Triton's {LABELS_NAME} holds one name a line: "
                             "rename the class folder and train again")
    return "".join(f"{name}\n" for name in classes)


def check_repository(repo: Path, folder: Path) -> None:
    """Before any work: REPO is (or can become) a folder, and REPO/<model> is absent or a model folder clf wrote.

    Raises:
        ClfError: naming the path and what to do.
    """
    if repo.exists() and not repo.is_dir():
        raise ClfError(f"{repo}: --triton needs a model repository folder, and this is a file; give a folder")
    check_output_file(repo / CONFIG_NAME)  # the nearest existing parent is a folder we can write in
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ClfError(f"{folder}: exists and is not a model folder; choose another --model-name or move it")
    if folder.exists():
        marker = read_marker(folder)
        if marker is None or marker["kind"] != KIND:
            raise ClfError(f"{folder}: a model folder clf did not write; clf replaces only its own: choose another "
                           "--model-name or move it")
        foreign = foreign_entries(folder)
        if foreign:
            raise ClfError(f"{folder}: holds {len(foreign)} file(s) clf did not write ({', '.join(foreign[:3])}); clf "
                           "replaces only its own model folders: move them out or choose another --model-name")


def export_triton(cfg: ExportConfig) -> TritonResult:
    """Export and gate the model as `clf export` does (into a temporary folder), then write REPO/<model>/.

    Raises:
        ClfError: a repository or model folder that cannot be written or is not clf's; anything `export_onnx` raises.
        ParityError: the gate failed; nothing reaches REPO; the failed model is kept beside the checkpoint.
    """
    from clf.export.ensemble import resolve_sources
    from clf.models.checkpoint_load import load_checkpoint

    sources = resolve_sources(cfg)  # one run, several (an ensemble) or a fold group
    checkpoint = sources.checkpoints[0]
    run_name = (exported_name(sources.checkpoints, sources.group)
                or str(load_checkpoint(checkpoint).get("run_name") or ""))
    name = model_name(cfg, checkpoint, run_name)
    repo = Path(str(cfg.triton))
    folder = repo / name
    check_repository(repo, folder)
    clean_stale_builds(repo)
    home = sources.group or checkpoint.parent  # where a model that fails its gate is kept, as `clf export` keeps it
    failed = kept_aside_beside(home, "int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32")
    check_outputs({"the kept-aside model": failed, "its parity proof": proof_path(failed)},
                  inputs={"checkpoint": checkpoint})
    remove_stale_temps(home)  # a model failing its gate is copied there
    with tempfile.TemporaryDirectory(prefix="clf-triton-") as work:
        staged = Path(work) / MODEL_FILE
        try:
            result = export_onnx(replace(cfg, target="onnx", output=str(staged), triton=None, max_batch_size=None,
                                         model_name=None))
        except ParityError as exc:
            raise _kept_beside_checkpoint(exc, home, folder) from None
        model = onnx.load(str(staged), load_external_data=False)
        files = _write_folder(repo, folder, name, model, staged, result, cfg.max_batch_size)
    exported = replace(result, path=folder / VERSION / MODEL_FILE, proof=folder / VERSION / result.proof.name)
    return TritonResult(folder, name, cfg.max_batch_size, preferred_batch_sizes(cfg.max_batch_size), files, exported)


def _write_folder(repo: Path, folder: Path, name: str, model: onnx.ModelProto, staged: Path, result: ExportResult,
                  max_batch_size: int) -> list[str]:
    """Build the model folder under a clf temp name in REPO, then rename it into place (replacing clf's old one)."""
    props = {entry.key: entry.value for entry in model.metadata_props}
    texts = {CONFIG_NAME: config_text(name, model, max_batch_size),
             LABELS_NAME: labels_text(_classes(props, result.path)),
             PREPROCESS_NAME: props[KEY_PREPROCESS] + "\n"}
    copies = {f"{VERSION}/{MODEL_FILE}": staged, f"{VERSION}/{result.proof.name}": result.proof}
    files = sorted([*texts, *copies])
    try:
        repo.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=repo))
        os.chmod(building, folder_mode())  # mkdtemp makes it 0700: Triton runs under another user
    except OSError as exc:
        raise storage_error(repo, exc) from None
    try:
        mark_folder(building, KIND, files)
        for rel, text in texts.items():
            (building / rel).write_text(text, encoding="utf-8")
        (building / VERSION).mkdir()
        for rel, source in copies.items():
            shutil.copyfile(source, building / rel)
        for rel in files:
            _fsync(building / rel)
        _move_into_place(building, folder, repo)
    except OSError as exc:
        raise storage_error(folder, exc) from None
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)  # clf's own temp folder, never the user's
    return files


def _classes(props: dict[str, str], path: Path) -> list[str]:
    import json

    classes = json.loads(props[KEY_CLASSES])
    if not isinstance(classes, list):
        raise ModelError(f"{path}: corrupt clf metadata ({KEY_CLASSES})")
    return [str(c) for c in classes]


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _move_into_place(building: Path, folder: Path, repo: Path) -> None:
    """Rename the finished folder into place; an old folder of clf's is moved aside first and its files removed."""
    if not folder.exists():
        os.rename(building, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=repo))
    os.rmdir(old)  # a free name under clf's temp prefix: the old folder goes there
    os.rename(folder, old)
    os.rename(building, folder)
    if not remove_own_folder(old):  # checked clearable before the export; removes only what clf listed
        logger.warning("%s: the previous model folder kept files clf did not write; left as %s", folder, old)


def remove_own_folder(folder: Path) -> bool:
    """Remove a model folder clf wrote: the files its marker lists, its stale temps, the marker, the folders left
    empty. An unmarked folder goes only when empty (a build killed before its marker). True when it is gone."""
    clean_stale_temps(folder)
    if read_marker(folder) is not None:
        try:
            clear_owned(folder, KIND, WHAT)
        except ClfError:  # something of the user's inside: nothing is removed
            return False
        (folder / MARKER_NAME).unlink(missing_ok=True)
    try:
        os.rmdir(folder)
    except OSError:
        return False
    return True


def clean_stale_builds(repo: Path) -> None:
    """Folders a killed export left in REPO under clf's temp name (a model folder being built, or the old one moved
    aside): removed when proven stale (clf.atomic.is_stale_temp) and holding only what clf wrote."""
    try:
        entries = list(repo.iterdir())
    except OSError:
        return
    for entry in entries:
        if is_stale_temp(entry, folder=True):
            if remove_own_folder(entry):
                logger.info("%s: removed a model folder left by an interrupted export", entry)
            else:
                logger.warning("%s: left by an interrupted export, and holds files clf did not write; left there",
                               entry)


def kept_aside_beside(home: Path, precision: str) -> Path:
    """Where a model that failed its gate goes: in the run (or fold group) folder, named as `clf export` names it."""
    return kept_aside_path(home / default_name(precision == "fp16", precision == "int8"))


def _kept_beside_checkpoint(exc: ParityError, home: Path, folder: Path) -> ParityError:
    """A failed gate: nothing reaches the repository; the failed model and its proof go beside the checkpoint."""
    kept = exc.result
    if not isinstance(kept, ExportResult):
        return exc
    target = kept_aside_beside(home, kept.precision)
    target_proof = proof_path(target)
    record_files(target.parent, [target.name, target_proof.name])
    atomic_copy(kept.proof, target_proof)
    atomic_copy(kept.path, target)
    moved = replace(kept, path=target, proof=target_proof)
    gate = "int8 accuracy gate" if kept.precision == "int8" else "parity check"
    return ParityError(f"{folder}: {gate} failed ({kept.parity.reason()}); nothing written to the repository; "
                       f"model kept as {target} for inspection", moved)
