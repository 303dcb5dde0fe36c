"""`clf export`: the parity table, the proof beside each model, exit 3 when parity fails, one clear line and exit 2
for bad input."""

import json
import os
import re
import tempfile

import pytest
import torch
from export_helpers import RUN_NAME, files_in, make_checkpoint, scale_float_initializers
from rich.console import Console
from typer.testing import CliRunner

import clf.cli.render
from clf.cli import app
from clf.errors import ClfError
from clf.export import graph

runner = CliRunner()
FAST = ["--exporter", "torchscript", "--batch-sizes", "1,7"]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """A console wide enough for the table's long temp paths."""
    monkeypatch.setattr(clf.cli.render, "console", Console(width=250, soft_wrap=True))


def export(*args):
    return runner.invoke(app, ["export", *map(str, args)])


def table(stdout: str) -> dict[str, str]:
    """The two-column table as {row name: value}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line)[1:-1]]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_export_prints_the_parity_table_and_writes_the_proof_beside_the_model(run):
    result = export(run, "--onnx", "--batch-sizes", "1,7")  # the default exporter: auto -> dynamo
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert (rows["file"], rows["proof"]) == (str(run / "model.onnx"), str(run / "model.parity.json"))
    assert (rows["opset"], rows["exporter"], rows["precision"], rows["weights"]) == ("18", "dynamo", "fp32", "raw")
    assert rows["provider"] == "CPUExecutionProvider"
    assert rows["checked on"] == f"4 inputs (validation images of {RUN_NAME}), batch sizes 1,7"
    assert rows["top-1 agreement"] == "100.00%" and rows["verdict"] == "PASS"
    assert re.fullmatch(r"\S+ \(atol 0\.0001\)", rows["max abs diff"])
    assert re.fullmatch(r"\d+\.\d\d MB", rows["size"])
    report = json.loads((run / "model.parity.json").read_text())
    assert report["passed"] is True and report["max_abs_diff"] <= 1e-4 and report["model"] == "model.onnx"
    assert f"{report['max_abs_diff']:.3g} (atol 0.0001)" == rows["max abs diff"]
    assert files_in(run) == {"best.pt", "split.json", "model.onnx", "model.parity.json"}
    assert result.stderr == ""


def test_output_and_check_images(run, train_dir, tmp_path):
    out = tmp_path / "deploy" / "shapes.onnx"
    out.parent.mkdir()
    result = export(run / "best.pt", "--onnx", "-o", out, "--check-images", train_dir / "circle", *FAST)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert (rows["file"], rows["exporter"]) == (str(out), "torchscript")
    assert rows["checked on"] == f"4 inputs ({train_dir / 'circle'}), batch sizes 1,7"
    assert files_in(out.parent) == {"shapes.onnx", "shapes.parity.json"}
    assert json.loads((out.parent / "shapes.parity.json").read_text())["model"] == "shapes.onnx"


def test_fp16(run):
    result = export(run, "--onnx", "--fp16", *FAST)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert (rows["file"], rows["precision"], rows["verdict"]) == (str(run / "model_fp16.onnx"), "fp16", "PASS")
    assert rows["max abs diff"].endswith("(atol 0.01)")
    assert json.loads((run / "model_fp16.parity.json").read_text())["passed"] is True


def test_simplify(run):
    result = export(run, "--onnx", "--simplify", *FAST)
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert (rows["exporter"], rows["verdict"]) == ("torchscript + onnxslim", "PASS")


def test_random_tensors_are_announced(tmp_path):
    make_checkpoint(tmp_path / "best.pt", data=tmp_path / "gone")
    result = export(tmp_path / "best.pt", *FAST)
    assert result.exit_code == 0, result.output
    assert table(result.stdout)["checked on"] == "14 inputs (random tensors), batch sizes 1,7"
    warning = " ".join(result.stderr.split())  # rich wraps log lines at the console width
    assert warning == "WARNING no real images available for the parity check; comparing on random tensors"


def test_failed_parity_exits_3_and_keeps_the_model_aside(run, monkeypatch):
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m), set_metadata(m, p)))
    result = export(run, "--onnx", *FAST)
    assert result.exit_code == 3
    rows = table(result.stdout)  # the numbers behind the verdict
    assert (rows["file"], rows["verdict"]) == (str(run / "model.parity-failed.onnx"), "FAIL")
    assert rows["proof"] == str(run / "model.parity-failed.parity.json")
    assert float(rows["max abs diff"].split()[0]) > 1e-4
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        rf"error: {re.escape(str(run / 'model.onnx'))}: parity check failed \(max abs diff \S+ > atol 0\.0001"
        r"(; top-1 agreement \S+ < 100%)?\); "
        rf"model kept as {re.escape(str(run / 'model.parity-failed.onnx'))} for inspection",
        line,
    ), line
    assert files_in(run) == {"best.pt", "split.json", "model.parity-failed.onnx", "model.parity-failed.parity.json"}
    assert json.loads((run / "model.parity-failed.parity.json").read_text())["passed"] is False


def _bad_input(tmp_path, run, case):
    """(args, the one expected error line, the folder that must stay as it was)."""
    if case == "missing checkpoint":
        return [tmp_path / "nope.pt"], f"{tmp_path / 'nope.pt'}: no such run folder or checkpoint file", tmp_path
    if case == "corrupt checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"")
        return [tmp_path / "bad.pt"], f"{tmp_path / 'bad.pt'}: cannot read the checkpoint", tmp_path
    if case == "non-clf checkpoint":
        torch.save({"a": 1}, tmp_path / "other.pt")
        return [tmp_path / "other.pt"], f"{tmp_path / 'other.pt'}: not a clf checkpoint (no clf metadata)", tmp_path
    if case == "output under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "model.onnx"
        return [run, "-o", out], f"{out}: {tmp_path / 'file'} is a file, not a folder", tmp_path
    if case == "output is the checkpoint":
        out = run / "best.pt"
        return [run, "-o", out], f"{out}: -o would overwrite the checkpoint input; write to another file", run
    if case == "bad batch sizes":
        return [run, "--batch-sizes", "1,x"], "--batch-sizes takes comma-separated integers like 1,8, got '1,x'", run
    if case == "unknown exporter":
        return [run, "--exporter", "onnxsim"], "--exporter must be one of auto, dynamo, torchscript", run
    raise AssertionError(case)


BAD = ["missing checkpoint", "corrupt checkpoint", "non-clf checkpoint", "output under a file",
       "output is the checkpoint", "bad batch sizes", "unknown exporter"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, run, case):
    args, message, folder = _bad_input(tmp_path, run, case)
    before = files_in(folder)
    result = export(*args, "--onnx")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {message}"), line
    assert result.stdout == "" and files_in(folder) == before


def test_unwritable_output_folder_is_one_line_and_exit_2(run, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = export(run, "--onnx", *FAST)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {run / 'model.onnx'}: cannot write there (Permission denied); choose a folder you can write to"
    ]
    assert files_in(run) == {"best.pt", "split.json"}


def test_a_full_disk_during_the_export_is_the_one_disk_full_line(run, monkeypatch):
    """Exporters wrap the ENOSPC in their own errors; it is still the usual line naming the model, and no exporter is
    tried after it (the next one would meet the same disk)."""
    tried = []

    def full_disk(name):
        def write(model, example, path, opset):
            tried.append(name)
            try:
                raise OSError(28, "No space left on device")
            except OSError as exc:
                raise RuntimeError(f"{name} failed to save the model") from exc
        return write

    for name in ("dynamo", "torchscript"):
        monkeypatch.setitem(graph._EXPORTERS, name, full_disk(name))
    result = export(run, "--onnx", "--batch-sizes", "1,7")
    assert result.exit_code == 2
    line, = result.stderr.splitlines()
    assert re.fullmatch(rf"error: {re.escape(str(run / 'model.onnx'))}: disk full \(.+ free\); free some space or "
                        r"write elsewhere", line), line
    assert tried == ["dynamo"]
    assert files_in(run) == {"best.pt", "split.json"}


def test_the_model_is_readable_by_others(run):
    """mkstemp makes 0600 files; a deployable model gets the usual permissions."""
    result = export(run, "--onnx", *FAST)
    assert result.exit_code == 0, result.output
    umask = os.umask(0)
    os.umask(umask)
    assert (run / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_opset_below_18_uses_torchscript(run):
    import onnx

    result = export(run, "--onnx", "--opset", "17", "--batch-sizes", "1,7")
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert (rows["exporter"], rows["opset"]) == ("torchscript", "17")
    assert [o.version for o in onnx.load(str(run / "model.onnx")).opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_an_opset_below_18_with_dynamo_is_one_line(run):
    result = export(run, "--onnx", "--opset", "17", "--exporter", "dynamo")
    assert result.exit_code == 2
    assert ("error: --opset 17: the dynamo exporter writes opset 18 or newer; use --exporter torchscript"
            in result.output)


# --- flags are checked before anything is loaded, and the command dispatches through the target registry ---------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--opset", "99"],
         "--opset 99: clf exports opsets 7 to 23 (torchscript 7-20, dynamo 18-23); pass one of those"),
        (["--opset", "5"], "--opset 5: clf exports opsets 7 to 23 (torchscript 7-20, dynamo 18-23); pass one of those"),
        (["--atol", "-1"], "--atol must be a finite number >= 0, got -1.0"),
        (["--atol", "nan"], "--atol must be a finite number >= 0, got nan"),
        (["--atol", "inf"], "--atol must be a finite number >= 0, got inf"),
        (["--batch-sizes", "0,8"], "--batch-sizes takes integers from 1 to 4096 like 1,8, got 0,8"),
        (["--device", "gpu"], "--device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"),
    ],
)
def test_bad_flags_are_one_line_before_anything_runs(run, monkeypatch, args, message):
    from clf.export import targets

    def must_not_run(cfg):
        raise AssertionError("the export ran")

    monkeypatch.setitem(targets.TARGETS, "onnx", must_not_run)
    result = export(run, "--onnx", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {message}"] and result.stdout == ""
    assert files_in(run) == {"best.pt", "split.json"}


def test_the_command_dispatches_through_the_target_registry(run, monkeypatch):
    from clf.config import ExportConfig
    from clf.export import onnx_export, targets

    seen = []
    real = targets.TARGETS["onnx"]
    monkeypatch.setitem(targets.TARGETS, "onnx", lambda cfg: seen.append(cfg) or real(cfg))
    result = export(run, "--onnx", *FAST)
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert isinstance(cfg, ExportConfig) and (cfg.target, cfg.checkpoint) == ("onnx", str(run))
    assert list(targets.TARGETS) == ["onnx", "triton"] and onnx_export.export_onnx
    with pytest.raises(ClfError, match=r"^export target must be one of onnx, triton, got 'bogus'$"):
        ExportConfig(checkpoint=str(run), target="bogus")


def test_a_crafted_checkpoint_data_path_is_never_followed(tmp_path):
    """A checkpoint whose config names / as its data: export used to open /etc/passwd and print its first line."""
    make_checkpoint(tmp_path / "best.pt", data="/", split=False)
    result = export(tmp_path / "best.pt", *FAST)
    assert result.exit_code == 0, result.output
    assert table(result.stdout)["checked on"] == "14 inputs (random tensors), batch sizes 1,7"
    assert "root:" not in result.output
    assert " ".join(result.stderr.split()) == (
        "WARNING no real images available for the parity check; comparing on random tensors"
    )


def test_exporting_ema_weights_is_said_on_stderr(tmp_path, train_dir):
    make_checkpoint(tmp_path / "run" / "best.pt", data=train_dir, weights="ema")
    result = export(tmp_path / "run", *FAST)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # rich wraps log lines at the console width
    assert said == (f"INFO exporting the EMA (averaged) weights of {tmp_path / 'run' / 'best.pt'}, the weights its "
                    "best.pt holds")
    assert json.loads((tmp_path / "run" / "model.parity.json").read_text())["weights"] == "ema"
    assert table(result.stdout)["weights"] == "EMA (averaged)"


def test_a_kill_9_mid_export_leaves_a_temp_the_next_export_removes(run):
    """issue 24 (10i): a real SIGKILL while the model is written; the next export into the folder removes clf's dead
    temp (writer pid gone) and nothing else."""
    import signal
    import subprocess
    import sys
    import time

    from clf.atomic import is_clf_temp_name, is_stale_temp

    (run / ".clf-mine.tmp").write_text("the user's")
    child = subprocess.Popen([sys.executable, "-m", "clf", "export", str(run), *FAST],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, temps = time.monotonic() + 120, []
    while child.poll() is None and time.monotonic() < deadline and not temps:
        temps = [p for p in run.iterdir() if is_clf_temp_name(p.name)]
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert temps, "the export ended before its temp file was seen"
    assert str(child.pid) in temps[0].name and is_stale_temp(temps[0])
    assert not (run / "model.onnx").exists()  # killed before the rename
    result = export(run, *FAST)
    assert result.exit_code == 0, result.output
    assert not any(is_clf_temp_name(p.name) for p in run.iterdir())
    assert (run / ".clf-mine.tmp").read_text() == "the user's" and (run / "model.onnx").is_file()
