"""The bad-input catalogue for `clf export` (harness: tests/bad_inputs.py).

The tiny run (a cnn checkpoint and the split.json training writes) is built once for the module; each row gets a
fresh copy of it under its own tmp folder, so a row that writes cannot disturb another. Rows that export use
TorchScript and small batches (about a second each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from bad_inputs import Case, run_case
from export_helpers import CLI_FAST as FAST
from export_helpers import make_checkpoint, make_data, write_split
from serve_helpers import cli_state

from clf.models.checkpoint import CHECKPOINT_VERSION
from clf.serve.session import nvidia_driver_problem

no_driver_here = pytest.mark.skipif(nvidia_driver_problem() is None, reason="needs a machine without an NVIDIA driver")
as_root = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder: nothing to refuse")


def _stat_fails_on_long_names() -> bool:
    """Before main's bbd1c8f, check_output_file stat()ed a name before checking its length (OSError)."""
    from clf.atomic import check_output_file

    try:
        check_output_file(Path("/tmp") / ("m" * 256))
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - the ClfError the row expects
        return False
    return False


length_checked_first = pytest.mark.skipif(_stat_fails_on_long_names(),
                                          reason="needs clf.atomic's name-length check before stat() (main bbd1c8f)")

# Every file this process opens while a row watches (the "open" audit event covers open(), os.open, Path.read_*).
_opened: list[str] | None = None


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_record_open)  # hooks cannot be removed: it records only while a row watches


@pytest.fixture(autouse=True)
def _cli_state():
    global _opened
    with cli_state():
        yield
    _opened = None


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-bad")
    data = make_data(root / "sample")
    make_checkpoint(root / "run" / "best.pt", data=data)
    return {"built": root, "data": data}


@pytest.fixture
def places(built, tmp_path) -> dict[str, Path]:
    shutil.copytree(built["built"] / "run", tmp_path / "run")
    return {"tmp": tmp_path, "run": tmp_path / "run", "ckpt": tmp_path / "run" / "best.pt", "data": built["data"]}


# --- setups and checks -------------------------------------------------------------------------------------------


def _write(name: str, content: bytes = b""):
    def setup(places):
        (places["tmp"] / name).parent.mkdir(parents=True, exist_ok=True)
        (places["tmp"] / name).write_bytes(content)

    return setup


def _mkdir(name: str):
    def setup(places):
        (places["tmp"] / name).mkdir(parents=True)

    return setup


def _pickled_object(places):
    torch.save({"format": "clf-checkpoint", "args": argparse.Namespace(lr=0.1)}, places["tmp"] / "pickled.pt")


def _newer_version(places):
    make_checkpoint(places["tmp"] / "newer" / "best.pt", version=99, split=False)


def _no_classes(places):
    make_checkpoint(places["tmp"] / "noclasses" / "best.pt", classes=[], split=False)


def _link(name: str, target: str):
    def setup(places):
        (places["tmp"] / name).symlink_to(target)

    return setup


def _huge_preprocess(places):
    pre = {"size": [100000, 100000], "resize": "stretch", "interpolation": "linear", "color": "RGB",
           "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "channels": 3}
    make_checkpoint(places["tmp"] / "hugesize" / "best.pt", preprocess=pre, split=False)


def _checkpoint_with_data(data: str):
    """A checkpoint whose stored config names `data` (a crafted file: export must not follow it); no split.json."""

    def setup(places):
        global _opened
        make_checkpoint(places["tmp"] / "crafted" / "best.pt", data=data, split=False)
        _opened = []

    return setup


def _split_with(**changes):
    """The run's split.json rewritten with `changes` (hostile entries); opens are watched from here on."""

    def setup(places):
        global _opened
        write_split(places["run"], places["data"], **changes)
        _opened = []

    return setup


def _split_with_fifo_entry(places):
    global _opened
    root = places["tmp"] / "fifo-data"
    root.mkdir()
    os.mkfifo(root / "a.png")  # opening it would wait for a writer forever
    (places["run"] / "split.json").write_text(json.dumps({"format": 1, "root": str(root), "val": ["a.png"]}))
    _opened = []


def _split_is_a_fifo(places):
    (places["run"] / "split.json").unlink()
    os.mkfifo(places["run"] / "split.json")


def _passing_export(places):
    result = run_case(Case("passing export first", ["export", "{run}", *FAST], 0, ""), places)
    assert "PASS" in result.output


def _long_name_folder(places):
    (places["tmp"] / "long").mkdir()


def _read_only_folder(places):
    (places["tmp"] / "ro").mkdir()
    (places["tmp"] / "ro").chmod(0o555)


def _never_opened(*paths: str, random: bool = True):
    """None of `paths` was opened (the row watched from its setup), and parity fell back to random tensors."""

    def check(places):
        assert _opened is not None, "the row's setup did not start watching"
        hits = [p for p in _opened if os.path.realpath(p) in {os.path.realpath(x) for x in paths}]
        assert hits == [], hits

    return check


def _exists(*names: str):
    def check(places):
        for name in names:
            assert (places["tmp"] / name).is_file(), name

    return check


def _long_name_written(places):
    folder = places["tmp"] / "long"
    names = sorted(p.name for p in folder.iterdir())
    model = "m" * 250 + ".onnx"
    assert model in names and len(names) == 2, names  # the model and its proof, no temp file
    proof = next(n for n in names if n != model)
    assert proof.endswith(".parity.json") and len(proof.encode()) <= 255
    assert json.loads((folder / proof).read_text())["model"] == model


def _absent(*names: str):
    def check(places):
        for name in names:
            assert not (places["tmp"] / name).exists(), name

    return check


# --- ensembles, fold groups, TTA, calibration (clf/export/ensemble.py) --------------------------------------------


def _member(name: str, **extra):
    """Another member checkpoint under {tmp}/<name> (no split.json)."""

    def setup(places):
        make_checkpoint(places["tmp"] / name / "best.pt", split=False, **extra)

    return setup


def _group(done=("fold-0", "fold-1"), oof=True, record: str | None = None, split: bool = False):
    """A fold group by hand under {tmp}/grp: two member checkpoints (with the sample data's split.json when
    `split`), group.json (or `record` as its text), oof.csv."""

    def setup(places):
        import numpy as np

        from clf.data.folds import FoldGroup, OutOfFold, write_group, write_oof

        group = places["tmp"] / "grp"
        for name in ("fold-0", "fold-1"):
            make_checkpoint(group / name / "best.pt", data=places["data"] if split else "", split=split)
        if record is not None:
            (group / "group.json").write_text(record)
        else:
            write_group(group, FoldGroup(folds=2, fold_seed=0, members=["fold-0", "fold-1"], done=list(done)))
        if oof:
            write_oof(group / "oof.csv", OutOfFold(["a"], ["circle"], np.zeros(1, np.int64),
                                                   ["circle", "square", "star", "triangle"], np.full((1, 4), 0.25)))

    return setup


def _run_augment(augment):
    """The run's checkpoint rewritten with this recorded augmentation pipeline (its split.json kept)."""

    def setup(places):
        make_checkpoint(places["ckpt"], split=False, augment=augment)

    return setup


ENSEMBLE_CASES = [
    Case("several runs without -o", ["export", "{run}", "{tmp}/b", *FAST], 2,
         "2 runs given without -o: an ensemble belongs to none of them; pass -o ens.onnx", setup=_member("b"),
         guard=["{run}", "{tmp}/b"]),
    Case("--average bogus", ["export", "{run}", "--average", "bogus"], 2,
         "--average must be one of prob, logit, got 'bogus'", guard=["{run}"]),
    Case("--weights 0", ["export", "{run}", "--weights", "0"], 2, "--weights takes positive numbers like 1,2, got 0.0",
         guard=["{run}"]),
    Case("--weights not numbers", ["export", "{run}", "--weights", "a,b"], 2,
         "--weights takes comma-separated numbers like 1,2, got 'a,b'", guard=["{run}"]),
    Case("--weights count", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/e.onnx", "--weights", "1,2,3", *FAST], 2,
         "--weights 1,2,3: 3 weights for 2 members; give one per member, in order", setup=_member("b"),
         guard=["{run}", "{tmp}/b"], check=_absent("e.onnx")),
    Case("--tta bogus", ["export", "{run}", "--tta", "rot90"], 2,
         "--tta must be one of none, hflip, vflip, hvflip, got 'rot90'", guard=["{run}"]),
    Case("--tta hflip on a run trained without flips", ["export", "{run}", "--tta", "hflip", *FAST], 2,
         "was trained without horizontal flips (hflip 0), and flipped views are wrong where orientation matters "
         "(digits, text); pass --force to add them anyway", setup=_run_augment([{"op": "rotate", "max_degrees": 5.0}]),
         guard=["{run}"]),
    Case("--tta vflip on a run trained with hflip only", ["export", "{run}", "--tta", "vflip", *FAST], 2,
         "was trained without vertical flips (vflip 0)", setup=_run_augment([{"op": "hflip", "p": 0.5}]),
         guard=["{run}"]),
    Case("--tta hflip on a run that records no augmentation", ["export", "{run}", "--tta", "hflip", *FAST], 2,
         "does not record its training augmentation, so horizontal flips cannot be checked", guard=["{run}"]),
    Case("members with other classes", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/e.onnx", *FAST], 2,
         "ensemble members must be trained on the same classes",
         setup=_member("b", classes=["circle", "square", "star", "heart"]), guard=["{run}", "{tmp}/b"],
         check=_absent("e.onnx")),
    Case("members with another preprocess", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/e.onnx", *FAST], 2,
         "its preprocess size is [48, 48]", setup=_member("b", img_size=48), guard=["{run}", "{tmp}/b"]),
    Case("member folder without a checkpoint", ["export", "{run}", "{tmp}/empty", "-o", "{tmp}/e.onnx"], 2,
         "no best.pt or last.pt in this folder", setup=_mkdir("empty"), guard=["{run}"]),
    Case("-o is member 2's checkpoint", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/b/best.pt"], 2,
         "-o would overwrite the member 2 checkpoint input; write to another file", setup=_member("b"),
         guard=["{run}", "{tmp}/b"]),
    Case("unfinished fold group", ["export", "{tmp}/grp", *FAST], 2,
         "grp: unfinished fold group (fold-1 not trained yet); finish it with `clf train --resume",
         setup=_group(done=("fold-0",)), guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    Case("fold group among other runs", ["export", "{tmp}/grp", "{run}", "-o", "{tmp}/e.onnx"], 2,
         "a fold group is exported on its own (its folds are the ensemble)", setup=_group(),
         guard=["{tmp}/grp", "{run}"]),
    Case("damaged fold-group record", ["export", "{tmp}/grp", *FAST], 2,
         "group.json: unreadable fold-group record (JSONDecodeError); retrain with --overwrite",
         setup=_group(record="{not json"), guard=["{tmp}/grp"]),
    Case("-o is the group's oof.csv", ["export", "{tmp}/grp", "-o", "{tmp}/grp/oof.csv"], 2,
         "-o would overwrite the oof.csv input; write to another file", setup=_group(), guard=["{tmp}/grp"]),
    Case("--calibrate on a group without oof.csv", ["export", "{tmp}/grp", "--calibrate", *FAST], 2,
         "oof.csv: not found; --calibrate on a fold group fits on its out-of-fold predictions",
         setup=_group(oof=False), guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    Case("--calibrate on a run without split.json", ["export", "{tmp}/b", "--calibrate", *FAST], 2,
         "split.json: missing or unusable; --calibrate fits the temperature on the run's validation images",
         setup=_member("b"), guard=["{tmp}/b"]),
    Case("a fold group exports beside its record", ["export", "{tmp}/grp", *FAST], 0, "", setup=_group(),
         guard=["{tmp}/grp/fold-0", "{tmp}/grp/fold-1", "{tmp}/grp/group.json", "{tmp}/grp/oof.csv"],
         check=_exists("grp/model.onnx", "grp/model.parity.json")),
]


# --- the rows ------------------------------------------------------------------------------------------------------

CASES = [
    # what to export
    Case("missing run", ["export", "{tmp}/nope", "--onnx"], 2, "nope: no such run folder or checkpoint file"),
    Case("folder without a checkpoint", ["export", "{tmp}/empty", "--onnx"], 2,
         "no best.pt or last.pt in this folder; pass a run folder of `clf train` or a .pt file", setup=_mkdir("empty")),
    Case("corrupt .pt", ["export", "{tmp}/bad.pt"], 2,
         "bad.pt: cannot read the checkpoint (corrupt, truncated or not a PyTorch file)",
         setup=_write("bad.pt", b"not a checkpoint at all"), guard=["{tmp}/bad.pt"]),
    Case("empty .pt", ["export", "{tmp}/empty.pt"], 2, "empty.pt: cannot read the checkpoint",
         setup=_write("empty.pt")),
    Case(".pt holding a pickled object", ["export", "{tmp}/pickled.pt"], 2,
         "pickled.pt: not a clf checkpoint (it holds pickled Python objects, which are not loaded for safety)",
         setup=_pickled_object, guard=["{tmp}/pickled.pt"]),
    Case("newer checkpoint version", ["export", "{tmp}/newer"], 2,
         f"checkpoint version 99 is newer than this clf reads ({CHECKPOINT_VERSION}); upgrade clf",
         setup=_newer_version,
         guard=["{tmp}/newer"]),
    Case("checkpoint without class names", ["export", "{tmp}/noclasses", *FAST], 2,
         "checkpoint has no class names; export a checkpoint written by `clf train`", setup=_no_classes,
         guard=["{tmp}/noclasses"]),
    # flags, refused before anything is loaded
    Case("--opset 99", ["export", "{run}", "--opset", "99"], 2,
         "--opset 99: clf exports opsets 7 to 23 (torchscript 7-20, dynamo 18-23); pass one of those", guard=["{run}"]),
    Case("--opset 5", ["export", "{run}", "--opset", "5"], 2, "--opset 5: clf exports opsets 7 to 23", guard=["{run}"]),
    Case("--opset 17 with dynamo", ["export", "{run}", "--opset", "17", "--exporter", "dynamo"], 2,
         "--opset 17: the dynamo exporter writes opset 18 or newer; use --exporter torchscript", guard=["{run}"]),
    Case("--opset 21 with torchscript", ["export", "{run}", "--opset", "21", "--exporter", "torchscript"], 2,
         "--opset 21: the torchscript exporter writes opset 20 or older; use --exporter dynamo", guard=["{run}"]),
    Case("--atol -1", ["export", "{run}", "--atol", "-1"], 2, "--atol must be a finite number >= 0, got -1.0",
         guard=["{run}"]),
    Case("--atol nan", ["export", "{run}", "--atol", "nan"], 2, "--atol must be a finite number >= 0, got nan",
         guard=["{run}"]),
    Case("--atol inf", ["export", "{run}", "--atol", "inf"], 2, "--atol must be a finite number >= 0, got inf",
         guard=["{run}"]),
    Case("--batch-sizes 0", ["export", "{run}", "--batch-sizes", "0"], 2,
         "--batch-sizes takes integers from 1 to 4096 like 1,8, got 0", guard=["{run}"]),
    Case("--batch-sizes 100000", ["export", "{run}", "--batch-sizes", "1,100000"], 2,
         "--batch-sizes takes integers from 1 to 4096 like 1,8, got 1,100000", guard=["{run}"]),
    Case("--batch-sizes not numbers", ["export", "{run}", "--batch-sizes", "1,x"], 2,
         "--batch-sizes takes comma-separated integers like 1,8, got '1,x'", guard=["{run}"]),
    Case("--exporter bogus", ["export", "{run}", "--exporter", "bogus"], 2,
         "--exporter must be one of auto, dynamo, torchscript, got 'bogus'", guard=["{run}"]),
    Case("--device bogus", ["export", "{run}", "--device", "bogus"], 2,
         "--device must be one of auto, cpu, cuda, tensorrt, got 'bogus'", guard=["{run}"]),
    pytest.param(Case("--device cuda without CUDA", ["export", "{run}", "--device", "cuda", *FAST], 2,
                      "cuda requested but", guard=["{run}"]), marks=no_driver_here),
    # where the model goes
    Case("-o is the checkpoint", ["export", "{run}", "-o", "{ckpt}"], 2,
         "best.pt: -o would overwrite the checkpoint input; write to another file", guard=["{run}"]),
    Case("-o is split.json", ["export", "{run}", "-o", "{run}/split.json"], 2,
         "split.json: -o would overwrite the split.json input; write to another file", guard=["{run}"]),
    Case("-o under a file", ["export", "{run}", "-o", "{tmp}/file/model.onnx"], 2, "file is a file, not a folder",
         setup=_write("file", b"x"), guard=["{tmp}/file", "{run}"]),
    Case("-o a FIFO", ["export", "{run}", "-o", "{tmp}/fifo.onnx"], 2,
         "fifo.onnx: exists and is not a regular file (a device, FIFO or socket); give a file name",
         setup=lambda p: os.mkfifo(p["tmp"] / "fifo.onnx"), guard=["{run}"]),
    pytest.param(Case("-o a 256-character name", ["export", "{run}", "-o", "{tmp}/" + "m" * 251 + ".onnx"], 2,
                      "file name longer than 255 bytes; choose a shorter one", guard=["{run}"]),
                 marks=length_checked_first),
    pytest.param(Case("-o in a read-only folder", ["export", "{run}", "-o", "{tmp}/ro/model.onnx", *FAST], 2,
                      "cannot write in", setup=_read_only_folder, guard=["{run}"]), marks=as_root),
    Case("-o a 255-character name", ["export", "{run}", "-o", "{tmp}/long/" + "m" * 250 + ".onnx", *FAST], 0, "",
         setup=_long_name_folder, guard=["{run}"], check=_long_name_written),
    Case("-o an existing folder", ["export", "{run}", "-o", "{tmp}/out", *FAST], 0, "", setup=_mkdir("out"),
         check=_exists("out/model.onnx", "out/model.parity.json")),
    Case("-o in a missing folder", ["export", "{run}", "-o", "{tmp}/new/deep/m.onnx", *FAST], 0, "",
         check=_exists("new/deep/m.onnx", "new/deep/m.parity.json")),
    Case("failed --atol 0 after a passing export", ["export", "{run}", "--atol", "0", *FAST], 3,
         "parity check failed (max abs diff", setup=_passing_export,
         guard=["{run}/model.onnx", "{run}/model.parity.json", "{ckpt}"],
         check=_exists("run/model.parity-failed.onnx", "run/model.parity-failed.parity.json")),
    # a checkpoint or run folder is data, never a list of paths to follow
    Case("checkpoint data path /dev/zero", ["export", "{tmp}/crafted", *FAST], 0, "",
         setup=_checkpoint_with_data("/dev/zero"), check=_never_opened("/dev/zero")),
    Case("checkpoint data path /", ["export", "{tmp}/crafted", *FAST], 0, "", setup=_checkpoint_with_data("/"),
         check=_never_opened("/etc/passwd")),
    Case("split.json with ../../etc/passwd", ["export", "{run}", *FAST], 0, "",
         setup=_split_with(val=["../../../../../../../../etc/passwd", "/etc/passwd", "x/../../../etc/shadow.png"]),
         guard=["{ckpt}"], check=_never_opened("/etc/passwd", "/etc/shadow.png")),
    Case("split.json root / with a system file", ["export", "{run}", *FAST], 0, "",
         setup=_split_with(root="/", val=["etc/passwd", "dev/zero"]), check=_never_opened("/etc/passwd", "/dev/zero")),
    Case("split.json with a FIFO entry", ["export", "{run}", *FAST], 0, "", setup=_split_with_fifo_entry,
         check=lambda p: _never_opened(str(p["tmp"] / "fifo-data" / "a.png"))(p)),
    Case("split.json that is a FIFO", ["export", "{run}", *FAST], 0, "", setup=_split_is_a_fifo,
         check=_exists("run/model.onnx")),
    # parity images given by the user
    Case("--check-images an empty folder", ["export", "{run}", "--check-images", "{tmp}/none", *FAST], 2,
         "none: no images (.jpg, .png, ...) found", setup=_mkdir("none"), guard=["{run}"]),
    Case("--check-images a file", ["export", "{run}", "--check-images", "{ckpt}", *FAST], 2, "best.pt: not a folder",
         guard=["{run}"]),
    Case("--check-images missing", ["export", "{run}", "--check-images", "{tmp}/gone", *FAST], 2,
         "gone: folder not found", guard=["{run}"]),
    Case("--check-images that do not decode", ["export", "{run}", "--check-images", "{tmp}/junk", *FAST], 2,
         "junk: none of the images could be read for the parity check", setup=_write("junk/a.png", b"not a png"),
         guard=["{run}"], check=_absent("run/model.onnx")),
    Case("--check-images a symlink loop", ["export", "{run}", "--check-images", "{tmp}/loop", *FAST], 2,
         "loop: a symbolic link to nothing (a loop, or its target is gone: loop); give the real folder",
         setup=_link("loop", "loop"), guard=["{run}"]),
    Case("--check-images a dangling link", ["export", "{run}", "--check-images", "{tmp}/gone-link", *FAST], 2,
         "gone-link: a symbolic link to nothing", setup=_link("gone-link", "/nonexistent/clf-images"),
         guard=["{run}"]),
    # empty paths (an unset shell variable) are refused, not read as "here" (model.onnx landed in the cwd)
    Case("-o empty", ["export", "{run}", "-o", "", *FAST], 2, "--output is empty; give a path or leave the option out",
         guard=["{run}"]),
    Case("--check-images empty", ["export", "{run}", "--check-images", "", *FAST], 2,
         "--check-images is empty; give a path or leave the option out", guard=["{run}"]),
    # a crafted preprocess size is refused before an input of that size is allocated (cv2 traceback, exit 1)
    Case("checkpoint preprocess size 100000", ["export", "{tmp}/hugesize", *FAST], 2,
         "checkpoint has no valid preprocess settings (size must be at most 4096 pixels a side",
         setup=_huge_preprocess, guard=["{tmp}/hugesize"]),
    *ENSEMBLE_CASES,
]



# --- int8 and Triton (issue 12) ------------------------------------------------------------------------------------


def _no_split(places):
    make_checkpoint(places["tmp"] / "nosplit" / "best.pt", split=False)


def _foreign_model_folder(places):
    (places["tmp"] / "repo" / "test-run" / "1").mkdir(parents=True)
    (places["tmp"] / "repo" / "test-run" / "config.pbtxt").write_text('name: "test-run"\n')


def _clf_folder_with_a_user_file(places):
    from clf.ownership import mark_folder

    mark_folder(places["tmp"] / "repo" / "test-run", "triton-model", ["config.pbtxt"])
    (places["tmp"] / "repo" / "test-run" / "config.pbtxt").write_text("x")
    (places["tmp"] / "repo" / "test-run" / "notes.txt").write_text("mine")


def _int8_model_runs(name: str, temperature: bool = True):
    """{tmp}/<name> loads in onnxruntime, says int8 (and a temperature), and gives finite [N, C] output."""

    def check(places):
        import numpy as np
        import onnxruntime as ort

        session = ort.InferenceSession(str(places["tmp"] / name), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert meta["clf.precision"] == "int8"
        assert bool(meta.get("clf.temperature")) is temperature
        (out,) = session.run(None, {"input": np.zeros((3, 3, 32, 32), np.float32)})
        assert out.shape == (3, 4) and np.isfinite(out).all()

    return check


_HFLIP = [{"op": "hflip", "p": 0.5}]

# Issue 24 item 1: --int8 with --calibrate always failed ("onnxruntime could not quantise the model to int8: object
# of type 'NoneType' has no len()"): onnxruntime's symbolic shape inference cannot shape the opset-18
# ReduceLogSumExp the ensemble/TTA/temperature graph averages with, and the temperature's Div after it crashed.
INT8_CALIBRATE_CASES = [
    Case("--int8 --calibrate on a run", ["export", "{run}", "--int8", "--calibrate", "--batch-sizes", "1,2"], 0, "",
         guard=["{ckpt}", "{run}/split.json"], check=_int8_model_runs("run/model_int8.onnx")),
    Case("--int8 --calibrate --tta hflip on a run", ["export", "{run}", "--int8", "--calibrate", "--tta", "hflip",
                                                     *FAST], 0, "",
         setup=_run_augment(_HFLIP), check=_int8_model_runs("run/model_int8.onnx")),
    Case("--int8 --calibrate on a fold group (its oof.csv)", ["export", "{tmp}/grp", "--int8", "--calibrate", *FAST],
         0, "", setup=_group(split=True), guard=["{tmp}/grp/fold-0", "{tmp}/grp/fold-1", "{tmp}/grp/oof.csv"],
         check=_int8_model_runs("grp/model_int8.onnx")),
]


CASES += [
    *INT8_CALIBRATE_CASES,
    Case("--calibration-images 0", ["export", "{run}", "--int8", "--calibration-images", "0"], 2,
         "--calibration-images must be from 1 to 10000, got 0", guard=["{run}"]),
    Case("--calibration-images 20000", ["export", "{run}", "--int8", "--calibration-images", "20000"], 2,
         "--calibration-images must be from 1 to 10000, got 20000", guard=["{run}"]),
    Case("--calibration-method bogus", ["export", "{run}", "--int8", "--calibration-method", "bogus"], 2,
         "--calibration-method must be one of minmax, entropy, percentile, got 'bogus'", guard=["{run}"]),
    Case("--min-agreement 1.01", ["export", "{run}", "--int8", "--min-agreement", "1.01"], 2,
         "--min-agreement is a fraction from 0 to 1 (e.g. 0.99), got 1.01", guard=["{run}"]),
    Case("--min-agreement -0.1", ["export", "{run}", "--int8", "--min-agreement", "-0.1"], 2,
         "--min-agreement is a fraction from 0 to 1 (e.g. 0.99), got -0.1", guard=["{run}"]),
    Case("--min-agreement nan", ["export", "{run}", "--int8", "--min-agreement", "nan"], 2,
         "--min-agreement is a fraction from 0 to 1 (e.g. 0.99), got nan", guard=["{run}"]),
    Case("--max-drop -1", ["export", "{run}", "--int8", "--max-drop", "-1"], 2,
         "--max-drop is a fraction of accuracy from 0 to 1 (e.g. 0.005 = half a point), got -1.0", guard=["{run}"]),
    Case("--max-drop 5 (points, not a fraction)", ["export", "{run}", "--int8", "--max-drop", "5"], 2,
         "--max-drop is a fraction of accuracy from 0 to 1", guard=["{run}"]),
    Case("--int8 --fp16", ["export", "{run}", "--int8", "--fp16"], 2,
         "--int8 and --fp16 are two precisions for one model; choose one", guard=["{run}"]),
    Case("--calibration-images without --int8", ["export", "{run}", "--calibration-images", "64"], 2,
         "--calibration-images applies to int8 exports only; add --int8 or leave it out", guard=["{run}"]),
    Case("--min-agreement without --int8", ["export", "{run}", "--min-agreement", "0.9"], 2,
         "--min-agreement applies to int8 exports only", guard=["{run}"]),
    Case("--int8 --opset 11", ["export", "{run}", "--int8", "--opset", "11", "--exporter", "torchscript"], 2,
         "--opset 11: --int8 needs opset 13 or newer (per-channel quantisation); pass a newer --opset",
         guard=["{run}"]),
    Case("--int8 without training images", ["export", "{tmp}/nosplit", "--int8", *FAST], 2,
         "no training images for the int8 calibration (no usable split.json beside the checkpoint); pass "
         "--check-images FOLDER", setup=_no_split, guard=["{tmp}/nosplit"], check=_absent("nosplit/model_int8.onnx")),
    Case("--int8 -o the checkpoint", ["export", "{run}", "--int8", "-o", "{ckpt}"], 2,
         "best.pt: -o would overwrite the checkpoint input", guard=["{run}"]),
    Case("--triton REPO that is a file", ["export", "{run}", "--triton", "{tmp}/repo.txt", *FAST], 2,
         "repo.txt: --triton needs a model repository folder, and this is a file; give a folder",
         setup=_write("repo.txt", b"x"), guard=["{tmp}/repo.txt", "{run}"]),
    Case("--triton empty", ["export", "{run}", "--triton", ""], 2,
         "--triton is empty; give the model repository folder", guard=["{run}"]),
    Case("--triton with -o", ["export", "{run}", "--triton", "{tmp}/repo", "-o", "{tmp}/m.onnx"], 2,
         "-o and --triton both say where the model goes", guard=["{run}"], check=_absent("repo", "m.onnx")),
    Case("--triton over a model folder clf did not write", ["export", "{run}", "--triton", "{tmp}/repo", *FAST], 2,
         "repo/test-run: a model folder clf did not write; clf replaces only its own: choose another --model-name "
         "or move it", setup=_foreign_model_folder, guard=["{tmp}/repo", "{run}"]),
    Case("--triton over clf's folder holding a user's file", ["export", "{run}", "--triton", "{tmp}/repo", *FAST], 2,
         "repo/test-run: holds 1 file(s) clf did not write (notes.txt); clf replaces only its own model folders",
         setup=_clf_folder_with_a_user_file, guard=["{tmp}/repo", "{run}"]),
    Case("--triton model folder is a file", ["export", "{run}", "--triton", "{tmp}/repo", *FAST], 2,
         "repo/test-run: exists and is not a model folder; choose another --model-name or move it",
         setup=_write("repo/test-run", b"x"), guard=["{tmp}/repo", "{run}"]),
    Case("--max-batch-size 0", ["export", "{run}", "--triton", "{tmp}/repo", "--max-batch-size", "0"], 2,
         "--max-batch-size must be from 1 to 4096 (the model's batch axis), got 0", guard=["{run}"],
         check=_absent("repo")),
    Case("--max-batch-size 5000", ["export", "{run}", "--triton", "{tmp}/repo", "--max-batch-size", "5000"], 2,
         "--max-batch-size must be from 1 to 4096 (the model's batch axis), got 5000", guard=["{run}"]),
    Case("--max-batch-size without --triton", ["export", "{run}", "--max-batch-size", "8"], 2,
         "--max-batch-size applies to --triton only; add --triton REPO or leave it out", guard=["{run}"]),
    Case("--model-name ../x", ["export", "{run}", "--triton", "{tmp}/repo", "--model-name", "../x"], 2,
         "--model-name '../x': a Triton model name is one folder name: letters, digits, '.', '_' and '-', starting "
         "with a letter or digit, at most 128 characters; choose another", guard=["{run}"], check=_absent("x", "repo")),
    Case("--model-name .hidden", ["export", "{run}", "--triton", "{tmp}/repo", "--model-name", ".hidden"], 2,
         "--model-name '.hidden': a Triton model name is one folder name", guard=["{run}"]),
    Case("--model-name a/b", ["export", "{run}", "--triton", "{tmp}/repo", "--model-name", "a/b"], 2,
         "--model-name 'a/b': a Triton model name is one folder name", guard=["{run}"]),
    Case("--triton with a failing gate", ["export", "{run}", "--triton", "{tmp}/repo", "--atol", "0", *FAST], 3,
         "parity check failed (max abs diff", guard=["{ckpt}"],
         check=_exists("run/model.parity-failed.onnx", "run/model.parity-failed.parity.json")),
]


# --- issue 24: ensembles, calibration input, Triton names, stale temps (kill -9) -------------------------------------


def _nan_weights(places):
    """The run's checkpoint with NaN weights (its split.json kept): both runtimes output NaN."""
    from clf.models.checkpoint import save_checkpoint
    from clf.models.checkpoint_load import load_checkpoint

    state = load_checkpoint(places["ckpt"])
    state.pop("source", None)
    first = next(name for name, value in state["model"].items() if value.is_floating_point())
    state["model"][first] = torch.full_like(state["model"][first], float("nan"))
    save_checkpoint(state, places["ckpt"])


def _proof_says_nothing_agreed(places):
    proof = json.loads((places["run"] / "model.parity-failed.parity.json").read_text())  # strict JSON: no bare NaN
    assert proof["top1_agreement"] == 0.0 and proof["max_abs_diff"] is None and proof["passed"] is False
    assert not (places["run"] / "model.onnx").exists()


def _oof_group(*rows):
    """A finished fold group ({tmp}/grp) whose oof.csv holds these probability rows (one image each)."""

    def setup(places):
        import numpy as np

        from clf.data.folds import OutOfFold, write_oof

        _group()(places)
        probs = np.array(rows, dtype=np.float64)
        write_oof(places["tmp"] / "grp" / "oof.csv", OutOfFold([f"img{i}" for i in range(len(rows))],
                                                               ["circle"] * len(rows), np.zeros(len(rows), np.int64),
                                                               ["circle", "square", "star", "triangle"], probs))

    return setup


def _alias_of_run(places):
    (places["tmp"] / "alias").symlink_to(places["run"])


def _single_triton_export_first(places):
    result = run_case(Case("the member alone first", ["export", "{run}", "--triton", "{tmp}/repo", *FAST], 0, ""),
                      places)
    assert (places["tmp"] / "repo" / "test-run" / "config.pbtxt").is_file(), result.output


def _ensemble_has_its_own_folder(places):
    repo = places["tmp"] / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["ensemble-run-b", "test-run"]
    assert 'name: "ensemble-run-b"' in (repo / "ensemble-run-b" / "config.pbtxt").read_text()
    members = json.loads((repo / "ensemble-run-b" / "1" / "model.parity.json").read_text())["members"]
    assert len(members) == 2


def _stale_temps_and_lookalikes(places):
    """What a kill -9 mid-export leaves in the run folder, beside a user's look-alike file and a link named like a
    stale temp (pointing at a file of the user's)."""
    from temp_helpers import stale_temp_name, write_stale_temp

    run = places["run"]
    places_extra = {"stale": write_stale_temp(run).name, "link": stale_temp_name(random="symlink1")}
    (run / ".clf-mine.tmp").write_text("the user's")
    (places["tmp"] / "precious.txt").write_text("the user's")
    (run / places_extra["link"]).symlink_to(places["tmp"] / "precious.txt")
    (places["tmp"] / "names.json").write_text(json.dumps(places_extra))


def _only_the_stale_temp_went(places):
    run = places["run"]
    names = json.loads((places["tmp"] / "names.json").read_text())
    assert not (run / names["stale"]).exists()
    assert (run / ".clf-mine.tmp").read_text() == "the user's"
    assert (run / names["link"]).is_symlink() and (places["tmp"] / "precious.txt").read_text() == "the user's"
    assert (run / "model.onnx").is_file()


ISSUE_24_CASES = [
    # 5. weights that pass "positive and finite" but cannot be normalised into the graph
    Case("--weights whose sum overflows", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/e.onnx", "--weights",
                                           "1e308,1e308", *FAST], 2,
         "--weights 1e+308,1e+308: their sum overflows to inf, so every weight would normalise to 0; give weights of "
         "a usual size like 1,2 (only their ratios matter)", setup=_member("b"), guard=["{run}", "{tmp}/b"],
         check=_absent("e.onnx")),
    Case("--weights with one that is 0 in float32", ["export", "{run}", "{tmp}/b", "-o", "{tmp}/e.onnx", "--weights",
                                                     "1,1e-300", *FAST], 2,
         "--weights 1.0,1e-300: weight 2 (1e-300) is 1e-300 of their sum, which is 0 in the float32 graph; give "
         "weights within a few orders of magnitude of each other, or leave that member out",
         setup=_member("b"), guard=["{run}", "{tmp}/b"], check=_absent("e.onnx")),
    # 5. a graph that outputs NaN fails its gate with 0 % agreement, never "100.00 %"
    Case("a checkpoint whose outputs are NaN", ["export", "{run}", *FAST], 3,
         "parity check failed (max abs diff nan > atol 0.0001; top-1 agreement 0.00% < 100%)", setup=_nan_weights,
         check=_proof_says_nothing_agreed),
    # 10c. one checkpoint named twice is one member (resolved paths and links compared)
    Case("the same run twice (another spelling)", ["export", "{run}", "{tmp}/./run/", "-o", "{tmp}/e.onnx", *FAST],
         2, "run/: the same checkpoint as ", guard=["{run}"], check=_absent("e.onnx")),
    Case("the same run twice (its checkpoint)", ["export", "{run}", "{tmp}/b", "{ckpt}", "-o", "{tmp}/e.onnx", *FAST],
         2, "best.pt), named twice in the ensemble; list each run once and give it more weight with --weights",
         setup=_member("b"), guard=["{run}", "{tmp}/b"], check=_absent("e.onnx")),
    Case("the same run twice (a link to it)", ["export", "{run}", "{tmp}/alias", "-o", "{tmp}/e.onnx", *FAST], 2,
         "alias: the same checkpoint as ", setup=_alias_of_run, guard=["{run}"], check=_absent("e.onnx")),
    # 10d. oof.csv must hold probabilities
    Case("--calibrate on an oof.csv value 1e308", ["export", "{tmp}/grp", "--calibrate", *FAST], 2,
         "oof.csv: line 3 has 1e+308 for class 'square', not a probability from 0 to 1; it must hold the "
         "probabilities clf wrote: retrain the group with --overwrite to rewrite it",
         setup=_oof_group([0.25] * 4, [0.0, 1e308, 0.0, 0.0]), guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    Case("--calibrate on a negative oof.csv value", ["export", "{tmp}/grp", "--calibrate", *FAST], 2,
         "oof.csv: line 2 has -0.5 for class 'circle', not a probability from 0 to 1",
         setup=_oof_group([-0.5, 0.5, 0.5, 0.5]), guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    Case("--calibrate on oof.csv rows not summing to 1", ["export", "{tmp}/grp", "--calibrate", *FAST], 2,
         "oof.csv: line 2's probabilities sum to 2, not 1; it must hold the probabilities clf wrote",
         setup=_oof_group([0.5, 0.5, 0.5, 0.5]), guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    Case("--calibrate on a NaN in oof.csv", ["export", "{tmp}/grp", "--calibrate", *FAST], 2,
         "oof.csv: line 2 has a probability that is not finite", setup=_oof_group([float("nan"), 0.5, 0.25, 0.25]),
         guard=["{tmp}/grp"], check=_absent("grp/model.onnx")),
    # 10f. an ensemble's Triton model is named after the ensemble, never after (and over) its first member
    Case("--triton ensemble beside its member's own export",
         ["export", "{run}", "{tmp}/b", "--triton", "{tmp}/repo", *FAST], 0, "",
         setup=lambda p: (_member("b")(p), _single_triton_export_first(p)),
         guard=["{tmp}/repo/test-run", "{run}", "{tmp}/b"], check=_ensemble_has_its_own_folder),
    # 10i. a kill -9 mid-export: the next export there removes clf's dead temp, nothing else, no link followed
    Case("export into a folder with a stale temp, a look-alike and a link", ["export", "{run}", *FAST], 0, "",
         setup=_stale_temps_and_lookalikes, guard=["{ckpt}"], check=_only_the_stale_temp_went),
]
CASES += ISSUE_24_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, places):
    run_case(case, places)
