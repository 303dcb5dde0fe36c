"""`clf serve` live: one server for the module (Ray starts in seconds, not milliseconds), started as a user starts it,
as a subprocess on a free loopback port, then stopped with SIGTERM.

Every check runs against that one server in a single test, in order (health, answers equal to `clf infer`'s from
several threads at once, the batch route, a corrupt image among good ones, the listening sockets, shutdown):
pytest-xdist would otherwise hand tests of this module to two workers and start two Ray instances on two cores. The
request parsing and response shaping are tested without Ray in tests/test_http_api.py; the checks before Ray starts
(port, model, flags) are rows of tests/test_bad_inputs_serve.py.
"""

from __future__ import annotations

import csv
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import clf
from proc_helpers import all_pids as _all_pids
from proc_helpers import alive as _alive
from proc_helpers import cmdline as _cmdline
from proc_helpers import free_port as _free_port
from proc_helpers import is_loopback as _is_loopback
from proc_helpers import listening_sockets as _listening_sockets
from proc_helpers import process_tree as _process_tree
from proc_helpers import session_of as _session_of
from proc_helpers import time_wait_sockets
from serve_helpers import brightness_model, cli_state

import clf as clf_package
from clf.errors import EXIT_INTERRUPTED, EXIT_TERMINATED
from clf.serve.http_api import MAX_BODY_BYTES
from clf.system import usable_cpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists sockets and processes through /proc"),
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="needs the serve extra: pip install 'clf[serve]'"),
]

READY_TIMEOUT_S = 150  # Ray's start-up: ~10 s alone on 2 cores, several times that beside a busy test suite
STOP_TIMEOUT_S = 40
GREYS = (30, 60, 100, 128, 150, 190, 230, 250)
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


def test_clf_serve_live(tmp_path):
    images = _images(tmp_path / "images")
    model = brightness_model(tmp_path / "model.onnx")
    expected = _infer_rows(tmp_path, images, model)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(model, port, tmp_path / "server.log")
    try:
        _wait_ready(server, url, tmp_path / "server.log")
        _check_health_and_ready(url, model)
        _check_concurrent_answers_equal_infer(url, images, expected)
        _check_batch_route(url, images, expected)
        _check_corrupt_image_is_one_4xx(url, images, expected)
        _check_bad_requests(url)
        _check_body_limit_holds_for_chunked_bodies(port, images[0])
        tree = _process_tree(server.pid)
        _check_only_loopback_listeners(tree)
        _check_replica_listens_on_the_port(tree, port)
        _check_no_dashboard_server(tree)
        _check_sigterm_stops_everything(server, tree, tmp_path / "server.log")
    finally:
        _kill_leftovers(server)
    _check_restart_on_the_same_port(model, port, images[0], tmp_path / "restart.log")
    _check_stop_during_start_up_leaves_nothing(model, tmp_path)


@pytest.mark.skipif(usable_cpus() < 2, reason="two replicas need two usable cores")
def test_clf_serve_two_replicas_behind_the_proxy(tmp_path):
    """Several replicas cannot share --port (Serve gives each its own): Serve's proxy takes it, with the same
    answers, the same body limit, only loopback listeners and a clean stop."""
    images = _images(tmp_path / "images")
    model = brightness_model(tmp_path / "model.onnx")
    expected = _infer_rows(tmp_path, images, model)
    port = _free_port()
    server = _start(model, port, tmp_path / "server.log", "--replicas", "2")
    try:
        _wait_ready(server, f"http://127.0.0.1:{port}", tmp_path / "server.log")
        _check_concurrent_answers_equal_infer(f"http://127.0.0.1:{port}", images, expected)
        _check_body_limit_holds_for_chunked_bodies(port, images[0])
        tree = _process_tree(server.pid)
        _check_only_loopback_listeners(tree)
        owners = [pid for pid, proto, _, bound in _listening_sockets(tree) if bound == port and proto.startswith("tcp")]
        assert ["ProxyActor" in _cmdline(pid) for pid in owners] == [True], [_cmdline(pid) for pid in owners]
        assert len([pid for pid in tree if "ServeReplica" in _cmdline(pid)]) == 2
        _check_sigterm_stops_everything(server, tree, tmp_path / "server.log")
    finally:
        _kill_leftovers(server)


# ---- the checks, in the order the test runs them ----


def _check_health_and_ready(url: str, model: Path) -> None:
    assert _get(f"{url}/health") == (200, {"status": "ok"})
    status, ready = _get(f"{url}/ready")
    assert status == 200
    assert ready == {"ready": True, "model": str(model.resolve()), "provider": "CPUExecutionProvider",
                     "classes": ["dark", "mid", "bright"]}


def _check_concurrent_answers_equal_infer(url: str, images: list[Path], expected: dict[str, dict]) -> None:
    """Raw bodies and multipart `file` fields, JPEG and PNG, from 8 threads at once: every answer is infer's row."""
    jobs = [(image, multipart) for image in images for multipart in (False, True)] * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: _predict(url, job[0], multipart=job[1], topk=2), jobs))
    for (image, multipart), (status, answer) in zip(jobs, answers):
        assert status == 200, (image.name, answer)
        _assert_matches(answer, expected[image.stem], topk=2, where=f"{image.name} multipart={multipart}")


def _check_batch_route(url: str, images: list[Path], expected: dict[str, dict]) -> None:
    """Several `files` in one request: answers in order; an unreadable one is an error entry for that image only."""
    chosen = images[:3] + images[-2:]
    files = [p.read_bytes() for p in chosen]
    files.insert(2, b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    status, answer = _post_multipart(f"{url}/predict/batch", [("files", f"f{i}", data) for i, data in enumerate(files)])
    assert status == 200, answer
    assert len(answer) == len(files)
    assert answer[2] == {"error": "image: not a readable image (corrupt, truncated or unsupported format)"}
    for image, entry in zip(chosen, answer[:2] + answer[3:]):
        _assert_matches(entry, expected[image.stem], topk=3, where=f"batch {image.name}")


def _check_corrupt_image_is_one_4xx(url: str, images: list[Path], expected: dict[str, dict]) -> None:
    """Corrupt, truncated and text bodies among good requests, all at once: 400 for them, the others answered."""
    png = images[0].read_bytes()
    bad = {"corrupt": b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, "truncated": png[:60], "text": b"my notes\n"}
    jobs = [("bad", name) for name in bad] + [("good", image) for image in images]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda job: _post(f"{url}/predict", bad[job[1]]) if job[0] == "bad" else _predict(url, job[1]), jobs))
    for (kind, what), (status, answer) in zip(jobs, results):
        if kind == "bad":
            assert status == 400, (what, answer)
            assert answer == {"error": "image: not a readable image (corrupt, truncated or unsupported format)"}
        else:
            assert status == 200, (what, answer)
            _assert_matches(answer, expected[what.stem], topk=3, where=what.name)


def _check_bad_requests(url: str) -> None:
    assert _post(f"{url}/predict", b"") == (
        400, {"error": "empty request body; send the encoded image (JPEG, PNG, ...) as the body"})
    assert _post(f"{url}/predict?topk=zero", b"x") == (
        400, {"error": "topk: 'zero' is not a whole number; give topk=K with K >= 1"})
    status, answer = _get(f"{url}/predict")
    assert (status, answer) == (405, {"error": "/predict: use POST, not GET"})
    status, answer = _get(f"{url}/nothing-here")
    assert status == 404 and answer["error"].startswith("/nothing-here: no such route;")


def _check_body_limit_holds_for_chunked_bodies(port: int, image: Path) -> None:
    """A body over the limit is 413 with one JSON error line on every route, whether its size is declared
    (refused before a byte is read) or chunked (refused once it passes the limit, the rest dropped); the server
    answers the next request."""
    over = MAX_BODY_BYTES + (1 << 20)
    for route in ("/predict", "/predict/batch", "/health"):
        assert _post_chunked(port, route, over) == (
            413, {"error": f"request body of more than {MAX_BODY_BYTES} bytes; send smaller images"}), route
    assert _post_declaring(port, "/predict", 10**9) == (
        413, {"error": f"request body of 1000000000 bytes, more than {MAX_BODY_BYTES}; send smaller images"})
    status, answer = _post_chunked(port, "/predict?topk=1", len(image.read_bytes()), image.read_bytes())
    assert status == 200 and len(answer["topk"]) == 1, answer  # a chunked body within the limit is served
    status, answer = _predict(f"http://127.0.0.1:{port}", image)
    assert status == 200 and "label" in answer, answer


def _check_replica_listens_on_the_port(tree: list[int], port: int) -> None:
    """One replica, locally: HTTP goes straight into the replica (Serve's direct ingress), no proxy hop."""
    owners = [pid for pid, proto, _, bound in _listening_sockets(tree) if bound == port and proto.startswith("tcp")]
    assert len(owners) == 1, owners
    assert "ServeReplica" in _cmdline(owners[0]), _cmdline(owners[0])


def _check_restart_on_the_same_port(model: Path, port: int, image: Path, log: Path) -> None:
    """The connections the stopped server closed hold the port in TIME_WAIT for a minute: a new `clf serve` on it
    must still start and answer (a socket opened without SO_REUSEADDR could not listen there)."""
    assert time_wait_sockets(port) > 0  # else this would prove nothing
    server = _start(model, port, log)
    try:
        _wait_ready(server, f"http://127.0.0.1:{port}", log)
        status, answer = _predict(f"http://127.0.0.1:{port}", image)
        assert status == 200 and "label" in answer, answer
        server.send_signal(signal.SIGTERM)
        assert _wait_exit(server, log, "SIGTERM after the restart") == EXIT_TERMINATED, log.read_text()
    finally:
        _kill_leftovers(server)


def _check_no_dashboard_server(tree: list[int]) -> None:
    """No Ray dashboard server runs (ray.init(include_dashboard=False) alone still starts one); the raylet's
    dashboard agent, which the raylet cannot run without, is the one dashboard process of the tree."""
    commands = [_cmdline(pid) for pid in tree]
    assert not [c for c in commands if "dashboard/dashboard.py" in c], commands
    assert any("raylet/raylet" in c for c in commands), commands  # the tree was read: Ray's processes are in it


def _check_only_loopback_listeners(tree: list[int]) -> None:
    """Every socket that any process of the server's tree listens on is bound to loopback: none on 0.0.0.0, ::,
    or a network address. (The list also proves the lookup works: the HTTP proxy and Ray's GCS are in it.)"""
    listeners = _listening_sockets(tree)
    assert len(listeners) >= 5, listeners  # proxy, GCS, raylet, agents, workers: an empty list would prove nothing
    exposed = [(pid, proto, address, port) for pid, proto, address, port in listeners if not _is_loopback(address)]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def _check_sigterm_stops_everything(server: subprocess.Popen, tree: list[int], log: Path) -> None:
    """SIGTERM: exit 143 after Serve and Ray are shut down, and no process of the tree is left."""
    server.send_signal(signal.SIGTERM)
    code = _wait_exit(server, log, "SIGTERM once ready")
    assert code == EXIT_TERMINATED, log.read_text()
    assert "terminated (SIGTERM)" in log.read_text()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (alive := [pid for pid in tree if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive == [], f"left running after SIGTERM: {[_cmdline(pid) for pid in alive]}"


# Moments before /ready at which a stop signal must still end clean: before Ray, inside ray.init (its first process,
# Ray's first output line, the raylet, then the raylet's dashboard agent just started), and during the deployment
# (the replica starting). Before the fix, SIGTERM inside ray.init exited 15 and SIGINT left the dashboard and
# runtime-env agents running.
STOP_MOMENTS = [(signal.SIGTERM, 0.5), (signal.SIGINT, "ray/gcs/gcs_server"), (signal.SIGTERM, "first output line"),
                (signal.SIGTERM, "ray/raylet/raylet"), (signal.SIGINT, "ray::DashboardAgent"),
                (signal.SIGTERM, "ray::ServeReplica")]
MOMENT_TIMEOUT_S = 90


def _check_stop_during_start_up_leaves_nothing(model: Path, tmp: Path) -> None:
    """A stop signal at each moment of start-up: the documented exit code and message, no traceback, and no
    process of the server's session left (Ray's processes all stay in the session clf serve leads)."""
    for index, (signum, moment) in enumerate(STOP_MOMENTS):
        log = tmp / f"stop-{index}.log"
        server = _start(model, _free_port(), log)
        try:
            reached = _wait_for_moment(server, moment, log)
            if reached is None:  # Ray printed nothing (RAY_AUTH_MODE=disabled): no such moment
                continue
            assert reached, f"clf serve exited ({server.returncode}) or was ready before {moment}:\n{log.read_text()}"
            server.send_signal(signum)
            code = _wait_exit(server, log, f"{signal.Signals(signum).name} at {moment}")
            left = _session_left_after_grace(server.pid)
            output = log.read_text()
            assert left == [], (moment, [_cmdline(pid) for pid in left], output)
            if code == -signum and output == "":
                continue  # still in Python's start-up, before clf ran (a loaded machine): the default action, clean
            expected = (EXIT_TERMINATED, "terminated (SIGTERM)") if signum == signal.SIGTERM else (
                EXIT_INTERRUPTED, "interrupted")
            assert code == expected[0], (moment, code, output)
            assert expected[1] in output and "Traceback" not in output, (moment, output)
        finally:
            _kill_session(server)


def _wait_exit(server: subprocess.Popen, log: Path, what: str) -> int:
    try:
        return server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"clf serve still running {STOP_TIMEOUT_S} s after {what}:\n{log.read_text()}")


def _wait_for_moment(server: subprocess.Popen, moment: float | str, log: Path) -> bool | None:
    """Until the moment (seconds after start, the first line of output, or a process of the session whose command
    line holds the text); False when the server exited or was ready first, None when its first output was the
    ready line."""
    if isinstance(moment, float):
        time.sleep(moment)
        return server.poll() is None
    deadline = time.monotonic() + MOMENT_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        if moment == "first output line":  # Ray's notice on token authentication, printed by ray.init
            if log.read_bytes().strip():
                return None if "served at" in log.read_text(errors="replace") else True
        elif any(moment in _cmdline(pid) for pid in _session_processes(server.pid)):
            return True
        if "served at" in log.read_text(errors="replace"):
            return False
        time.sleep(0.05)
    return False


def _session_processes(session: int) -> list[int]:
    return [pid for pid in _all_pids() if _session_of(pid) == session and _alive(pid)]


def _session_left_after_grace(session: int) -> list[int]:
    """The processes of a session still alive after a grace period for those already exiting (the raylet's
    children, reaped by their parent after clf has exited)."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (alive := _session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _kill_session(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.kill()
        server.wait()
    for pid in _session_processes(server.pid):
        os.kill(pid, signal.SIGKILL)


# ---- the server and the expected answers ----


def _images(folder: Path) -> list[Path]:
    """Noisy grey images (so no two answers are alike), half PNG, half JPEG, of several sizes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, grey in enumerate(GREYS):
        size = (20 + 3 * i, 30 + 2 * i, 3)
        pixels = np.clip(grey + rng.normal(0, 12, size), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}"
        assert cv2.imwrite(str(path), pixels)
        paths.append(path)
    return paths


def _infer_rows(tmp: Path, images: list[Path], model: Path) -> dict[str, dict]:
    """`clf infer`'s label and probabilities per image id, the answers the server must give."""
    result = clf("infer", images[0].parent, "--model", model, "--csv", tmp / "sub.csv", "--probs", tmp / "probs.csv")
    assert result.exit_code == 0, result.output
    labels = {row["id"]: row["label"] for row in csv.DictReader(open(tmp / "sub.csv", newline=""))}
    rows = {}
    for row in csv.DictReader(open(tmp / "probs.csv", newline="")):
        image_id = row.pop("id")
        rows[image_id] = {"label": labels[image_id], "probs": {k: float(v) for k, v in row.items()}}
    assert len({row["label"] for row in rows.values()}) == 3, rows  # every class is somebody's answer
    return rows


def _assert_matches(answer: dict, expected: dict, topk: int, where: str) -> None:
    assert answer["label"] == expected["label"], where
    assert list(answer["probs"]) == list(expected["probs"]), where
    for name, p in expected["probs"].items():
        assert abs(answer["probs"][name] - p) <= TOLERANCE, (where, name, answer["probs"][name], p)
    best = sorted(expected["probs"], key=lambda name: -expected["probs"][name])[:topk]
    assert [entry["label"] for entry in answer["topk"]] == best, where
    assert all(entry["prob"] == answer["probs"][entry["label"]] for entry in answer["topk"]), where


def _start(model: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`clf serve` as a user runs it, in its own session; SIGTERM and SIGINT at their default actions even when the
    suite was started with them ignored (a background job ignores SIGINT), stdin closed."""
    root = str(Path(clf_package.__file__).resolve().parents[1])  # the Ray workers import this clf, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clf", "serve", str(model), "--port", str(port), "--max-batch-size", "8", *extra],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_default_stop_signals,
        )


def _default_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"clf serve exited with {server.returncode} before it was ready:\n{log.read_text()}")
        try:
            if _get(f"{url}/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"clf serve not ready within {READY_TIMEOUT_S} s:\n{log.read_text()}")


def _kill_leftovers(server: subprocess.Popen) -> None:
    """After a failed check: stop the server the way a user would, then anything of its tree still running."""
    tree = _process_tree(server.pid) if server.poll() is None else []
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    for pid in tree:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if server.poll() is None:
        server.kill()
        server.wait()


# ---- HTTP, stdlib only ----


def _request(request: urllib.request.Request, timeout: float) -> tuple[int, object]:
    """(status, the JSON answer); the text of an answer that is not JSON (Serve's own 404 before deployment)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _get(url: str, timeout: float = 30) -> tuple[int, object]:
    return _request(urllib.request.Request(url), timeout)


def _post(url: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, object]:
    return _request(urllib.request.Request(url, data=body, headers={"Content-Type": content_type}), 60)


def _post_multipart(url: str, fields: list[tuple[str, str, bytes]]) -> tuple[int, object]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, filename, data in fields
    ) + f"--{boundary}--\r\n".encode()
    return _post(url, body, f"multipart/form-data; boundary={boundary}")


def _post_chunked(port: int, route: str, size: int, data: bytes | None = None) -> tuple[int, object]:
    """POST `size` bytes (`data`, or zeros) with Transfer-Encoding: chunked and no Content-Length, 1 MB a chunk."""
    block = data if data is not None else bytes(1 << 20)
    chunks = [block] * (size // len(block)) + ([block[: size % len(block)]] if size % len(block) else [])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", route, body=iter(chunks), encode_chunked=True,
                           headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _post_declaring(port: int, route: str, declared: int) -> tuple[int, object]:
    """A request that declares a `declared`-byte body and sends only its first kilobyte: refused unread."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", route)
        connection.putheader("Content-Length", str(declared))
        connection.endheaders(bytes(1024))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _predict(url: str, image: Path, multipart: bool = False, topk: int = 3) -> tuple[int, object]:
    target = f"{url}/predict?topk={topk}"
    if multipart:
        return _post_multipart(target, [("file", image.name, image.read_bytes())])
    return _post(target, image.read_bytes())
