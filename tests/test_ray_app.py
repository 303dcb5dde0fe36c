"""clf.serve.ray_app and ray_replica without a running Ray: the checks made before Ray starts, the thread count, the
loopback rewrite of Serve's internal gRPC address, and that neither `clf serve --help` nor the serve modules
load what they must not. The live server is tests/test_serve_ray.py."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from clf.config import ServeConfig
from clf.errors import ClfError
from clf import ray_local
from clf.serve import ray_app


def test_serve_help_loads_neither_ray_nor_the_model_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from clf.cli import app\n"
        "assert CliRunner().invoke(app, ['serve', '--help']).exit_code == 0\n"
        "print(','.join(m for m in ('ray', 'torch', 'onnxruntime', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_serve_modules_never_import_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` fails\n"
        "import clf.serve.ray_app, clf.serve.http_api, clf.serve.ray_replica\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("replicas, threads, usable, expected", [(1, 0, 2, 2), (2, 0, 2, 1), (3, 0, 2, 1),
                                                                  (1, 0, 16, 16), (4, 0, 16, 4), (2, 3, 2, 3)])
def test_replica_threads(monkeypatch, replicas, threads, usable, expected):
    monkeypatch.setattr(ray_app, "usable_cpus", lambda: usable)
    assert ray_app.replica_threads(ServeConfig(model="m.onnx", replicas=replicas, threads=threads)) == expected


def test_check_port_accepts_a_free_port_and_refuses_a_taken_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClfError) as caught:
            ray_app.check_port("127.0.0.1", port)
        assert str(caught.value) == (f"--port {port}: 127.0.0.1:{port} is already in use (another server?); "
                                     "stop it or give another --port")
    ray_app.check_port("127.0.0.1", port)  # closed again: free


@pytest.mark.parametrize("port, owner", [(52365, "its dashboard agent"), (10002, "its workers (ports 10002-19999)"),
                                         (19999, "its workers (ports 10002-19999)")])
def test_ports_the_local_ray_instance_takes_are_refused(port, owner):
    with pytest.raises(ClfError) as caught:
        ray_app.check_not_rays_port(port)
    assert str(caught.value) == (f"--port {port}: the local Ray instance clf serve starts uses it for {owner}; "
                                 "give another --port (e.g. 8000)")


@pytest.mark.parametrize("port", [8000, 10001, 20000, 52364])
def test_other_ports_are_not_rays(port):
    ray_app.check_not_rays_port(port)


def test_missing_extra_is_one_line(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else find_spec(name, *a))
    with pytest.raises(ClfError) as caught:
        ray_app.check_serve_extra()
    assert str(caught.value) == "clf serve needs the serve extra: pip install 'clf[serve]'"


def test_internal_grpc_address_is_rewritten_to_loopback(monkeypatch):
    pytest.importorskip("ray.serve")
    from ray.serve._private import replica

    from clf.serve.ray_replica import bind_internal_grpc_to_loopback

    seen = []
    monkeypatch.setattr(replica, "add_port_to_grpc_server", lambda server, address: seen.append(address) or 1234)
    bind_internal_grpc_to_loopback()
    bind_internal_grpc_to_loopback()  # idempotent: a second replica in the same worker wraps nothing twice
    assert replica.add_port_to_grpc_server(None, "[::]:0") == 1234
    replica.add_port_to_grpc_server(None, "10.0.0.5:7000")
    assert seen == ["127.0.0.1:0", "10.0.0.5:7000"]


def test_direct_ingress_socket_is_opened_with_the_proxys_options(monkeypatch):
    """The replica's own HTTP server (direct ingress) opens its socket as Serve's proxy does (SO_REUSEADDR): Serve
    2.60 asks for none, and a restarted server could not listen on a port its closed connections hold."""
    pytest.importorskip("ray.serve")
    import asyncio

    from ray.serve._private import replica

    from clf.serve.ray_replica import reuse_direct_ingress_port

    seen = []

    async def start(app, options, *, event_loop, enable_so_reuseport=False):
        seen.append((app, options, enable_so_reuseport))
        return "task", "server"

    monkeypatch.setattr(replica, "start_asgi_http_server", start)
    reuse_direct_ingress_port()
    reuse_direct_ingress_port()  # idempotent: a second replica in the same worker wraps nothing twice
    started = asyncio.run(replica.start_asgi_http_server("app", "options", event_loop=None, enable_so_reuseport=False))
    assert started == ("task", "server")
    assert seen == [("app", "options", True)]


@pytest.mark.parametrize("replicas, address, direct", [(1, None, True), (2, None, False), (1, "ray://h:10001", False)])
def test_direct_ingress_only_for_one_local_replica(replicas, address, direct):
    cfg = ServeConfig(model="m.onnx", replicas=replicas, address=address)
    assert ray_app.uses_direct_ingress(cfg) is direct


def test_routing_env_puts_the_port_on_the_replica_or_the_proxy():
    one = ray_app.routing_env(ServeConfig(model="m.onnx", port=8123))
    assert one["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve hands ports out of [MIN, MAX): exactly --port, so the replica listens where the user was told
    assert (one["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], one["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == (
        "8123", "8124")
    assert one["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "0"
    assert ray_app.routing_env(ServeConfig(model="m.onnx", port=8123, replicas=2)) == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    """A ClfReplica built outside Ray (its constructor is plain Python), on the brightness model."""
    pytest.importorskip("ray.serve")
    from serve_helpers import brightness_model

    from clf.serve.ray_replica import ClfReplica

    model = brightness_model(tmp_path_factory.mktemp("replica") / "model.onnx")
    return ClfReplica(str(model), "cpu", threads=1, max_batch_size=8, batch_wait_s=0.001, local=False)


def _png(grey: int) -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.full((12, 9, 3), grey, np.uint8))
    assert ok
    return data.tobytes()


def test_a_batch_maps_each_answer_to_its_own_request(replica):
    """Bad images anywhere in a dynamic batch: their requests get (400, reason), the others their own logits."""
    from serve_helpers import brightness_logits

    images = [b"junk", _png(40), b"", _png(220), _png(128), b"\x89PNG\r\n\x1a\n broken"]
    answers = replica._predict_sync(images)
    unreadable = (400, "image: not a readable image (corrupt, truncated or unsupported format)")
    assert answers[0] == unreadable and answers[5] == unreadable
    assert answers[2][0] == 400 and answers[2][1].startswith("image: ")
    for index, grey in ((1, 40), (3, 220), (4, 128)):
        assert answers[index] == pytest.approx(brightness_logits(grey), abs=1e-4)


def test_a_model_that_outputs_nan_fails_its_batch_with_500(replica, monkeypatch):
    from clf.errors import ModelError

    def broken(images):
        raise ModelError("model.onnx: the model outputs NaN or inf for 2 of 2 images")

    monkeypatch.setattr(replica.predictor, "predict", broken)
    assert replica._predict_sync([_png(40), _png(220)]) == [
        (500, "model.onnx: the model outputs NaN or inf for 2 of 2 images")] * 2


def _request(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]] = ()):
    """A starlette Request as Serve hands it to the replica, its body arriving in `chunks` (chunked: no length)."""
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": list(headers)}
    return Request(scope, receive)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_replica_refuses_a_chunked_body_past_the_limit(replica, monkeypatch, path):
    """On a cluster (whose proxy has no clf middleware) the replica's own check: counted as the body streams."""
    import asyncio
    import json

    from clf.serve import http_api

    monkeypatch.setattr(http_api, "MAX_BODY_BYTES", 100)
    response = asyncio.run(replica(_request(path, [b"x" * 60, b"x" * 60, b"x" * 60])))
    assert response.status_code == 413
    assert json.loads(response.body) == {"error": "request body of more than 100 bytes; send smaller images"}
    declared = asyncio.run(replica(_request(path, [b"x" * 10], headers=[(b"content-length", b"101")])))
    assert (declared.status_code, json.loads(declared.body)) == (
        413, {"error": "request body of 101 bytes, more than 100; send smaller images"})


@pytest.mark.parametrize("replicas, threads, cpus, message", [
    (4, 2, 8.0, None),
    (5, 2, 8.0, "--replicas 5 x 2 thread(s) need 10 CPUs, more than the 8 of the Ray cluster at ray://head:10001; "
                "give fewer --replicas or --threads"),
    (1000000, 1, 64.0, "--replicas 1000000 x 1 thread(s) need 1000000 CPUs, more than the 64 of the Ray cluster"),
])
def test_cluster_capacity(replicas, threads, cpus, message):
    cfg = ServeConfig(model="m.onnx", replicas=replicas, address="ray://head:10001")
    if message is None:
        ray_app.check_cluster_capacity(cfg, threads, cpus)
        return
    with pytest.raises(ClfError) as caught:
        ray_app.check_cluster_capacity(cfg, threads, cpus)
    assert str(caught.value).startswith(message)


@pytest.fixture
def interactive_sigint():
    """Python's own Ctrl-C handler, as in a terminal: a background job (CI) inherits SIGINT as ignored, and clf
    rightly keeps an ignored signal ignored (test_a_signal_set_to_be_ignored_stays_ignored)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_stop_signals_wait_for_ray_init_then_act(monkeypatch, interactive_sigint):
    """Inside the deferral a SIGTERM is noted (Ray's own SIGTERM handlers are kept out) and raised as clf's
    Terminated once it ends; handlers are restored."""
    import signal

    pytest.importorskip("ray")
    from ray._private import utils as ray_utils

    from clf.errors import Terminated

    def clf_sigterm(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, clf_sigterm)
    try:
        with pytest.raises(Terminated):
            with ray_local.stop_signals_deferred():
                ray_utils.set_sigterm_handler(lambda signum, frame: None)  # what ray.init does: no effect here
                signal.raise_signal(signal.SIGTERM)
                after_signal = True  # still running: the signal waits
        assert after_signal
        assert signal.getsignal(signal.SIGTERM) is clf_sigterm
        with pytest.raises(KeyboardInterrupt):
            with ray_local.stop_signals_deferred():
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with ray_local.stop_signals_deferred():  # no signal: nothing raised
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_stop_signal_acts_at_once(interactive_sigint):
    import signal

    pytest.importorskip("ray")
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ray_local.stop_signals_deferred():
            signal.raise_signal(signal.SIGINT)
            reached.append("after the first")
            signal.raise_signal(signal.SIGINT)
            reached.append("after the second")
    assert reached == ["after the first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_set_to_be_ignored_stays_ignored():
    import signal

    pytest.importorskip("ray")
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with ray_local.stop_signals_deferred():
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_local_ray_gets_the_proxy_body_limit_and_no_dashboard_server():
    pytest.importorskip("ray")
    from ray._private import node as ray_node

    from clf.serve.body_limit import CALLBACK_IMPORT_PATH

    assert ray_app.LOOPBACK_ENV["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == CALLBACK_IMPORT_PATH
    original = ray_node.Node.start_api_server
    with ray_local.without_dashboard_server():
        assert ray_node.Node.start_api_server(object(), include_dashboard=False, raise_on_failure=False) is None
    assert ray_node.Node.start_api_server is original


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed Terminated
def test_a_sigterm_python_swallowed_during_start_up_still_stops_serve(tmp_path, monkeypatch):
    """A SIGTERM whose exception is raised where Python cannot propagate it (here a finaliser; in the wild an
    extension module's import) is printed as "Exception ignored" and dropped: clf serve must still stop, exit 143,
    before Ray starts, not go on to serve."""
    import gc
    import signal

    from cli_helpers import clf
    from proc_helpers import free_port
    from serve_helpers import brightness_model

    from clf.errors import EXIT_TERMINATED

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here: clf leaves a parent's choice alone")

    class SignalledWhileFinalised:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)

    checked = ray_app.check_model

    def check_model_then_swallowed_sigterm(cfg):
        predictor = checked(cfg)
        SignalledWhileFinalised()  # dropped at once: __del__ runs, its Terminated is "ignored"
        gc.collect()
        return predictor

    def ray_started(*args, **kwargs):
        raise AssertionError("Ray was started after the SIGTERM")

    monkeypatch.setattr(ray_app, "check_model", check_model_then_swallowed_sigterm)
    monkeypatch.setattr(ray_app, "_ray_session", ray_started)
    monkeypatch.setattr(ray_app, "check_serve_extra", lambda: None)
    port = free_port()
    result = clf("serve", brightness_model(tmp_path / "model.onnx"), "--port", port)
    assert result.exit_code == EXIT_TERMINATED, result.output
    assert "terminated (SIGTERM)" in result.output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back


def test_a_swallowed_terminated_prints_no_traceback():
    """Python hands an exception it cannot raise to sys.unraisablehook, whose default prints "Exception ignored ...
    Traceback": clf's hook drops a Terminated (recorded, acted on at the next check) and passes anything else on."""
    import types

    from clf.cli.app import _quiet_swallowed_stop
    from clf.errors import Terminated

    seen = []
    hook = _quiet_swallowed_stop(seen.append)
    stop = types.SimpleNamespace(exc_value=Terminated())
    other = types.SimpleNamespace(exc_value=ValueError("a finaliser's own bug"))
    hook(stop)
    hook(other)
    assert seen == [other]


def test_port_taken_during_start_up_is_clfs_one_line(monkeypatch):
    """Another process takes --port while Ray starts (after clf's check): Serve's own words ("No available ports on
    node ...") become clf's line naming the port, exit 2 like every other port refusal."""
    class Serve:
        def start(self, **kwargs):
            pass

        def run(self, *args, **kwargs):
            raise RuntimeError("Deploying application clf failed: No available ports on node ab12 for HTTP protocol.")

    monkeypatch.setattr(ray_app, "_application", lambda cfg, threads: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = ServeConfig(model="m.onnx", port=port)
        with pytest.raises(ClfError) as caught:
            ray_app._deploy(Serve(), cfg, threads=2, proxy_port=0)
    assert str(caught.value) == (f"--port {port}: 127.0.0.1:{port} is already in use (another server?); stop it or "
                                 "give another --port")
    assert caught.value.exit_code == 2
