"""clf.export.onnx_export.export_onnx: every seed architecture with parity, metadata, failing parity, images, fp16,
simplify, and bad input that leaves nothing behind."""

import json
import logging
import re
import shutil
import tempfile

import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import (
    BEST_VAL_ACC,
    CLASSES,
    RUN_NAME,
    assert_io_contract,
    assert_runs_like_torch,
    files_in,
    make_checkpoint,
    scale_float_initializers,
)

import clf
from clf.config import ExportConfig, Preprocess
from clf.errors import ClfError, DataError, ModelError, ParityError
from clf.export import graph
from clf.export.onnx_export import export_onnx
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint
from clf.serve.metadata import ModelInfo, info_from_props

FAST = dict(exporter="torchscript", batch_sizes=(1, 7))  # TorchScript exports the cnn in a fraction of dynamo's time



def _model(run_dir):
    return model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))


# --- every seed architecture -------------------------------------------------------------------------------------

SEED_ARCHS = [
    ("cnn", 32),
    pytest.param("alexnet", 64, marks=pytest.mark.slow),  # >= 63 px; 57M parameters: ~10 s, 30 s on busy cores
    ("resnet18", 32),
    ("rexnet_100", 32),
    pytest.param("coatnet_0_rw_224", 32, marks=pytest.mark.slow),  # a multiple of 32; ~15 s through dynamo
]


@pytest.mark.parametrize("arch, size", SEED_ARCHS)
def test_every_seed_architecture_exports_with_parity(tmp_path, train_dir, arch, size):
    make_checkpoint(tmp_path / "run" / "best.pt", arch=arch, img_size=size, data=train_dir)
    result = export_onnx(ExportConfig(checkpoint=str(tmp_path / "run"), batch_sizes=(1, 7)))

    assert result.exporter == "dynamo"  # auto's first choice works for all five; a fallback here is a regression
    assert result.path == tmp_path / "run" / "model.onnx" and result.opset == 18
    parity = result.parity
    assert parity.passed and parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0, parity
    assert parity.image_source == f"validation images of {RUN_NAME}" and parity.images == 4
    assert (parity.provider, parity.precision, parity.batch_sizes) == ("CPUExecutionProvider", "fp32", [1, 7])
    assert_io_contract(result.path, len(CLASSES), size)
    assert_runs_like_torch(result.path, _model(tmp_path / "run"), size)
    assert files_in(tmp_path / "run") == {"best.pt", "split.json", "model.onnx", "model.parity.json"}


# --- metadata and the proof ------------------------------------------------------------------------------------


def test_metadata_round_trips_through_onnx_and_onnxruntime(run):
    result = export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    expected = {
        "clf.classes": json.dumps(CLASSES),
        "clf.preprocess": Preprocess(size=(32, 32)).to_json(),
        "clf.arch": "cnn",
        "clf.img_size": "32",
        "clf.version": clf.__version__,
        "clf.run_name": RUN_NAME,
        "clf.best_val_acc": repr(BEST_VAL_ACC),
        "clf.weights": "raw",  # added in checkpoint version 2; readers that predate it ignore it
    }
    from_onnx = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    from_ort = session.get_modelmeta().custom_metadata_map
    assert from_onnx == from_ort == expected
    info = info_from_props(from_ort, str(result.path))
    assert info == ModelInfo(CLASSES, Preprocess(size=(32, 32)), "cnn", 32, clf.__version__, RUN_NAME, BEST_VAL_ACC)


def test_the_proof_describes_the_check(run):
    result = export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert result.proof == run / "model.parity.json"
    report = json.loads((run / "model.parity.json").read_text())
    assert report == {
        "passed": True, "max_abs_diff": result.parity.max_abs_diff, "mean_abs_diff": result.parity.mean_abs_diff,
        "top1_agreement": 1.0, "atol": 1e-4, "images": 4, "image_source": f"validation images of {RUN_NAME}",
        "batch_sizes": [1, 7], "provider": "CPUExecutionProvider", "model": "model.onnx", "precision": "fp32",
        "weights": "raw",
    }


def test_ema_weights_are_exported_and_said_so(tmp_path, train_dir, caplog):
    """best.pt whose "model" holds the EMA weights: the export, its metadata and its proof name them."""
    make_checkpoint(tmp_path / "run" / "best.pt", data=train_dir, weights="ema")
    with caplog.at_level(logging.INFO, logger="clf"):
        result = export_onnx(ExportConfig(checkpoint=str(tmp_path / "run"), **FAST))
    assert result.weights == "ema" and result.parity.weights == "ema" and result.parity.passed
    assert (f"exporting the EMA (averaged) weights of {tmp_path / 'run' / 'best.pt'}, the weights its best.pt "
            "holds") in caplog.messages
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props["clf.weights"] == "ema"
    assert json.loads(result.proof.read_text())["weights"] == "ema"


def test_a_checkpoint_before_ema_exports_raw_weights(tmp_path, train_dir):
    ckpt = tmp_path / "run" / "best.pt"
    make_checkpoint(ckpt, data=train_dir)
    state = torch.load(ckpt, weights_only=True)
    for key in ("weights", "ema", "ema_updates"):
        del state[key]
    torch.save(state, ckpt)
    result = export_onnx(ExportConfig(checkpoint=str(ckpt), **FAST))
    assert result.weights == "raw" and json.loads(result.proof.read_text())["weights"] == "raw"


def test_an_unknown_weights_value_is_refused(tmp_path, train_dir):
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data=train_dir, weights="average")
    with pytest.raises(ModelError) as info:
        export_onnx(ExportConfig(checkpoint=str(ckpt), **FAST))
    assert str(info.value) == (f"{ckpt}: 'weights' is 'average', not 'raw' or 'ema'; "
                               "export a checkpoint written by `clf train`")
    assert files_in(tmp_path / "run") == {"best.pt", "split.json"}


# --- parity that fails ---------------------------------------------------------------------------------------------


@pytest.fixture
def tampered(monkeypatch):
    """Every float weight of the exported graph times 1.5, slipped in where the metadata is written."""
    set_metadata = graph.set_metadata

    def tamper_then_set(model, props):
        scale_float_initializers(model, 1.5)
        set_metadata(model, props)

    monkeypatch.setattr(graph, "set_metadata", tamper_then_set)


def test_tampered_weights_fail_parity_and_leave_no_model(run, tampered):
    with pytest.raises(ParityError) as info:
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    failed = run / "model.parity-failed.onnx"
    assert str(info.value).startswith(f"{run / 'model.onnx'}: parity check failed (max abs diff ")
    # 1.5x every weight may flip predictions too: the message then also names the top-1 agreement
    assert re.search(r"> atol 0\.0001(; top-1 agreement \S+ < 100%)?\); model kept as ", str(info.value))
    assert str(info.value).endswith(f"; model kept as {failed} for inspection")
    assert info.value.exit_code == 3
    result = info.value.result  # for the CLI's table
    assert result.path == failed and not result.parity.passed and result.parity.model == failed.name
    assert result.proof == run / "model.parity-failed.parity.json"
    assert files_in(run) == {"best.pt", "split.json", "model.parity-failed.onnx", "model.parity-failed.parity.json"}
    report = json.loads((run / "model.parity-failed.parity.json").read_text())
    assert report["passed"] is False and report["max_abs_diff"] > 1e-4 and report["model"] == failed.name
    assert_io_contract(failed, len(CLASSES), 32)  # a complete model, kept for inspection


def test_failed_parity_keeps_an_earlier_good_model_and_its_proof(run, monkeypatch):
    good = export_onnx(ExportConfig(checkpoint=str(run), **FAST)).path.read_bytes()
    proof = (run / "model.parity.json").read_bytes()
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m), set_metadata(m, p)))
    with pytest.raises(ParityError):
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert (run / "model.onnx").read_bytes() == good and (run / "model.parity.json").read_bytes() == proof
    assert json.loads((run / "model.parity-failed.parity.json").read_text())["model"] == "model.parity-failed.onnx"


def test_a_failed_atol_0_after_a_passing_export_keeps_the_passing_proof(run):
    passed = export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    before = {name: (run / name).read_bytes() for name in ("model.onnx", "model.parity.json")}
    if passed.parity.max_abs_diff == 0:
        pytest.skip("this build gives bit-identical logits: atol 0 cannot fail")
    with pytest.raises(ParityError):
        export_onnx(ExportConfig(checkpoint=str(run), atol=0.0, **FAST))
    assert {name: (run / name).read_bytes() for name in before} == before
    assert json.loads((run / "model.parity-failed.parity.json").read_text())["atol"] == 0.0


def test_a_loose_enough_atol_lets_a_small_difference_pass(run, monkeypatch):
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m, 1.01), set_metadata(m, p)))
    with pytest.raises(ParityError):
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    result = export_onnx(ExportConfig(checkpoint=str(run), atol=0.1, **FAST))
    assert result.parity.passed and 1e-4 < result.parity.max_abs_diff <= 0.1 and result.parity.atol == 0.1


# --- the images parity runs on ------------------------------------------------------------------------------------


def test_parity_counts_distinct_images_not_repeated_rows(run):
    result = export_onnx(ExportConfig(checkpoint=str(run), exporter="torchscript", batch_sizes=(1, 16)))
    assert result.parity.images == 4  # repeated to 16 rows for the batch of 16, still 4 images


def test_check_images_folder_is_used_when_given(run, train_dir, tmp_path):
    folder = tmp_path / "check"
    folder.mkdir()
    for path in sorted((train_dir / "star").iterdir())[:3]:
        shutil.copy(path, folder)
    result = export_onnx(ExportConfig(checkpoint=str(run), check_images=str(folder), **FAST))
    assert (result.parity.image_source, result.parity.images) == (str(folder), 3)


def test_check_images_that_do_not_read_are_an_error_not_noise(run, tmp_path):
    folder = tmp_path / "check"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"^{folder}: none of the images could be read for the parity check$"):
        export_onnx(ExportConfig(checkpoint=str(run), check_images=str(folder), **FAST))
    assert files_in(run) == {"best.pt", "split.json"}


def test_random_tensors_only_when_no_image_exists(tmp_path, caplog):
    make_checkpoint(tmp_path / "best.pt", data=tmp_path / "gone")
    with caplog.at_level(logging.DEBUG, logger="clf"):
        result = export_onnx(ExportConfig(checkpoint=str(tmp_path / "best.pt"), **FAST))
    assert result.parity.passed and result.parity.image_source == "random tensors"
    assert result.parity.images == 14  # twice the largest batch
    assert "no real images available for the parity check; comparing on random tensors" in caplog.text


def test_a_run_without_validation_checks_on_its_training_images(tmp_path, train_dir):
    make_checkpoint(tmp_path / "best.pt", data=train_dir, val_split=0.0)
    result = export_onnx(ExportConfig(checkpoint=str(tmp_path / "best.pt"), **FAST))
    assert result.parity.image_source == f"training images of {RUN_NAME} (no validation split)"
    assert result.parity.images == 16


# --- fp16 and simplify ---------------------------------------------------------------------------------------------


def test_fp16_has_float32_io_half_weights_and_its_own_tolerance(run):
    result = export_onnx(ExportConfig(checkpoint=str(run), fp16=True, **FAST))
    assert result.path == run / "model_fp16.onnx" and result.precision == "fp16"
    model = assert_io_contract(result.path, len(CLASSES), 32)
    kinds = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds
    parity = result.parity
    assert parity.passed and parity.atol == 1e-2 and parity.max_abs_diff <= 1e-2 and parity.precision == "fp16"
    assert files_in(run) == {"best.pt", "split.json", "model_fp16.onnx", "model_fp16.parity.json"}
    assert json.loads((run / "model_fp16.parity.json").read_text())["model"] == "model_fp16.onnx"
    assert_runs_like_torch(result.path, _model(run), 32, atol=1e-2)


def test_simplify_passes_parity_again(run):
    result = export_onnx(ExportConfig(checkpoint=str(run), simplify=True, **FAST))
    assert result.simplified and result.parity.passed and result.parity.max_abs_diff <= 1e-4
    assert_io_contract(result.path, len(CLASSES), 32)
    assert {p.key for p in onnx.load(str(result.path)).metadata_props} >= {"clf.classes", "clf.preprocess"}


# --- where the model goes ------------------------------------------------------------------------------------------


def test_output_to_an_existing_folder_writes_model_onnx_inside(run, tmp_path):
    (tmp_path / "out").mkdir()
    result = export_onnx(ExportConfig(checkpoint=str(run / "best.pt"), output=str(tmp_path / "out"), **FAST))
    assert result.path == tmp_path / "out" / "model.onnx"
    assert files_in(tmp_path / "out") == {"model.onnx", "model.parity.json"}


# --- bad input -----------------------------------------------------------------------------------------------------


def _bad_checkpoints(tmp_path):
    corrupt = "cannot read the checkpoint (corrupt, truncated or not a PyTorch file)"
    (tmp_path / "corrupt.pt").write_bytes(b"definitely not a checkpoint")
    real = make_checkpoint(tmp_path / "real" / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(real[: len(real) // 2])
    shutil.rmtree(tmp_path / "real")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    return {
        "truncated.pt": f"{tmp_path / 'truncated.pt'}: {corrupt}",
        "missing.pt": f"{tmp_path / 'missing.pt'}: no such run folder or checkpoint file",
        "corrupt.pt": f"{tmp_path / 'corrupt.pt'}: {corrupt}",
        "foreign.pt": f"{tmp_path / 'foreign.pt'}: not a clf checkpoint (no clf metadata); "
        "use best.pt or last.pt written by `clf train`",
    }


@pytest.mark.parametrize("name", ["missing.pt", "corrupt.pt", "truncated.pt", "foreign.pt"])
def test_bad_checkpoints_are_one_clear_error(tmp_path, name):
    message = _bad_checkpoints(tmp_path)[name]
    before = files_in(tmp_path)
    with pytest.raises(ModelError) as info:
        export_onnx(ExportConfig(checkpoint=str(tmp_path / name), output=str(tmp_path / "model.onnx")))
    text = str(info.value)
    assert text.startswith(f"{tmp_path / name}: ") and "\n" not in text and info.value.exit_code == 2
    assert text == message
    assert files_in(tmp_path) == before


def test_a_corrupt_checkpoint_is_called_corrupt(tmp_path):
    message = _bad_checkpoints(tmp_path)["corrupt.pt"]
    with pytest.raises(ModelError, match=re.escape(message)):
        export_onnx(ExportConfig(checkpoint=str(tmp_path / "corrupt.pt")))


def test_a_checkpoint_without_class_names_is_refused(tmp_path):
    make_checkpoint(tmp_path / "best.pt", classes=[])
    with pytest.raises(ModelError, match=r"best.pt: checkpoint has no class names"):
        export_onnx(ExportConfig(checkpoint=str(tmp_path / "best.pt")))
    assert files_in(tmp_path) == {"best.pt"}


def test_class_names_that_do_not_match_the_outputs_are_refused(tmp_path):
    make_checkpoint(tmp_path / "best.pt", classes=["a", "b"])
    with pytest.raises(ModelError, match=r"best.pt: checkpoint lists 2 class names for a model with 4 outputs"):
        export_onnx(ExportConfig(checkpoint=str(tmp_path / "best.pt")))


def test_a_missing_output_folder_is_created(run, tmp_path):
    output = tmp_path / "deploy" / "v1" / "shapes.onnx"
    result = export_onnx(ExportConfig(checkpoint=str(run), output=str(output), **FAST))
    assert (result.path, result.proof) == (output, output.parent / "shapes.parity.json")
    assert files_in(output.parent) == {"shapes.onnx", "shapes.parity.json"}


def test_an_output_under_a_file_is_one_clear_error(run, tmp_path):
    (tmp_path / "file").write_text("x")
    output = tmp_path / "file" / "model.onnx"
    with pytest.raises(ClfError, match=rf"^{output}: {tmp_path / 'file'} is a file, not a folder$"):
        export_onnx(ExportConfig(checkpoint=str(run), output=str(output), **FAST))
    assert files_in(tmp_path) == {"run", "file"} and files_in(run) == {"best.pt", "split.json"}


def test_an_unwritable_output_folder_is_one_clear_error(run, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ClfError) as info:
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert str(info.value) == (f"{run / 'model.onnx'}: cannot write there (Permission denied); "
                               "choose a folder you can write to")
    assert files_in(run) == {"best.pt", "split.json"}


@pytest.mark.parametrize("name", ["best.pt", "split.json"])
def test_an_output_that_is_an_input_is_refused_before_any_work(run, name):
    before = (run / name).read_bytes()
    with pytest.raises(ClfError) as info:
        export_onnx(ExportConfig(checkpoint=str(run), output=str(run / name), **FAST))
    overwritten = name if name == "split.json" else "checkpoint"
    assert str(info.value) == f"{run / name}: -o would overwrite the {overwritten} input; write to another file"
    assert (run / name).read_bytes() == before and files_in(run) == {"best.pt", "split.json"}


def test_an_output_that_is_a_parity_image_is_refused(run, train_dir, tmp_path):
    images = tmp_path / "check"
    shutil.copytree(train_dir / "star", images)
    target = sorted(images.iterdir())[0]
    before = target.read_bytes()
    with pytest.raises(ClfError, match=rf"^{target}: -o would overwrite an input image; write to another file$"):
        export_onnx(ExportConfig(checkpoint=str(run), output=str(target), check_images=str(images), **FAST))
    assert target.read_bytes() == before


def test_a_255_character_output_name_works_and_its_proof_gets_a_legal_name(run, tmp_path):
    output = tmp_path / ("m" * 250 + ".onnx")
    result = export_onnx(ExportConfig(checkpoint=str(run), output=str(output), **FAST))
    assert result.path == output and output.is_file()
    proof = result.proof
    assert proof.parent == tmp_path and len(proof.name.encode()) == 255 and proof.name.endswith(".parity.json")
    assert proof.name.startswith("m" * 200) and json.loads(proof.read_text())["model"] == output.name
    assert files_in(tmp_path) == {"run", output.name, proof.name}  # no temp file left either


def test_two_models_in_one_folder_have_a_proof_each(run, tmp_path):
    out = tmp_path / "deploy"
    out.mkdir()
    export_onnx(ExportConfig(checkpoint=str(run), output=str(out), **FAST))
    export_onnx(ExportConfig(checkpoint=str(run), output=str(out), fp16=True, **FAST))
    export_onnx(ExportConfig(checkpoint=str(run), output=str(out / "other.onnx"), **FAST))
    assert files_in(out) == {"model.onnx", "model.parity.json", "model_fp16.onnx", "model_fp16.parity.json",
                             "other.onnx", "other.parity.json"}
    for model in ("model.onnx", "model_fp16.onnx", "other.onnx"):
        assert json.loads((out / model.replace(".onnx", ".parity.json")).read_text())["model"] == model


def test_errors_name_the_users_path_never_a_temp_file(run, monkeypatch):
    from clf.export import onnx_export

    def refuse_model(path, device):
        raise DataError(f"{path}: not a valid ONNX model (protobuf parsing failed)")

    monkeypatch.setattr(onnx_export, "create_session", refuse_model)
    with pytest.raises(DataError) as info:
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert str(info.value) == f"{run / 'model.onnx'}: not a valid ONNX model (protobuf parsing failed)"
    assert files_in(run) == {"best.pt", "split.json"}


def test_the_files_written_into_a_clf_run_folder_are_recorded_in_its_marker(run, monkeypatch):
    from clf.ownership import mark_folder, read_marker

    mark_folder(run, "run", ["best.pt", "split.json"])
    export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m), set_metadata(m, p)))
    with pytest.raises(ParityError):
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert read_marker(run)["files"] == ["best.pt", "model.onnx", "model.parity-failed.onnx",
                                         "model.parity-failed.parity.json", "model.parity.json", "split.json"]


def test_a_model_of_another_opset_than_asked_is_refused(run, monkeypatch):
    """A conversion after the export (fp16, onnxslim) that changed the opset is caught, not shipped."""
    set_metadata = graph.set_metadata

    def downgrade_then_set(model, props):
        next(o for o in model.opset_import if o.domain in ("", "ai.onnx")).version = 17
        set_metadata(model, props)

    monkeypatch.setattr(graph, "set_metadata", downgrade_then_set)
    wrong_opset = rf"^{run / 'model.onnx'}: the model has opset 17, not the --opset 18 asked for$"
    with pytest.raises(ModelError, match=wrong_opset):
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert files_in(run) == {"best.pt", "split.json"}


def test_a_failed_export_leaves_no_temp_file(run, monkeypatch):
    def broken(*args):
        raise RuntimeError("cannot export")

    monkeypatch.setitem(graph._EXPORTERS, "torchscript", broken)
    with pytest.raises(ClfError, match="ONNX export failed with every exporter: torchscript: cannot export"):
        export_onnx(ExportConfig(checkpoint=str(run), **FAST))
    assert files_in(run) == {"best.pt", "split.json"}


# --- file names beside the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, proof, kept_aside",
    [
        ("model.onnx", "model.parity.json", "model.parity-failed.onnx"),
        ("model_fp16.onnx", "model_fp16.parity.json", "model_fp16.parity-failed.onnx"),
        ("model.parity-failed.onnx", "model.parity-failed.parity.json", "model.parity-failed.parity-failed.onnx"),
        ("shapes", "shapes.parity.json", "shapes.parity-failed.onnx"),
    ],
)
def test_the_proof_and_the_kept_aside_model_are_named_after_the_model(tmp_path, model, proof, kept_aside):
    from clf.export.onnx_export import kept_aside_path, proof_path

    assert proof_path(tmp_path / model) == tmp_path / proof
    assert kept_aside_path(tmp_path / model) == tmp_path / kept_aside


@pytest.mark.parametrize("stem", ["m" * 250, "é" * 125, "a" * 240 + "日本"])
def test_names_too_long_for_a_sibling_are_cut_on_characters_and_tagged(tmp_path, stem):
    from clf.export.onnx_export import kept_aside_path, proof_path

    model = tmp_path / (stem + ".onnx")
    other = tmp_path / (stem[:-1] + "x.onnx")
    for name in (proof_path(model).name, kept_aside_path(model).name):
        assert len(name.encode()) <= 255 and "~" in name
        name.encode().decode("utf-8")  # whole characters only
    assert proof_path(model) != proof_path(other)  # same cut stem, another model: another proof
