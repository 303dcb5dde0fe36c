"""clf train --mlflow / --tensorboard: what was logged, read back with MLflow's client and TensorBoard's reader, equals
history.csv; a fold group is a parent run; export logs its model; a tracker that fails is a warning."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from export_helpers import CLI_FAST, make_data

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from clf.train.history import read_history_csv  # noqa: E402
from clf.train.trackers import Guarded, Tracker  # noqa: E402

TINY = ("--arch", "cnn", "--img-size", "16", "--epochs", "2", "--workers", "0", "--quiet")


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("sample"), per_class=6)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, data):
    """One tracked run: (its folder, the MLflow store folder, the TensorBoard folder)."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        result = clf("train", data, *TINY, "--out", root / "runs", "--name", "r", "--mlflow-uri", root / "mlruns",
                     "--mlflow-checkpoint", "--tensorboard", root / "tb")
    assert result.exit_code == 0, result.output
    return root / "runs" / "r", root / "mlruns", root / "tb"


def _client(run_dir: Path) -> tuple[MlflowClient, str]:
    record = json.loads((run_dir / "mlflow.json").read_text())
    return MlflowClient(record["tracking_uri"]), record["run_id"]


def _columns(rows: list[dict]) -> list[str]:
    return [key for key in rows[0] if key != "epoch" and any(row[key] is not None for row in rows)]


def test_mlflow_holds_the_history_params_and_files_of_the_run(tracked):
    run_dir, store, _ = tracked
    client, run_id = _client(run_dir)
    assert (store / "mlflow.db").is_file()  # a folder URI is an SQLite store inside it
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.params["arch"] == "cnn" and run.data.params["img_size"] == "16"
    rows = read_history_csv(run_dir / "history.csv")
    assert len(rows) == 2
    for column in _columns(rows):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, column))
        assert [step for step, _ in logged] == [1, 2], column
        assert [value for _, value in logged] == pytest.approx([row[column] for row in rows], rel=1e-5), column
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"curves.png", "config.json", "split.json", "history.csv", "best.pt"} <= artifacts
    assert "mlflow.json" in json.loads((run_dir / ".clf-folder.json").read_text())["files"]  # clf's own file


def test_tensorboard_holds_the_history_and_augmented_images(tracked):
    run_dir, _, tb = tracked
    events = EventAccumulator(str(tb / "r"), size_guidance={"images": 0})
    events.Reload()
    rows = read_history_csv(run_dir / "history.csv")
    for column in _columns(rows):
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2], column
        assert [s.value for s in scalars] == pytest.approx([row[column] for row in rows], rel=1e-5), column
    images = events.Images("augmented training images")
    assert len(images) == 1 and images[0].width >= 8 * 16 and images[0].height >= 16  # one grid of 8 samples


def test_a_resumed_run_continues_its_mlflow_run(tracked):
    run_dir, _, _ = tracked
    client, run_id = _client(run_dir)
    result = clf("train", "--resume", run_dir, "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert _client(run_dir)[1] == run_id
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_export_logs_the_model_to_the_runs_mlflow_run(tracked):
    run_dir, _, _ = tracked
    client, run_id = _client(run_dir)
    result = clf("export", run_dir, "--mlflow", *CLI_FAST)
    assert result.exit_code == 0, result.output
    assert f"logged model.onnx to MLflow run {run_id}" in result.output
    assert "model.onnx" in {a.path for a in client.list_artifacts(run_id)}


def test_export_mlflow_without_a_tracked_run_is_one_line(tmp_path, data):
    result = clf("export", data, "--mlflow")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {data}: no MLflow run recorded (mlflow.json); --mlflow on export logs the "
                                  "model to the run that `clf train --mlflow` started; train with --mlflow, or leave "
                                  "out --mlflow")


def test_a_fold_group_is_a_parent_run_with_one_child_per_fold(tmp_path, data):
    result = clf("train", data, *TINY, "--epochs", "1", "--folds", "2", "--out", tmp_path, "--name", "g",
                 "--mlflow-uri", tmp_path / "mlruns")
    assert result.exit_code == 0, result.output
    client, parent = _client(tmp_path / "g")
    children = {}
    for fold in ("fold-0", "fold-1"):
        _, child = _client(tmp_path / "g" / fold)
        run = client.get_run(child)
        assert run.data.tags["mlflow.parentRunId"] == parent and run.info.run_name == fold
        children[fold] = child
    cv = json.loads((tmp_path / "g" / "group.json").read_text())["cv"]
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.metrics["oof_acc"] == pytest.approx(cv["oof_acc"])
    assert {"oof.csv", "group.json"} <= {a.path for a in client.list_artifacts(parent)}


def test_an_unreachable_server_and_an_unwritable_folder_are_warnings(tmp_path, data, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    started = time.monotonic()
    result = clf("train", data, *TINY, "--out", tmp_path / "runs", "--name", "r",
                 "--mlflow-uri", "http://127.0.0.1:9", "--tensorboard", blocker / "tb")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    assert (tmp_path / "runs" / "r" / "best.pt").is_file()
    assert "MLflow: cannot start" in result.output and "TensorBoard: cannot start" in result.output
    assert not (tmp_path / "runs" / "r" / "mlflow.json").exists()


def test_a_missing_extra_is_one_line_and_no_run_folder(tmp_path, data, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = clf("train", data, *TINY, "--out", tmp_path, "--mlflow")
    assert result.exit_code == 2
    assert error_line(result) == ("error: --mlflow needs the mlflow package, which is not installed; pip install "
                                  "'clf[mlflow]' (or leave out --mlflow)")
    assert not any(tmp_path.iterdir())


def test_guarded_warns_once_and_leaves_the_failing_tracker_out(caplog):
    calls = []

    class Broken(Tracker):
        name = "Broken"

        def log_epoch(self, row):
            calls.append(row)
            raise OSError("disk full")

    guarded = Guarded(Broken())
    with caplog.at_level(logging.WARNING):
        guarded.log_epoch({"epoch": 1})
        guarded.log_epoch({"epoch": 2})
        guarded.finish("FINISHED")
    assert calls == [{"epoch": 1}]
    assert [r.getMessage() for r in caplog.records] == [
        "Broken: log_epoch failed (disk full); training goes on without Broken"]


def test_the_mlflow_uri_implies_mlflow_and_a_folder_is_made_absolute(tmp_path, monkeypatch):
    from clf.config import TrainConfig
    from clf.train.resume import resolve_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    cfg, _ = resolve_config({"data": "d", "mlflow_uri": "store", "tensorboard": "tb"})
    assert cfg.mlflow and cfg.mlflow_uri == str(tmp_path / "store") and cfg.tensorboard == str(tmp_path / "tb")
    assert resolve_config({"data": "d", "mlflow_uri": "sqlite:///x.db"})[0].mlflow_uri == "sqlite:///x.db"
    assert not TrainConfig().mlflow and TrainConfig(mlflow_uri="http://h:5000").mlflow
