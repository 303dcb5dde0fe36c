"""The bad-input catalogue for `clf infer`, `clf eval` and `clf score` (harness: tests/bad_inputs.py), plus a few
rows of the Predictor API. Every model and folder is built once for the module; each row writes under its own name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import Case, run_case
from serve_helpers import (
    bad_images,
    brightness_model,
    cli_state,
    graph_model,
    grey_image,
    linear_model,
    plain_info,
    read_csv,
)

from clf.errors import DataError, DeviceError, ModelError
from clf.serve.predictor import Predictor
from clf.serve.session import nvidia_driver_problem

IDS = ["img_0001", "img_0002", "img_0003"]  # grey 40 (dark), 128 (mid), 220 (bright)
ROWS = [["id", "label"], ["img_0001", "dark"], ["img_0002", "mid"], ["img_0003", "bright"]]
no_driver_here = pytest.mark.skipif(nvidia_driver_problem() is None, reason="needs a machine without an NVIDIA driver")


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("serve-bad")
    images = tmp / "images"
    for image_id, grey in zip(IDS, (40, 128, 220)):
        grey_image(images / f"{image_id}.png", grey)
    mixed = tmp / "mixed"
    for image_id, grey in zip(IDS, (40, 128, 220)):
        grey_image(mixed / f"{image_id}.png", grey)
    bad_images(mixed, mixed / "img_0001.png")["corrupt"]
    (mixed / "truncated.png").unlink()
    (mixed / "notes.png").unlink()
    (tmp / "empty").mkdir()
    labelled = tmp / "labelled"
    for label, grey in (("dark", 40), ("mid", 128), ("bright", 220)):
        grey_image(labelled / label / f"{label}_0.png", grey)
    unknown = tmp / "unknown"
    grey_image(unknown / "dark" / "a.png", 40)
    grey_image(unknown / "purple" / "b.png", 40)
    models = tmp / "models"
    models.mkdir()
    (models / "text.onnx").write_text("this is not a model\n")
    (tmp / "blocker").write_text("a file, not a folder\n")
    (tmp / "sample.csv").write_text("id,label\n" + "".join(f"{i},x\n" for i in IDS))
    (tmp / "sample_spaces.csv").write_text("\ufeffid , label\n" + "".join(f"{i} ,x\n" for i in IDS))
    (tmp / "sample_target.csv").write_text("id,target\n" + "".join(f"{i},x\n" for i in IDS))
    (tmp / "sample_extra_ids.csv").write_text("id,label\n" + "".join(f"{i},x\n" for i in IDS) + "zz_99,x\n")
    (tmp / "sample_latin1.csv").write_bytes("id,label\ncaf\xe9,x\n".encode("latin-1"))
    answers = "".join(f"{i},{label}\n" for i, label in zip("abcd", ("cat", "dog", "cat", "fox")))
    (tmp / "answers.csv").write_text("id,label\n" + answers)
    (tmp / "answers_empty.csv").write_text("id,label\n")
    (tmp / "sub_dup.csv").write_text("id,label\na,cat\nb,cat\nc,cat\nd,fox\na,dog\n")
    (tmp / "sub_latin1.csv").write_bytes("id,label\na,caf\xe9\n".encode("latin-1"))
    (tmp / "sub_columns.csv").write_text("image,prediction\na,cat\n")
    (tmp / "sub_short.csv").write_text("id,label\na,cat\nb\n")
    (tmp / "sub_missing.csv").write_text("id,label\na,cat\nb,dog\n")
    (tmp / "sub_extra.csv").write_text("id,label\n" + answers + "zz,cat\n")
    return {
        "tmp": tmp, "images": images, "mixed": mixed, "empty": tmp / "empty", "labelled": labelled,
        "unknown": unknown, "models": models,
        "model": brightness_model(models / "brightness.onnx"),
        "plain": brightness_model(models / "plain.onnx", metadata=False),
        "dup": graph_model(models / "dup.onnx", "means", plain_info(["dark", "mid", "dark"])),
        "nchw": graph_model(models / "nchw.onnx", "nchw", plain_info()),
        "rank1": graph_model(models / "rank1.onnx", "rank1", plain_info()),
        "nan": graph_model(models / "nan.onnx", "nan", plain_info()),
    }


def _absent(*names: str):
    def check(places):
        for name in names:
            assert not Path(name.format(**{k: str(v) for k, v in places.items()})).exists(), name
    return check


def _rows(path: str, rows: list[list[str]]):
    def check(places):
        assert read_csv(Path(path.format(**{k: str(v) for k, v in places.items()}))) == rows
    return check


def _fifo(name: str):
    def setup(places):
        path = Path(places["tmp"]) / name
        if not path.exists():
            os.mkfifo(path)
    return setup


def _write(name: str, text: str):
    def setup(places):
        (Path(places["tmp"]) / name).write_text(text)
    return setup


def _hand_model(name: str, inputs: int = 1, size: tuple[int, int] = (16, 16), preprocess: dict | None = None,
                classes: list[str] | None = None):
    """A per-channel-means classifier with `inputs` inputs (summed), spatial `size` ("H", "W" when dynamic) and
    clf metadata with `preprocess` merged into the plain one and `classes`."""
    def setup(places):
        import json

        import onnx
        from onnx import TensorProto, helper

        from clf.serve.metadata import info_to_props

        names = ["input", *(f"extra{i}" for i in range(1, inputs))]
        x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, *size]) for n in names]
        nodes = [helper.make_node("Sum", names, ["summed"]),
                 helper.make_node("ReduceMean", ["summed"], ["logits"], axes=[2, 3], keepdims=0)]
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
        model = helper.make_model(helper.make_graph(nodes, name, x, [y]), opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        props = info_to_props(plain_info(classes or ["dark", "mid", "bright"]))
        props["clf.preprocess"] = json.dumps({**json.loads(props["clf.preprocess"]), **(preprocess or {})})
        helper.set_model_props(model, props)
        onnx.save(model, str(Path(places["tmp"]) / name))
    return setup


def _tta_graph_model(places):
    """A model exported with --tta hflip: its clf metadata says the flips are inside the graph."""
    path = Path(places["tmp"]) / "tta_graph.onnx"
    if not path.exists():
        linear_model(path, plain_info(), props={"clf.tta": "hflip"})


INFER = ["infer", "{images}", "--model", "{model}", "--device", "cpu"]

CASES = [
    # --- clf infer: inputs ---
    Case("infer-missing-folder", ["infer", "{tmp}/nope", "--model", "{model}", "--csv", "{tmp}/o1.csv"], 2,
         "nope: folder not found", check=_absent("{tmp}/o1.csv")),
    Case("infer-empty-folder", ["infer", "{empty}", "--model", "{model}", "--csv", "{tmp}/o2.csv"], 2,
         "empty: no images (.jpg, .png, ...) found", check=_absent("{tmp}/o2.csv")),
    Case("infer-missing-model", ["infer", "{images}", "--model", "{tmp}/nope.onnx", "--csv", "{tmp}/o3.csv"], 2,
         "nope.onnx: file not found", check=_absent("{tmp}/o3.csv")),
    Case("infer-text-model", ["infer", "{images}", "--model", "{models}/text.onnx", "--csv", "{tmp}/o4.csv"], 2,
         "text.onnx: not a valid ONNX model (", guard=["{models}"], check=_absent("{tmp}/o4.csv")),
    Case("infer-model-is-a-folder", ["infer", "{images}", "--model", "{models}", "--csv", "{tmp}/o5.csv"], 2,
         "models: is a folder, not an ONNX model"),
    Case("infer-no-metadata-no-flags", [*INFER[:3], "{plain}", "--csv", "{tmp}/o6.csv"], 2,
         "plain.onnx: no clf metadata (exported by another tool?); pass --img-size, --mean, --std and --labels"),
    Case("infer-no-metadata-some-flags", [*INFER[:3], "{plain}", "--csv", "{tmp}/o7.csv", "--img-size", "16",
                                          "--labels", "dark,mid,bright"], 2, "also pass --mean, --std"),
    Case("infer-duplicate-class-names", [*INFER[:3], "{dup}", "--csv", "{tmp}/o8.csv"], 2,
         "dup.onnx: class 'dark' appears twice in its clf metadata; each class needs its own name"),
    Case("infer-labels-repeat-a-class", [*INFER[:3], "{plain}", "--csv", "{tmp}/o9.csv", "--img-size", "16",
                                         "--mean", "0,0,0", "--std", "1,1,1", "--labels", "a,b,a"], 2,
         "plain.onnx: class 'a' appears twice in --labels"),
    Case("infer-nchw-output", [*INFER[:3], "{nchw}", "--csv", "{tmp}/o10.csv"], 2,
         "nchw.onnx: output has shape [N, 3, 16, 16], not [N, C]"),
    Case("infer-rank1-output", [*INFER[:3], "{rank1}", "--csv", "{tmp}/o11.csv"], 2,
         "rank1.onnx: output has shape [N], not [N, C]"),
    Case("infer-nan-model", [*INFER[:3], "{nan}", "--csv", "{tmp}/o12.csv", "--device", "cpu"], 2,
         "nan.onnx: the model outputs NaN or inf for 1 of 3 images (", check=_absent("{tmp}/o12.csv")),
    Case("infer-mean-two-values", [*INFER, "--csv", "{tmp}/o13.csv", "--mean", "0.5,0.5"], 2,
         "--mean takes three comma-separated numbers like 0.485,0.456,0.406, got '0.5,0.5'"),
    # --- clf infer: outputs never clobber inputs, checked before the work ---
    Case("infer-csv-equals-probs", [*INFER, "--csv", "{tmp}/same.csv", "--probs", "{tmp}/same.csv"], 2,
         "same.csv: --csv and --probs name the same file; give each its own", check=_absent("{tmp}/same.csv")),
    Case("infer-csv-equals-sample", [*INFER, "--csv", "{tmp}/sample.csv", "--sample-submission", "{tmp}/sample.csv"],
         2, "sample.csv: --csv would overwrite the --sample-submission input", guard=["{tmp}/sample.csv"]),
    Case("infer-csv-is-an-image", [*INFER, "--csv", "{images}/img_0001.png"], 2,
         "img_0001.png: --csv would overwrite an input image; write to another file", guard=["{images}"]),
    Case("infer-probs-is-an-image", [*INFER, "--csv", "{tmp}/o14.csv", "--probs", "{images}/img_0002.png"], 2,
         "img_0002.png: --probs would overwrite an input image", guard=["{images}"], check=_absent("{tmp}/o14.csv")),
    Case("infer-csv-is-the-model", [*INFER, "--csv", "{model}"], 2,
         "brightness.onnx: --csv would overwrite the --model input", guard=["{models}"]),
    Case("infer-probs-is-the-model", [*INFER, "--csv", "{tmp}/o15.csv", "--probs", "{model}"], 2,
         "brightness.onnx: --probs would overwrite the --model input", guard=["{models}"]),
    Case("infer-csv-is-a-folder", [*INFER, "--csv", "{empty}"], 2, "empty: is a folder; give a file name",
         guard=["{empty}"]),
    Case("infer-csv-under-a-file", [*INFER, "--csv", "{tmp}/blocker/out.csv"], 2,
         "blocker is a file, not a folder",
         guard=["{tmp}/blocker"]),
    Case("infer-csv-is-a-fifo", [*INFER, "--csv", "{tmp}/out.fifo"], 2,
         "out.fifo: exists and is not a regular file (a device, FIFO or socket)", setup=_fifo("out.fifo")),
    Case("infer-csv-missing-folders-created", [*INFER, "--csv", "{tmp}/new/deeper/o16.csv"], 0, "",
         check=_rows("{tmp}/new/deeper/o16.csv", ROWS)),
    # --- clf infer: flags, validated once ---
    Case("infer-batch-size-0", [*INFER, "--csv", "{tmp}/o17.csv", "--batch-size", "0"], 2,
         "--batch-size must be >= 1, got 0"),
    Case("infer-topk-0", [*INFER, "--csv", "{tmp}/o18.csv", "--topk", "0"], 2, "--topk must be >= 1, got 0"),
    Case("infer-topk-negative", [*INFER, "--csv", "{tmp}/o19.csv", "--topk", "-1"], 2, "--topk must be >= 1, got -1"),
    Case("infer-threads-negative", [*INFER, "--csv", "{tmp}/o20.csv", "--threads", "-2"], 2,
         "--threads must be >= 0 (0 = one per core), got -2"),
    Case("infer-id-format-bogus", [*INFER, "--csv", "{tmp}/o21.csv", "--id-format", "bogus"], 2,
         "--id-format must be one of stem, name, relpath, got 'bogus'"),
    Case("infer-topk-format-bogus", [*INFER, "--csv", "{tmp}/o22.csv", "--topk", "2", "--topk-format", "comma"], 2,
         "--topk-format must be one of columns, space, got 'comma'"),
    Case("infer-device-bogus", ["infer", "{images}", "--model", "{model}", "--csv", "{tmp}/o23.csv", "--device",
                                "gpu"], 2, "--device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"),
    # --- clf infer: sample submissions (the one CSV reader) ---
    Case("infer-sample-missing-column", [*INFER, "--csv", "{tmp}/o24.csv", "--sample-submission",
                                         "{tmp}/sample_target.csv"], 2,
         "sample_target.csv: no column 'label' (columns: id, target); set the column names",
         check=_absent("{tmp}/o24.csv")),
    Case("infer-sample-header-with-spaces", [*INFER, "--csv", "{tmp}/o25.csv", "--sample-submission",
                                             "{tmp}/sample_spaces.csv"], 0, "", check=_rows("{tmp}/o25.csv", ROWS)),
    Case("infer-sample-ids-without-images", [*INFER, "--csv", "{tmp}/o26.csv", "--sample-submission",
                                             "{tmp}/sample_extra_ids.csv"], 2,
         "sample_extra_ids.csv: 1 of 4 ids have no image (zz_99); check the image folder and --id-format"),
    Case("infer-sample-not-utf8", [*INFER, "--csv", "{tmp}/o27.csv", "--sample-submission",
                                   "{tmp}/sample_latin1.csv"], 2, "sample_latin1.csv: not a UTF-8 text file"),
    Case("infer-sample-is-a-fifo", [*INFER, "--csv", "{tmp}/o28.csv", "--sample-submission", "{tmp}/sample.fifo"], 2,
         "sample.fifo: not a regular file (a FIFO, device or socket); give a CSV file", setup=_fifo("sample.fifo")),
    Case("infer-strict-corrupt-image", ["infer", "{mixed}", "--model", "{model}", "--device", "cpu", "--csv",
                                        "{tmp}/o29.csv", "--strict"], 4,
         "1 of 4 image(s) could not be read (--strict); the other rows were written to",
         guard=["{mixed}"], check=_rows("{tmp}/o29.csv", ROWS)),
    # --- clf eval ---
    Case("eval-unknown-labels", ["eval", "{unknown}", "--model", "{model}", "--device", "cpu"], 2,
         "labels ['purple'] are not classes of the model (dark, mid, bright); wrong model or data?"),
    Case("eval-report-equals-confusion", ["eval", "{labelled}", "--model", "{model}", "--report", "{tmp}/r.out",
                                          "--confusion", "{tmp}/r.out"], 2,
         "r.out: --report and --confusion name the same file; give each its own", check=_absent("{tmp}/r.out")),
    Case("eval-report-is-an-image", ["eval", "{labelled}", "--model", "{model}", "--report",
                                     "{labelled}/dark/dark_0.png"], 2,
         "dark_0.png: --report would overwrite an input image", guard=["{labelled}"]),
    Case("eval-confusion-is-the-model", ["eval", "{labelled}", "--model", "{model}", "--confusion", "{model}"], 2,
         "brightness.onnx: --confusion would overwrite the --model input", guard=["{models}"]),
    Case("eval-report-under-a-file", ["eval", "{labelled}", "--model", "{model}", "--report",
                                      "{tmp}/blocker/r.json"], 2, "blocker is a file, not a folder"),
    Case("eval-missing-model", ["eval", "{labelled}", "--model", "{tmp}/nope.onnx"], 2, "nope.onnx: file not found"),
    Case("eval-missing-checkpoint", ["eval", "{labelled}", "--model", "{tmp}/nope.pt"], 2, "nope.pt"),
    Case("eval-missing-folder", ["eval", "{tmp}/nope", "--model", "{model}"], 2, "nope: folder not found"),
    Case("eval-no-metadata-no-flags", ["eval", "{labelled}", "--model", "{plain}", "--device", "cpu"], 2,
         "plain.onnx: no clf metadata (exported by another tool?); pass --img-size, --mean, --std and --labels"),
    Case("eval-nan-model", ["eval", "{labelled}", "--model", "{nan}", "--device", "cpu", "--report",
                            "{tmp}/nan.json"], 2, "nan.onnx: the model outputs NaN or inf for 1 of 3 images",
         check=_absent("{tmp}/nan.json")),
    Case("eval-labels-csv-is-a-folder", ["eval", "{images}", "--model", "{model}", "--labels-csv", "{empty}"], 2,
         "empty: is a folder, not a CSV file"),
    Case("eval-batch-size-0", ["eval", "{labelled}", "--model", "{model}", "--batch-size", "0"], 2,
         "--batch-size must be >= 1, got 0"),
    # --- clf score ---
    Case("score-duplicated-id", ["score", "{tmp}/sub_dup.csv", "{tmp}/answers.csv"], 2,
         "sub_dup.csv: line 6: id 'a' is listed twice (also line 2); keep one row per id"),
    Case("score-not-utf8", ["score", "{tmp}/sub_latin1.csv", "{tmp}/answers.csv"], 2,
         "sub_latin1.csv: not a UTF-8 text file"),
    Case("score-empty-answers", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers_empty.csv"], 2,
         "answers_empty.csv: no rows under the header"),
    Case("score-missing-columns", ["score", "{tmp}/sub_columns.csv", "{tmp}/answers.csv"], 2,
         "sub_columns.csv: no column 'id' (columns: image, prediction); set the column names with --id-col"),
    Case("score-missing-file", ["score", "{tmp}/nope.csv", "{tmp}/answers.csv"], 2, "nope.csv: file not found"),
    Case("score-short-row", ["score", "{tmp}/sub_short.csv", "{tmp}/answers.csv"], 2,
         "sub_short.csv: line 3: 1 fields, the header has 2"),
    Case("score-ids-without-prediction", ["score", "{tmp}/sub_missing.csv", "{tmp}/answers.csv"], 2,
         "sub_missing.csv: 2 ids of"),
    Case("score-answers-is-a-fifo", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.fifo"], 2,
         "answers.fifo: not a regular file", setup=_fifo("answers.fifo")),
    # --- run-time TTA (issue 11) ---
    Case("infer-tta-bogus", [*INFER, "--csv", "{tmp}/t1.csv", "--tta", "rot90"], 2,
         "--tta must be one of none, hflip, vflip, hvflip, got 'rot90'", check=_absent("{tmp}/t1.csv")),
    Case("eval-tta-bogus", ["eval", "{labelled}", "--model", "{model}", "--tta", "flip"], 2,
         "--tta must be one of none, hflip, vflip, hvflip, got 'flip'"),
    Case("infer-tta-on-a-tta-model", [*INFER[:3], "{tmp}/tta_graph.onnx", "--csv", "{tmp}/t2.csv", "--device", "cpu",
                                      "--tta", "hvflip", "--probs", "{tmp}/t2p.csv"], 2,
         "tta_graph.onnx: the model already runs hflip TTA inside its graph (exported with --tta hflip); leave out "
         "--tta hvflip, it would flip the views twice", setup=_tta_graph_model, guard=["{tmp}/tta_graph.onnx"],
         check=_absent("{tmp}/t2.csv", "{tmp}/t2p.csv")),
    Case("eval-tta-on-a-tta-model", ["eval", "{labelled}", "--model", "{tmp}/tta_graph.onnx", "--device", "cpu",
                                     "--tta", "hflip", "--report", "{tmp}/t3.json"], 2,
         "tta_graph.onnx: the model already runs hflip TTA inside its graph", setup=_tta_graph_model,
         check=_absent("{tmp}/t3.json")),
    Case("infer-tta-none-on-a-tta-model", [*INFER[:3], "{tmp}/tta_graph.onnx", "--csv", "{tmp}/t4.csv", "--device",
                                           "cpu", "--tta", "none"], 0, "", setup=_tta_graph_model),
    # --- clf score --probs (issue 11) ---
    Case("score-probs-missing-file", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                      "{tmp}/nope_probs.csv"], 2, "nope_probs.csv: file not found"),
    Case("score-probs-is-a-folder", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs", "{empty}"], 2,
         "empty: is a folder, not a CSV file"),
    Case("score-probs-not-utf8", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                  "{tmp}/probs_latin1.csv"], 2, "probs_latin1.csv: not a UTF-8 text file",
         setup=lambda places: (Path(places["tmp"]) / "probs_latin1.csv").write_bytes(
             "id,caf\xe9\na,1\n".encode("latin-1"))),
    Case("score-probs-is-the-submission", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                           "{tmp}/sub_extra.csv"], 2,
         "sub_extra.csv: no column for the classes 'cat', 'dog', 'fox' of", guard=["{tmp}/sub_extra.csv"]),
    Case("score-probs-missing-class-column", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                              "{tmp}/probs_nofox.csv"], 2,
         "probs_nofox.csv: no column for the class 'fox' of",
         setup=_write("probs_nofox.csv", "id,cat,dog\n" + "".join(f"{i},0.5,0.5\n" for i in "abcd"))),
    Case("score-probs-missing-ids", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                     "{tmp}/probs_short.csv"], 2,
         "probs_short.csv: 2 ids of", setup=_write("probs_short.csv", "id,cat,dog,fox\na,1,0,0\nb,0,1,0\n")),
    Case("score-probs-not-a-number", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                      "{tmp}/probs_text.csv"], 2,
         "probs_text.csv: line 3: column 'dog' holds 'high', not a probability (a finite number >= 0)",
         setup=_write("probs_text.csv", "id,cat,dog,fox\na,1,0,0\nb,0,high,0\nc,1,0,0\nd,0,0,1\n")),
    Case("score-probs-all-zero-row", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                      "{tmp}/probs_zero.csv"], 2,
         "probs_zero.csv: line 2: every probability of id 'a' is 0",
         setup=_write("probs_zero.csv", "id,cat,dog,fox\na,0,0,0\nb,0,1,0\nc,1,0,0\nd,0,0,1\n")),
    Case("score-probs-rows-rescaled", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                       "{tmp}/probs_scaled.csv"], 0, "",
         setup=_write("probs_scaled.csv", "id,cat,dog,fox\na,2,0,0\nb,0,50,0\nc,3,0,0\nd,0,0,0.5\nzz,1,1,1\n")),
    # issue 24: a column that is no class rescaled every row without a word; a model class nobody has stays fine
    Case("score-probs-extra-non-class-column", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                                "{tmp}/probs_weight.csv"], 2,
         "probs_weight.csv: column 'weight' is no class of",
         setup=_write("probs_weight.csv", "id,cat,dog,fox,weight\na,1,0,0,3\nb,0,1,0,3\nc,1,0,0,3\nd,0,0,1,3\n")),
    Case("score-probs-model-class-nobody-has", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--probs",
                                                "{tmp}/probs_owl.csv"], 0, "",
         setup=_write("probs_owl.csv", "id,cat,dog,fox,owl\na,0.7,0.1,0.1,0.1\nb,0.1,0.7,0.1,0.1\n"
                                       "c,0.7,0.1,0.1,0.1\nd,0.1,0.1,0.7,0.1\nzz,0.25,0.25,0.25,0.25\n")),
    # --- found by attacker 2: column flags, NaN statistics, special files, hostile models, rich markup ---
    Case("infer-id-col-empty", [*INFER, "--csv", "{tmp}/a1.csv", "--id-col", ""], 2,
         "--id-col must name a column, got ''", check=_absent("{tmp}/a1.csv")),
    Case("infer-label-col-empty", [*INFER, "--csv", "{tmp}/a2.csv", "--label-col", " "], 2,
         "--label-col must name a column, got ' '", check=_absent("{tmp}/a2.csv")),
    Case("infer-id-col-equals-label-col", [*INFER, "--csv", "{tmp}/a3.csv", "--id-col", "x", "--label-col", "x"], 2,
         "--id-col and --label-col are both 'x'; give two column names", check=_absent("{tmp}/a3.csv")),
    Case("infer-id-col-is-a-topk-column", [*INFER, "--csv", "{tmp}/a4.csv", "--id-col", "label_2", "--topk", "2"], 2,
         "--id-col 'label_2' is also a top-k column (label_2); give another --id-col or --label-col",
         check=_absent("{tmp}/a4.csv")),
    Case("infer-id-col-is-a-class-with-probs", [*INFER, "--csv", "{tmp}/a5.csv", "--id-col", "dark", "--probs",
                                                "{tmp}/a5p.csv"], 2,
         "brightness.onnx: a class is named 'dark' like the id column of --probs; give another --id-col",
         check=_absent("{tmp}/a5.csv", "{tmp}/a5p.csv")),
    Case("infer-mean-nan", [*INFER, "--csv", "{tmp}/a6.csv", "--mean", "nan,0,0"], 2,
         "--mean takes 3 finite numbers, got (nan, 0.0, 0.0)", check=_absent("{tmp}/a6.csv")),
    Case("infer-std-nan", [*INFER, "--csv", "{tmp}/a7.csv", "--std", "1,nan,1"], 2,
         "--std takes 3 values > 0, got (1.0, nan, 1.0)", check=_absent("{tmp}/a7.csv")),
    Case("infer-model-is-a-fifo", ["infer", "{images}", "--model", "{tmp}/model.fifo", "--csv", "{tmp}/a8.csv"], 2,
         "model.fifo: not a regular file (a FIFO, device or socket); give an .onnx file", setup=_fifo("model.fifo"),
         check=_absent("{tmp}/a8.csv")),
    Case("infer-labels-is-a-fifo", [*INFER[:3], "{plain}", "--csv", "{tmp}/a9.csv", "--img-size", "16", "--mean",
                                    "0,0,0", "--std", "1,1,1", "--labels", "{tmp}/labels.fifo"], 2,
         "labels.fifo: --labels names a folder or special file, not a text file", setup=_fifo("labels.fifo"),
         check=_absent("{tmp}/a9.csv")),
    Case("infer-sample-duplicated-id", [*INFER, "--csv", "{tmp}/a10.csv", "--sample-submission", "{tmp}/sdup.csv"], 2,
         "sdup.csv: line 5: id 'img_0001' is listed twice (also line 2); keep one row per id",
         setup=_write("sdup.csv", "id,label\n" + "".join(f"{i},x\n" for i in IDS) + "img_0001,x\n"),
         guard=["{tmp}/sdup.csv"], check=_absent("{tmp}/a10.csv")),
    Case("infer-model-with-two-inputs", [*INFER[:3], "{tmp}/two.onnx", "--csv", "{tmp}/a11.csv"], 2,
         "two.onnx: the model has 2 inputs (input, extra1); clf feeds one image tensor [N, 3, H, W]",
         setup=_hand_model("two.onnx", inputs=2), check=_absent("{tmp}/a11.csv")),
    Case("infer-preprocess-unknown-key", [*INFER[:3], "{tmp}/newer.onnx", "--csv", "{tmp}/a12.csv"], 2,
         "newer.onnx: corrupt clf metadata (clf.preprocess: unknown key(s) 'gamma'; made by a newer clf?",
         setup=_hand_model("newer.onnx", preprocess={"gamma": 2.2}), check=_absent("{tmp}/a12.csv")),
    Case("infer-preprocess-nan-mean", [*INFER[:3], "{tmp}/nanmean.onnx", "--csv", "{tmp}/a13.csv"], 2,
         "nanmean.onnx: corrupt clf metadata (clf.preprocess: mean, std and scale must be finite numbers",
         setup=_hand_model("nanmean.onnx", preprocess={"mean": [float("nan"), 0, 0]}), check=_absent("{tmp}/a13.csv")),
    Case("infer-dynamic-model-huge-size", [*INFER[:3], "{tmp}/huge.onnx", "--csv", "{tmp}/a14.csv"], 2,
         "corrupt clf metadata (clf.preprocess: size must be at most 4096 pixels a side, got (200000, 200000))",
         setup=_hand_model("huge.onnx", size=("H", "W"), preprocess={"size": [200000, 200000]}),
         check=_absent("{tmp}/a14.csv")),
    Case("eval-class-name-is-rich-markup", ["eval", "{images}", "--model", "{tmp}/markup.onnx", "--device", "cpu",
                                            "--labels-csv", "{tmp}/markup.csv"], 0, "",
         setup=lambda places: (_hand_model("markup.onnx", classes=["[/red]", "[bold]", "x"])(places),
                               _write("markup.csv", "id,label\nimg_0001,[/red]\nimg_0002,[bold]\n")(places))),
    Case("eval-labels-csv-id-col-empty", ["eval", "{images}", "--model", "{model}", "--labels-csv",
                                          "{tmp}/answers.csv", "--id-col", ""], 2, "--id-col must name a column"),
    Case("score-id-col-equals-label-col", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv", "--label-col", "id"],
         2, "--id-col and --label-col are both 'id'; give two column names"),
    Case("score-submission-is-the-answers", ["score", "{tmp}/answers.csv", "{tmp}/answers.csv"], 2,
         "answers.csv: is also the answers file; score a submission against other answers"),
    Case("infer-folder-name-with-a-newline", ["infer", "{tmp}/no\nfolder", "--model", "{model}", "--csv",
                                              "{tmp}/a15.csv"], 2, "no\\nfolder: folder not found",
         check=_absent("{tmp}/a15.csv")),
    Case("score-answer-without-label", ["score", "{tmp}/answers.csv", "{tmp}/answers_blank.csv"], 2,
         "answers_blank.csv: 1 ids have an empty 'label' (b); fill in their labels or drop those rows",
         setup=_write("answers_blank.csv", "id,label\na,cat\nb, \nc,cat\nd,fox\n")),
    Case("score-extra-ids-warned", ["score", "{tmp}/sub_extra.csv", "{tmp}/answers.csv"], 0, ""),
]

NEEDS_NO_GPU = [
    Case("infer-device-cuda-without-cuda", [*INFER[:4], "--device", "cuda", "--csv", "{tmp}/o30.csv"], 2,
         "cuda requested but",
         check=_absent("{tmp}/o30.csv")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, places):
    run_case(case, places)


@no_driver_here
@pytest.mark.parametrize("case", NEEDS_NO_GPU, ids=lambda c: c.id)
def test_bad_input_without_gpu(case, places):
    run_case(case, places)


def test_extra_ids_in_a_submission_are_counted_in_a_warning(places):
    result = run_case(CASES[-1], places)
    assert result.stdout.strip() == f"{places['tmp']}/sub_extra.csv: accuracy 1.0000 on 4 rows of " \
                                    f"{places['tmp']}/answers.csv"
    assert f"{places['tmp']}/sub_extra.csv: 1 ids are not in {places['tmp']}/answers.csv (zz); not scored" \
        in result.stderr


EVAL_PARITY = Case("eval-checkpoint-fails-parity", ["eval", "{labelled}", "--model", "{tmp}/run-parity",
                                                    "--device", "cpu"], 3,
                   "run-parity: its ONNX export fails the parity check (max abs diff ",
                   guard=["{tmp}/run-parity"])


def test_eval_of_a_checkpoint_whose_export_fails_parity(places, monkeypatch):
    from export_helpers import make_checkpoint, scale_float_initializers

    from clf.export import graph

    make_checkpoint(Path(places["tmp"]) / "run-parity" / "best.pt", data=places["labelled"])
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m), set_metadata(m, p)))
    result = run_case(EVAL_PARITY, places)
    line = next(line for line in result.output.splitlines() if line.startswith("error: "))
    assert line.endswith(f"; inspect it with `clf export {places['tmp']}/run-parity --onnx`")
    assert "clf-eval-" not in line


# --- the Predictor API ---

def _predictor_rows(places):
    return {
        "text-file": (lambda: Predictor(places["models"] / "text.onnx"), DataError, "not a valid ONNX model"),
        "folder": (lambda: Predictor(places["models"]), DataError, "is a folder, not an ONNX model"),
        "repeated-classes": (lambda: Predictor(places["model"], device="cpu", classes=["a", "b", "a"]), DataError,
                             "class 'a' appears twice in --labels"),
        "wrong-class-count": (lambda: Predictor(places["model"], device="cpu", classes=["a", "b"]), DataError,
                              "the model outputs 3 classes but 2 class names were given"),
        "nan-outputs": (lambda: Predictor(places["nan"], device="cpu").predict([np.zeros((8, 8, 3), np.uint8)]),
                        ModelError, "the model outputs NaN or inf for 1 of 1 images (<array #0>)"),
        "strict-garbage-bytes": (lambda: Predictor(places["model"], device="cpu").predict([b"junk"], strict=True),
                                 DataError, "<bytes #0>: "),
        "bad-device": (lambda: Predictor(places["model"], device="gpu"), DeviceError, "unknown device 'gpu'"),
        "int-source-is-no-file-descriptor": (lambda: Predictor(places["model"], device="cpu").predict([0], strict=True),
                                             DataError, "0: not an image source (int); give a path, encoded bytes"),
        "empty-array": (lambda: Predictor(places["model"], device="cpu").predict([np.zeros((0, 4, 3), np.uint8)],
                                                                                  strict=True),
                        DataError, "empty array of shape (0, 4, 3)"),
    }


@pytest.mark.parametrize("row", ["text-file", "folder", "repeated-classes", "wrong-class-count", "nan-outputs",
                                 "strict-garbage-bytes", "bad-device", "int-source-is-no-file-descriptor",
                                 "empty-array"])
def test_predictor_api(places, row):
    call, error, phrase = _predictor_rows(places)[row]
    with pytest.raises(error) as err:
        call()
    assert phrase in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_bad_pixel_budget_is_one_error_not_a_skip_of_every_image(places, monkeypatch, value):
    monkeypatch.setenv("CLF_MAX_IMAGE_PIXELS", value)
    case = Case(f"infer-max-image-pixels-{value}", [*INFER, "--csv", "{tmp}/pix.csv"], 2,
                f"CLF_MAX_IMAGE_PIXELS={value}: not a whole number of pixels", check=_absent("{tmp}/pix.csv"))
    result = run_case(case, places)
    assert "skipped" not in result.output


# --- `clf serve`: everything is refused before Ray starts (no row here starts Ray) ---

SERVE = ["serve", "{model}", "--port", "{free_port}"]
SERVE_CASES = [
    Case("serve-missing-model", ["serve", "{tmp}/absent.onnx"], 2, "absent.onnx: file not found"),
    Case("serve-empty-model-argument", ["serve", ""], 2, "MODEL is empty; give an .onnx file"),
    Case("serve-model-is-a-folder", ["serve", "{models}"], 2, "models: is a folder, not an ONNX model",
         guard=["{models}"]),
    Case("serve-model-is-text", ["serve", "{models}/text.onnx"], 2, "text.onnx: not a valid ONNX model",
         guard=["{models}"]),
    Case("serve-model-without-metadata", ["serve", "{plain}", "--port", "{free_port}"], 2,
         "plain.onnx: no clf metadata (exported by another tool?); clf serve needs the class names and preprocessing "
         "in the model: export it with `clf export RUN --onnx`", guard=["{models}"]),
    Case("serve-port-in-use", ["serve", "{model}", "--port", "{busy_port}"], 2,
         "is already in use (another server?); stop it or give another --port", guard=["{models}"]),
    Case("serve-port-of-rays-dashboard-agent", [*SERVE[:2], "--port", "52365"], 2,
         "--port 52365: the local Ray instance clf serve starts uses it for its dashboard agent; give another --port "
         "(e.g. 8000)"),
    Case("serve-host-not-this-machine", [*SERVE, "--host", "192.0.2.123"], 2,
         "--host 192.0.2.123: not an address of this machine; give one of its addresses, e.g. 127.0.0.1"),
    Case("serve-port-zero", [*SERVE[:2], "--port", "0"], 2, "--port must be between 1 and 65535, got 0"),
    Case("serve-port-too-big", [*SERVE[:2], "--port", "70000"], 2, "--port must be between 1 and 65535, got 70000"),
    Case("serve-replicas-zero", [*SERVE, "--replicas", "0"], 2, "--replicas must be >= 1, got 0"),
    Case("serve-max-batch-size-zero", [*SERVE, "--max-batch-size", "0"], 2,
         "--max-batch-size must be between 1 and 1024, got 0"),
    Case("serve-max-batch-size-huge", [*SERVE, "--max-batch-size", "100000"], 2,
         "--max-batch-size must be between 1 and 1024, got 100000"),
    Case("serve-batch-wait-negative", [*SERVE, "--batch-wait-ms", "-1"], 2,
         "--batch-wait-ms must be between 0 and 10000, got -1"),
    Case("serve-batch-wait-nan", [*SERVE, "--batch-wait-ms", "nan"], 2,
         "--batch-wait-ms must be between 0 and 10000, got nan"),
    Case("serve-threads-negative", [*SERVE, "--threads", "-2"], 2,
         "--threads must be >= 0 (0 = the usable cores / replicas), got -2"),
    Case("serve-unknown-device", [*SERVE, "--device", "gpu"], 2,
         "--device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"),
    Case("serve-empty-host", [*SERVE, "--host", " "], 2, "--host is empty; give an address to listen on"),
    Case("serve-empty-address", [*SERVE, "--address", ""], 2, "--address is empty; give a Ray cluster address"),
]
SERVE_NEEDS_NO_GPU = [
    Case("serve-device-cuda-without-cuda", [*SERVE, "--device", "cuda"], 2, "cuda requested but"),
]


def _bind_below_the_ephemeral_range(probe) -> None:
    import random

    for _ in range(200):
        try:
            probe.bind(("127.0.0.1", random.randrange(20000, 32768)))
            return
        except OSError:
            continue
    raise RuntimeError("no free port in 20000-32767")


@pytest.fixture(scope="module")
def serve_places(places):
    """`places` plus a port something already listens on, and one that is free."""
    import socket

    with socket.socket() as busy, socket.socket() as free:
        _bind_below_the_ephemeral_range(busy)  # never a port of Ray's own (52365 is in the ephemeral range)
        busy.listen()
        _bind_below_the_ephemeral_range(free)
        free_port = free.getsockname()[1]
        free.close()  # a race with another process taking it is harmless: every row fails before listening
        yield {**places, "busy_port": busy.getsockname()[1], "free_port": free_port}


@pytest.mark.parametrize("case", SERVE_CASES, ids=lambda c: c.id)
def test_serve_bad_input(case, serve_places, monkeypatch):
    from clf.serve import ray_app

    def ray_started(*args, **kwargs):
        raise AssertionError("Ray was started: this row must be refused before")

    monkeypatch.setattr(ray_app, "_ray_session", ray_started)
    run_case(case, serve_places)


@no_driver_here
@pytest.mark.parametrize("case", SERVE_NEEDS_NO_GPU, ids=lambda c: c.id)
def test_serve_bad_input_without_gpu(case, serve_places):
    run_case(case, serve_places)


def test_serve_without_the_serve_extra(serve_places, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    case = Case("serve-without-extra", SERVE, 2, "clf serve needs the serve extra: pip install 'clf[serve]'")
    result = run_case(case, serve_places)
    assert result.output.strip() == "error: clf serve needs the serve extra: pip install 'clf[serve]'"


# --- `clf serve`: --replicas and --threads within this machine's usable cores (2 here, patched), before Ray ---

SERVE_CAPACITY_CASES = [
    Case("serve-replicas-million", [*SERVE, "--replicas", "1000000"], 2,
         "--replicas 1000000: more than the 2 usable cores of this machine (each replica is a process with its own "
         "model); give --replicas 2 or fewer", guard=["{models}"]),
    Case("serve-replicas-one-too-many", [*SERVE, "--replicas", "3"], 2,
         "--replicas 3: more than the 2 usable cores of this machine"),
    Case("serve-threads-too-many", [*SERVE, "--threads", "64"], 2,
         "--threads 64: more than the 2 usable cores of this machine; give --threads 2 or fewer, or 0 (the usable "
         "cores / replicas)"),
]


@pytest.mark.parametrize("case", SERVE_CAPACITY_CASES, ids=lambda c: c.id)
def test_serve_capacity_is_refused_before_ray(case, serve_places, monkeypatch):
    from clf.serve import ray_app

    def ray_started(*args, **kwargs):
        raise AssertionError("Ray was started: this row must be refused before")

    monkeypatch.setattr(ray_app, "usable_cpus", lambda: 2)
    monkeypatch.setattr(ray_app, "_ray_session", ray_started)
    result = run_case(case, serve_places)
    assert len(result.output.strip().splitlines()) == 1, result.output
