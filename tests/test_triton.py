"""`clf export --triton REPO` (clf/export/triton.py): the model folder of a Triton model repository, its config.pbtxt
parsed with Triton's own protobuf schema, the ownership rules, and the gate before anything reaches REPO."""

from __future__ import annotations

import json
import os
import shutil
import stat
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
from temp_helpers import stale_temp_name

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


def modes(folder: Path) -> dict[str, int]:
    """relative path -> permission bits of the folder itself and everything in it."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[path.relative_to(folder).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def expected_modes(folder: Path, umask: int) -> dict[str, int]:
    """What `cp -r` would leave: folders 0777 and files 0666, minus the umask."""
    return {rel: (0o777 if (folder / rel).is_dir() else 0o666) & ~umask for rel in modes(folder)}


def test_the_model_folder_is_readable_as_cp_would_leave_it(repo):
    """issue 24: mkdtemp made the folder 0700, so a Triton server under another user could not read it."""
    from clf.atomic import process_umask

    folder = repo / RUN_NAME
    assert modes(folder) == expected_modes(folder, process_umask())
    assert modes(folder)["."] & 0o055 == 0o055 & ~process_umask()  # others may list and enter it (umask 022: 0755)


def test_the_model_folder_follows_the_umask(run, tmp_path):
    repo = tmp_path / "repo"
    previous = os.umask(0o027)
    try:
        result = clf("export", run, "--triton", repo, *FAST)
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    folder = repo / RUN_NAME
    assert modes(folder) == expected_modes(folder, 0o027)
    assert modes(folder)["."] == 0o750 and modes(folder)["1/model.onnx"] == 0o640


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


# --- issue 24: ensemble names, stale folders of a killed export ------------------------------------------------------


def test_an_ensemble_is_named_after_its_members_never_after_the_first_alone():
    runs = [Path("/r/a/best.pt"), Path("/r/b/best.pt")]
    assert triton.exported_name(runs, None) == "ensemble-a-b"
    assert triton.exported_name(runs[:1], None) == ""  # one run: its checkpoint's run name
    assert triton.exported_name(runs, Path("/r/cv5")) == "cv5"
    cfg = ExportConfig(checkpoint="x", triton="repo")
    many = [Path(f"/r/{'member' * 4}-{i}/best.pt") for i in range(8)]
    long_a = triton.model_name(cfg, many[0], triton.exported_name(many, None))
    long_b = triton.model_name(cfg, many[0], triton.exported_name(many[:7] + [Path("/r/other/best.pt")], None))
    assert len(long_a) == len(long_b) == 128 and long_a != long_b  # cut, and told apart by a hash of the whole name


def _stale_build(repo: Path, random: str, listed: dict[str, str], unlisted: dict[str, str] | None = None) -> Path:
    """A folder under clf's temp name, as a kill -9 leaves a model folder being built (marker listing `listed`)."""
    from clf.ownership import mark_folder

    folder = repo / stale_temp_name(random=random)
    mark_folder(folder, triton.KIND, list(listed))
    for rel, text in {**listed, **(unlisted or {})}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def test_the_next_export_removes_folders_a_killed_export_left_and_nothing_else(run, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    stale = _stale_build(repo, "building", {"config.pbtxt": "x", "1/model.onnx": "half"})
    empty = repo / stale_temp_name(random="nomarker")  # killed before its marker was written
    empty.mkdir()
    kept = _stale_build(repo, "usersfile", {"config.pbtxt": "x"}, unlisted={"notes.txt": "the user's"})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.pbtxt").write_text("the user's")
    link = repo / stale_temp_name(random="linkdirx")
    link.symlink_to(tmp_path / "elsewhere")
    live = repo / stale_temp_name(pid=os.getppid(), random="livewrit")  # another clf still building
    live.mkdir()
    result = clf("export", run, "--triton", repo, *FAST)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not empty.exists()
    assert (kept / "notes.txt").read_text() == "the user's" and (kept / "config.pbtxt").read_text() == "x"
    assert link.is_symlink() and (tmp_path / "elsewhere" / "config.pbtxt").read_text() == "the user's"
    assert live.is_dir()
    assert sorted(p.name for p in repo.iterdir()) == sorted([RUN_NAME, kept.name, link.name, live.name])
