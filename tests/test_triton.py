"""`clf export --triton REPO` (clf/export/triton.py): the model folder of a Triton model repository, its config.pbtxt
parsed with Triton's own protobuf schema, the ownership rules, and the gate before anything reaches REPO."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_helpers import clf, error_line
from export_helpers import CLASSES, RUN_NAME, make_checkpoint, make_data
from export_helpers import CLI_FAST as FAST
from google.protobuf import text_format
from serve_helpers import cli_state

from clf.config import ExportConfig
from clf.export import triton

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install clf[dev]")



@pytest.fixture(autouse=True)
def _wide():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("triton")
    data = make_data(root / "sample")
    make_checkpoint(root / "run" / "best.pt", data=data)
    return {"root": root, "data": data}


@pytest.fixture
def run(built, tmp_path) -> Path:
    shutil.copytree(built["root"] / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def repo(built, tmp_path_factory) -> Path:
    """One repository written once for the read-only tests: the default model folder (named after the run)."""
    repo = tmp_path_factory.mktemp("triton-repo") / "models"
    with cli_state():
        result = clf("export", built["root"] / "run", "--triton", repo, *FAST)
    assert result.exit_code == 0, result.output
    return repo


def parse_config(path: Path):
    """config.pbtxt through Triton's own schema: a typo or unknown field fails here as it would in the server."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_model_folder_holds_config_labels_preprocess_and_the_versioned_model(repo):
    folder = repo / RUN_NAME
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == {".clf-folder.json", "config.pbtxt", "labels.txt", "preprocess.json", "1/model.onnx",
                     "1/model.parity.json"}
    marker = json.loads((folder / ".clf-folder.json").read_text())
    assert marker["kind"] == "triton-model" and sorted(marker["files"]) == sorted(files - {".clf-folder.json"})
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    props = {p.key: p.value for p in onnx.load(str(folder / "1" / "model.onnx")).metadata_props}
    assert (folder / "preprocess.json").read_text() == props["clf.preprocess"] + "\n"
    assert json.loads((folder / "1" / "model.parity.json").read_text())["passed"] is True


def test_config_parses_with_tritons_schema_and_matches_the_onnx_graph(repo):
    folder = repo / RUN_NAME
    config = parse_config(folder / "config.pbtxt")
    model = onnx.load(str(folder / "1" / "model.onnx"))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (config.name, config.platform, config.max_batch_size) == (RUN_NAME, "onnxruntime_onnx", 32)
    (cin,), (cout,) = config.input, config.output
    assert (cin.name, cout.name) == (inp.name, out.name) == ("input", "logits")
    assert cin.data_type == cout.data_type == model_config_pb2.TYPE_FP32
    # the batch axis is left to max_batch_size: dims are the rest of the ONNX shape
    assert list(cin.dims) == [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [3, 32, 32]
    assert list(cout.dims) == [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [len(CLASSES)]
    assert cout.label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    (group,) = config.instance_group
    assert (group.count, group.kind) == (1, model_config_pb2.ModelInstanceGroup.KIND_AUTO)


def test_the_model_runs_in_onnxruntime_at_the_largest_batch(repo):
    folder = repo / RUN_NAME
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((32, 3, 32, 32), np.float32)})
    assert logits.shape == (32, len(CLASSES))


def test_int8_composes_and_other_models_in_the_repository_are_never_touched(run, tmp_path):
    repo = tmp_path / "repo"
    other = repo / "someone-elses"
    (other / "1").mkdir(parents=True)
    (other / "config.pbtxt").write_text('name: "someone-elses"\n')
    (other / "1" / "model.onnx").write_bytes(b"not ours")
    result = clf("export", run, "--triton", repo, "--int8", "--max-batch-size", "8", "--model-name", "shapes.v2",
                 *FAST)
    assert result.exit_code == 0, result.output
    folder = repo / "shapes.v2"
    config = parse_config(folder / "config.pbtxt")
    assert (config.name, config.max_batch_size) == ("shapes.v2", 8)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    props = {p.key: p.value for p in onnx.load(str(folder / "1" / "model.onnx")).metadata_props}
    assert props["clf.precision"] == "int8"
    assert (folder / "1" / "model.parity.json").is_file()
    assert (other / "config.pbtxt").read_text() == 'name: "someone-elses"\n'
    assert (other / "1" / "model.onnx").read_bytes() == b"not ours"
    assert sorted(p.name for p in repo.iterdir()) == ["shapes.v2", "someone-elses"]  # no temp folder left


def test_a_re_export_replaces_clfs_own_folder(run, tmp_path):
    repo = tmp_path / "repo"
    assert clf("export", run, "--triton", repo, "--max-batch-size", "4", *FAST).exit_code == 0
    assert clf("export", run, "--triton", repo, "--max-batch-size", "16", *FAST).exit_code == 0
    assert parse_config(repo / RUN_NAME / "config.pbtxt").max_batch_size == 16
    assert [p.name for p in repo.iterdir()] == [RUN_NAME]


def test_a_failed_gate_writes_nothing_to_the_repository(run, tmp_path):
    repo = tmp_path / "repo"
    result = clf("export", run, "--triton", repo, "--atol", "0", *FAST)
    assert result.exit_code == 3, result.output
    failed = run / "model.parity-failed.onnx"
    assert error_line(result).startswith(f"error: {repo / RUN_NAME}: parity check failed (max abs diff ")
    assert error_line(result).endswith(f"nothing written to the repository; model kept as {failed} for inspection")
    assert failed.is_file() and (run / "model.parity-failed.parity.json").is_file()
    assert not repo.exists() or list(repo.iterdir()) == []


@pytest.mark.parametrize(("size", "preferred"), [(1, [1]), (4, [4]), (6, [4, 6]), (32, [4, 8, 16, 32]),
                                                 (100, [4, 8, 16, 32, 64, 100])])
def test_preferred_batch_sizes(size, preferred):
    assert triton.preferred_batch_sizes(size) == preferred


@pytest.mark.parametrize(("run_name", "folder", "expected"), [
    ("shapes", "x", "shapes"), ("my run/../v1", "x", "my_run_.._v1"), ("", "run-7", "run-7"), ("..", "x", "model"),
    ("été 2026", "x", "t_2026"),
])
def test_default_model_names_are_safe_folder_names(run_name, folder, expected):
    cfg = ExportConfig(checkpoint="x", triton="repo")
    name = triton.model_name(cfg, Path("/runs") / folder / "best.pt", run_name)
    assert name == expected
    from clf.config import is_safe_model_name

    assert is_safe_model_name(name)


def test_a_class_name_with_a_line_break_is_refused():
    with pytest.raises(Exception, match=r"contains a line break; Triton's labels.txt holds one name a line"):
        triton.labels_text(["cat", "dog\nfish"])
