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


def test_missing_extra_is_one_line(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else find_spec(name, *a))
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
