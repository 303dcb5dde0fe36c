"""`clf infer --ray`: Ray Data writes the rows plain `clf infer` writes.

On the sample competition (a tiny cnn trained and exported once) with the files users meet beside the images (a
corrupt JPEG, a truncated PNG, a text file named .png, a link to an image, a FIFO named .jpg, a readme), run as a
user runs it (a subprocess whose process tree is listed from /proc while it runs): the CSV equals plain infer's row
by row (ids, order, labels; probabilities within 1e-6) with --probs and a shuffled --sample-submission, and with TTA
and top-k; the unreadable files are reported in the same lines; every listening socket of the tree is on loopback,
and nothing of it is left once it exits. Bad inputs are one line each, before Ray starts.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import clf, error_line
from proc_helpers import alive, cmdline, is_loopback, listening_sockets, process_tree
from serve_helpers import bad_images, cli_state

from clf.config import InferConfig
from clf.errors import ClfError, DataError, ModelError
from clf.serve import ray_infer
from clf.serve.loading import make_predictor
from clf.serve.predictions import PredictionResult

REPO = Path(__file__).resolve().parents[1]
needs_ray_data = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ray_infer.DATA_EXTRA_MODULES),
                                    reason="needs the data extra: pip install 'clf[data]'")
RUN_TIMEOUT_S = 240  # Ray's start-up: ~10 s alone on 2 cores, several times that beside a busy test suite
STOP_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model.onnx, the test folder with the odd files, a sample submission in shuffled order)."""
    root = tmp_path_factory.mktemp("ray-infer")
    assert clf("sample-data", root / "comp", "--per-class", "16", "--size", "32", "--test", "24").exit_code == 0
    trained = clf("train", root / "comp" / "train", "--arch", "cnn", "--img-size", "32", "--epochs", "1",
                  "--batch-size", "16", "--out", root / "runs", "--name", "r", "--quiet")
    assert trained.exit_code == 0, trained.output
    assert clf("export", root / "runs" / "r", "--onnx").exit_code == 0
    test = root / "comp" / "test"
    images = sorted(test.iterdir())
    bad_images(test, next(p for p in images if p.suffix == ".png"))
    (test / "linked.png").symlink_to(images[0])
    os.mkfifo(test / "pipe.jpg")
    (test / "readme.txt").write_text("not an image")
    ids = [p.stem for p in images] + ["linked", "corrupt"]
    sample = root / "sample.csv"
    order = np.random.default_rng(0).permutation(len(ids))
    sample.write_text("id,label\n" + "".join(f"{ids[i]},circle\n" for i in order))
    return root / "runs" / "r" / "model.onnx", test, sample


@needs_ray_data
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists sockets and processes through /proc")
@pytest.mark.parametrize("options", [
    pytest.param(("--probs", "{probs}", "--sample-submission", "{sample}", "--batch-size", "5"), id="probs-sample"),
    pytest.param(("--tta", "hflip", "--topk", "2", "--id-format", "name"), id="tta-topk"),
])
def test_ray_rows_equal_plain_rows(competition, tmp_path, options):
    model, test, sample = competition
    given = [o.format(probs=tmp_path / "{kind}-probs.csv", sample=sample) for o in options]

    def args(kind: str) -> list[str]:
        return ["infer", str(test), "--model", str(model), "--csv", str(tmp_path / f"{kind}.csv"), "--device", "cpu",
                *[o.format(kind=kind) for o in given]]

    plain = clf(*args("plain"))
    assert plain.exit_code == 0, plain.output
    log = tmp_path / "ray.log"
    code, tree, listeners = _run_watched([*args("ray"), "--ray", "--actors", "2"], log)
    output = log.read_text()
    assert code == 0, output
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "plain.csv").read_text()
    if "--probs" in options:
        _check_same_probs(tmp_path / "plain-probs.csv", tmp_path / "ray-probs.csv")
    skipped = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert skipped == [line for line in plain.stderr.splitlines() if line.startswith("WARNING")]
    unreadable = [line for line in skipped if line.endswith("; skipped")]
    assert len(unreadable) == 4 and any("pipe.jpg" in line for line in unreadable), skipped  # corrupt, FIFO, text, cut
    summary = (plain.stdout.split(" (")[0].replace("plain.csv", "ray.csv")
               .replace("on CPUExecutionProvider", "on Ray Data, CPUExecutionProvider"))
    assert summary in output and "Traceback" not in output
    assert len(listeners) >= 4, listeners  # GCS, raylet, agents, workers: an empty list would prove nothing
    assert [entry for entry in listeners if not is_loopback(entry[2])] == []
    assert not [command for command in tree.values() if "dashboard/dashboard.py" in command]
    assert any("PredictorActor" in command for command in tree.values()), tree  # (the second may still be starting)
    _check_nothing_left(list(tree))


def _run_watched(args: list[str], log: Path) -> tuple[int, dict[int, str], list[tuple[int, str, str, int]]]:
    """Run `clf ARGS` in a fresh session; while it runs, collect every process of its tree (with its last command
    line: Ray's workers retitle themselves) and every socket they listen on. Returns (exit code, {pid: command
    line}, the listeners seen)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    seen: dict[int, str] = {}
    listeners: set[tuple[int, str, str, int]] = set()
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "clf", *args], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            tree = process_tree(proc.pid)
            seen.update((pid, command) for pid in tree if (command := cmdline(pid).strip()))  # "": a zombie
            listeners.update(listening_sockets(tree))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = proc.wait(RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"clf infer --ray still running after {RUN_TIMEOUT_S} s:\n{log.read_text()}")
    finally:
        done.set()
        watcher.join()
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return code, seen, sorted(listeners)


def _check_same_probs(plain: Path, ray: Path) -> None:
    def read(path: Path) -> tuple[list[str], list[str], np.ndarray]:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])

    (header, ids, values), (header_ray, ids_ray, values_ray) = read(plain), read(ray)
    assert (header_ray, ids_ray) == (header, ids)
    np.testing.assert_allclose(values_ray, values, rtol=0, atol=1e-6)


def _check_nothing_left(tree: list[int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"left running: {[cmdline(pid) for pid in left]}"


@pytest.mark.parametrize("args, expected", [
    (["--ray", "--host", "0.0.0.0"], "error: --host 0.0.0.0: a local clf infer --ray binds Ray to loopback only "
                                     "(127.0.0.1); to use other machines, start a Ray cluster there and give its "
                                     "--address"),
    (["--address", " "], "error: --address is empty; give the Ray cluster's address (ray://HOST:10001, HOST:PORT or "
                         "auto), or use --ray for a local Ray"),
    (["--ray", "--actors", "-1"], "error: --actors must be >= 0 (0 = the usable cores, at least 2), got -1"),
    (["--ray", "--actor-threads", "0"], "error: --actor-threads must be >= 1, got 0"),
])
def test_bad_ray_options_are_one_line(competition, tmp_path, args, expected):
    model, test, _ = competition
    result = clf("infer", test, "--model", model, "--csv", tmp_path / "s.csv", *args)
    assert result.exit_code == 2
    assert error_line(result) == expected
    assert not (tmp_path / "s.csv").exists()


def test_an_address_where_nothing_answers_is_one_line(competition, tmp_path):
    """ray.init would wait there for more than 10 minutes (Ray 2.60)."""
    model, test, _ = competition
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = clf("infer", test, "--model", model, "--csv", tmp_path / "s.csv", "--address", f"127.0.0.1:{port}")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: --address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} "
                                  "(Connection refused); check the address (ray://HOST:10001 from outside the "
                                  "cluster, auto on one of its nodes)")
    assert time.monotonic() - started < 30 and not (tmp_path / "s.csv").exists()


def test_calls_and_actors():
    assert ray_infer.plan_calls(4000, 2) == (16, 2)  # ~ROWS_PER_CALL images per call
    assert ray_infer.plan_calls(29, 2) == (4, 2)  # few images (the live test's 29): still two calls per actor
    assert ray_infer.plan_calls(3, 2) == (3, 2)
    assert ray_infer.plan_calls(1, 2) == (1, 1)  # no actor without a call


def test_a_cluster_host_is_allowed_with_address():
    assert InferConfig(images="i", model="m.onnx", address="ray://10.0.0.5:10001", host="0.0.0.0").on_ray


def test_missing_data_extra_is_one_line(competition, tmp_path, monkeypatch):
    model, test, _ = competition
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    result = clf("infer", test, "--model", model, "--csv", tmp_path / "s.csv", "--ray")
    assert result.exit_code == 2
    assert error_line(result) == "error: clf infer --ray needs the data extra: pip install 'clf[data]'"


def test_rows_come_back_in_index_order_with_failures_named(competition):
    """Rows arrive in whatever order the actors finish; the result is in input order, as Predictor.predict's."""
    model, _, _ = competition
    predictor = make_predictor(InferConfig(images="i", model=str(model)))
    logits = np.array([[3, 0, 0, 0], [0, 1, 0, 0], [np.nan] * 4, [1, 0, 0, 0]], np.float32)
    columns = {"index": np.array([3, 0, 2, 1]), "ok": np.array([True, True, False, True]), "logits": logits,
               "reason": np.array(["", "", "not a readable image", ""], dtype=object)}
    paths = ["p0", "p1", "p2", "p3"]
    result = ray_infer._prediction_result(columns, paths, predictor)
    assert isinstance(result, PredictionResult)
    assert result.ok_indices.tolist() == [0, 1, 3]
    assert result.labels() == [predictor.classes[i] for i in (1, 0, 0)]
    assert result.failures == [("p2", "not a readable image")]
    columns["logits"][0, 0] = np.inf  # index 3's row: the driver checks the whole run, as plain infer does
    with pytest.raises(ModelError, match=r"outputs NaN or inf for 1 of 3 images \(p3\)"):
        ray_infer._prediction_result(columns, paths, predictor)


def test_an_actors_clf_error_comes_back_as_data_and_is_raised_as_it_was(competition, tmp_path):
    """Ray Data re-raises an actor's exception as its own UserCodeException (a remote traceback, the cause lost):
    the actor returns its clf error with the rows, and the driver raises the same class with the same line."""
    model, test, _ = competition
    actor = ray_infer.PredictorActor(InferConfig(images="i", model=str(tmp_path / "gone.onnx")))
    rows = actor({"index": np.array([0, 1]), "path": np.array([str(p) for p in sorted(test.glob("*.png"))[:2]])})
    assert list(rows["error"]) == [f"DataError:{tmp_path / 'gone.onnx'}: file not found"] * 2
    with pytest.raises(DataError) as raised:
        ray_infer._raise_actor_error(rows["error"][0])
    assert str(raised.value) == f"{tmp_path / 'gone.onnx'}: file not found"
    with pytest.raises(ClfError, match="^something odd$"):
        ray_infer._raise_actor_error("NotAClfError:something odd")
    working = ray_infer.PredictorActor(InferConfig(images="i", model=str(model)))
    paths = [str(test / "corrupt.jpg"), str(sorted(test.glob("*.png"))[0])]
    rows = working({"index": np.array([7, 8]), "path": np.array(paths)})
    assert rows["index"].tolist() == [7, 8] and rows["ok"].tolist() == [False, True]
    assert list(rows["error"]) == ["", ""] and rows["reason"][0].startswith("not a readable image")
    assert np.isnan(rows["logits"][0]).all() and np.isfinite(rows["logits"][1]).all()
