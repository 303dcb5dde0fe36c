"""clf.serve.session: provider choice, the silent-CPU-fallback guard, file errors, quiet logs."""

from __future__ import annotations

import logging
import os
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clf.errors import DataError, DeviceError
from clf.serve import session as serve_session
from clf.serve.session import create_session, preload_cuda_libraries, provider_candidates

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ORT_GPU_BUILD = [TRT, CUDA, CPU]
# A machine where CUDA really works would turn the real-device tests below into something else.
HAS_GPU = os.path.exists("/dev/nvidiactl")
no_gpu_here = pytest.mark.skipif(HAS_GPU, reason="checks behaviour on a machine without a GPU")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """[N,3,4,4] -> GlobalAveragePool -> [N,3]: per-channel means as logits."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("session") / "mean.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "device, available, expected",
    [
        ("auto", ORT_GPU_BUILD, [CUDA, CPU]),  # never TensorRT unless asked
        ("auto", [CPU], [CPU]),
        ("auto", [], [CPU]),
        ("cpu", ORT_GPU_BUILD, [CPU]),
        ("cuda", ORT_GPU_BUILD, [CUDA, CPU]),
        ("cuda", [CPU], [CPU]),
        ("tensorrt", ORT_GPU_BUILD, [TRT, CUDA, CPU]),
        ("tensorrt", [CUDA, CPU], [CUDA, CPU]),
        ("auto", ["CoreMLExecutionProvider", CPU], [CPU]),
    ],
)
def test_provider_candidates(device, available, expected):
    assert provider_candidates(device, available) == expected


def test_unknown_device():
    with pytest.raises(DeviceError) as err:
        provider_candidates("gpu", ORT_GPU_BUILD)
    assert str(err.value) == "unknown device 'gpu'; use one of auto, cpu, cuda, tensorrt"


def test_real_cpu_session(model_path):
    session, provider = create_session(model_path, device="cpu", threads=1)
    assert provider == CPU
    assert session.get_providers() == [CPU]
    assert session.get_session_options().intra_op_num_threads == 1
    x = np.arange(2 * 3 * 16, dtype=np.float32).reshape(2, 3, 4, 4)
    (logits,) = session.run(["logits"], {"input": x})
    np.testing.assert_allclose(logits, x.mean(axis=(2, 3)), rtol=1e-6)


NO_DRIVER = "no NVIDIA driver: libcuda.so.1 not found"


def native_log(text: str) -> list[str]:
    """onnxruntime's own C++ log lines ("2026-... [E:onnxruntime:Default, provider_bridge_ort.cc:2458 ...] ...").
    Only these are checked: other tests of the same worker may leave processes that write to fd 2."""
    return [line for line in text.splitlines() if "onnxruntime" in line or ".cc:" in line]
no_driver_here = pytest.mark.skipif(
    serve_session.nvidia_driver_problem() is None, reason="checks behaviour on a machine without an NVIDIA driver"
)


@pytest.fixture
def pretend_driver(monkeypatch):
    """As on a host whose NVIDIA driver loads but whose CUDA provider does not (here: no GPU at all)."""
    monkeypatch.setattr(serve_session, "nvidia_driver_problem", lambda: None)


@no_driver_here
def test_auto_without_driver_does_not_try_cuda(model_path, capfd, caplog, monkeypatch):
    monkeypatch.setattr(serve_session, "_preloaded", False)
    with caplog.at_level(logging.DEBUG, logger="clf.serve.session"):
        session, provider = create_session(model_path, device="auto")
    assert provider == CPU and session.get_providers() == [CPU]
    assert f"{model_path}: {NO_DRIVER}; running on CPUExecutionProvider" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]  # expected on a CPU host: no noise
    assert serve_session._preloaded is False  # the CUDA libraries were not even loaded
    captured = capfd.readouterr()
    assert native_log(captured.out + captured.err) == []


@no_gpu_here
def test_auto_falls_back_to_cpu_quietly(model_path, capfd, caplog, pretend_driver):
    with caplog.at_level(logging.INFO, logger="clf.serve.session"):
        session, provider = create_session(model_path, device="auto")
    assert provider == CPU == session.get_providers()[0]
    assert caplog.messages == [
        f"{model_path}: CUDAExecutionProvider is not usable on this machine; running on CPUExecutionProvider"
    ]
    captured = capfd.readouterr()  # onnxruntime's C++ "failed to load libcublas..." lines stay hidden
    assert native_log(captured.out + captured.err) == []


@no_gpu_here
def test_verbose_lets_onnxruntime_log_through(model_path, capfd, pretend_driver):
    create_session(model_path, device="auto", verbose=True)
    assert native_log(capfd.readouterr().err) != []
    create_session(model_path, device="auto")  # and quiet again afterwards
    assert native_log(capfd.readouterr().err) == []


@no_driver_here
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_requested_without_driver(model_path, capfd, device):
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device=device)
    assert str(err.value) == (
        f"{device} requested but this machine cannot run it ({NO_DRIVER}); "
        "use --device cpu, or run on a machine with an NVIDIA GPU and driver"
    )
    assert native_log(capfd.readouterr().err) == []


@no_gpu_here
def test_cuda_requested_where_the_provider_does_not_load(model_path, capfd, pretend_driver):
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device="cuda")
    assert str(err.value) == (
        "cuda requested but onnxruntime could not load it on this machine (running on CPUExecutionProvider; "
        "--verbose shows onnxruntime's reason); use --device cpu or install CUDA/cuDNN"
    )
    assert native_log(capfd.readouterr().err) == []  # onnxruntime's C++ error lines only with --verbose


@no_gpu_here
def test_tensorrt_requested_where_the_provider_does_not_load(model_path, monkeypatch, tmp_path, pretend_driver):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device="tensorrt")
    message = str(err.value)
    assert message.startswith("tensorrt requested but onnxruntime could not load it on this machine (")
    assert message.endswith("); use --device cpu or install TensorRT and CUDA/cuDNN")
    assert "\n" not in message and ".cc:" not in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        create_session(tmp_path / "nope.onnx")
    assert str(err.value) == f"{tmp_path / 'nope.onnx'}: file not found"


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError) as err:
        create_session(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, not an ONNX model"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        create_session(path)
    assert str(err.value) == f"{path}: empty file, not an ONNX model"


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_corrupt_file(tmp_path, device):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(DataError) as err:
        create_session(path, device=device)
    assert str(err.value) == f"{path}: not a valid ONNX model (Protobuf parsing failed)"


def test_truncated_file(tmp_path, model_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(model_path.read_bytes()[:-20])
    with pytest.raises(DataError) as err:
        create_session(path, device="cpu")
    assert str(err.value) == f"{path}: not a valid ONNX model (Protobuf parsing failed)"


# ---- a fake onnxruntime: the GPU-host situations this CPU machine cannot produce ----


class FakeSession:
    def __init__(self, path, sess_options=None, providers=None, enable_fallback=1):
        FakeOrt.created.append((providers, enable_fallback))
        names = [p[0] if isinstance(p, tuple) else p for p in providers]  # (name, options) entries
        error = FakeOrt.errors.get(names[0])
        if error is not None:
            raise error
        self._providers = [p for p in FakeOrt.active if p in names]

    def get_providers(self):
        return self._providers


class FakeOrt(types.ModuleType):
    created: list = []
    errors: dict = {}
    active: list = []

    def __init__(self, available, active, errors=None):
        super().__init__("onnxruntime")
        self.__version__ = "9.9.9"
        self.available, self.preloads, self.severity = available, 0, None
        FakeOrt.created, FakeOrt.errors, FakeOrt.active = [], errors or {}, active
        self.InferenceSession = FakeSession
        self.SessionOptions = lambda: types.SimpleNamespace()

    def get_available_providers(self):
        return list(self.available)

    def set_default_logger_severity(self, level):
        self.severity = level

    def preload_dlls(self):
        self.preloads += 1
        print("preload chatter")


@pytest.fixture
def fake_ort(monkeypatch):
    def install(available, active, errors=None):
        fake = FakeOrt(available, active, errors)
        monkeypatch.setitem(sys.modules, "onnxruntime", fake)
        monkeypatch.setattr(serve_session, "_preloaded", False)
        monkeypatch.setattr(serve_session, "nvidia_driver_problem", lambda: None)  # as on a GPU host
        return fake

    return install


def test_build_without_cuda(fake_ort, model_path):
    fake_ort([CPU], [CPU])
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device="cuda")
    assert str(err.value) == (
        "cuda requested but onnxruntime could not load it on this machine (this onnxruntime build has only "
        "CPUExecutionProvider); use --device cpu or install onnxruntime-gpu"
    )


def test_cuda_really_active(fake_ort, model_path, capsys):
    fake = fake_ort(ORT_GPU_BUILD, [CUDA, CPU])
    session, provider = create_session(model_path, device="cuda")
    assert provider == CUDA
    assert FakeOrt.created == [([CUDA, CPU], 0)]  # onnxruntime's own fallback is off
    assert fake.preloads == 1 and fake.severity == 4  # onnxruntime's C++ log only with verbose
    assert capsys.readouterr().out == ""  # preload_dlls' print() is kept off stdout
    create_session(model_path, device="auto")
    assert fake.preloads == 1 and fake.severity == 4  # preloaded once per process


def test_silent_fallback_is_refused_for_cuda_and_accepted_for_auto(fake_ort, model_path, caplog):
    fake = fake_ort(ORT_GPU_BUILD, [CPU])
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device="cuda")
    assert str(err.value) == (
        "cuda requested but onnxruntime could not load it on this machine (running on CPUExecutionProvider; "
        "--verbose shows onnxruntime's reason); use --device cpu or install CUDA/cuDNN"
    )
    with caplog.at_level(logging.INFO, logger="clf.serve.session"):
        _, provider = create_session(model_path, device="auto")
    assert provider == CPU
    assert f"{model_path}: CUDAExecutionProvider is not usable on this machine; running on CPUExecutionProvider" in (
        caplog.messages
    )
    _, provider = create_session(model_path, device="cpu")
    assert provider == CPU and FakeOrt.created[-1] == ([CPU], 0)
    assert fake.preloads == 1


def test_provider_that_raises(fake_ort, model_path, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    error = RuntimeError("/onnxruntime_src/x/state.cc:729 void f(Options&, const P&) Please install TensorRT.\n")
    fake_ort(ORT_GPU_BUILD, [TRT, CUDA, CPU], errors={TRT: error})
    with pytest.raises(DeviceError) as err:
        create_session(model_path, device="tensorrt")
    assert str(err.value) == (
        "tensorrt requested but onnxruntime could not load it on this machine (Please install TensorRT); "
        "use --device cpu or install TensorRT and CUDA/cuDNN"
    )
    trt_entry = FakeOrt.created[0][0][0]
    cache = str(tmp_path / "clf" / "tensorrt")
    assert trt_entry == (TRT, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache})
    assert FakeOrt.created[1] == ([CPU], 0)  # the model itself was checked on CPU


def test_model_that_fails_everywhere_is_a_data_error(fake_ort, model_path):
    error = Exception("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. Bad node")
    fake_ort(ORT_GPU_BUILD, [CUDA, CPU], errors={CUDA: error, CPU: error})
    with pytest.raises(DataError) as err:
        create_session(model_path, device="cuda")
    assert str(err.value) == f"{model_path}: onnxruntime cannot load this model (This is an invalid model. Bad node)"


def test_preload_failure_is_swallowed(fake_ort, caplog):
    fake = fake_ort(ORT_GPU_BUILD, [CPU])

    def broken():
        raise OSError("libcudart.so.13: cannot open shared object file")

    fake.preload_dlls = broken
    with caplog.at_level(logging.DEBUG, logger="clf.serve.session"):
        assert preload_cuda_libraries() is False
    assert caplog.messages == ["onnxruntime.preload_dlls failed: libcudart.so.13: cannot open shared object file"]
    fake.preload_dlls = None  # an onnxruntime without preload_dlls
    assert preload_cuda_libraries() is False


def test_auto_skips_cuda_where_the_driver_is_missing(fake_ort, model_path, monkeypatch):
    fake = fake_ort(ORT_GPU_BUILD, [CUDA, CPU])
    monkeypatch.setattr(serve_session, "nvidia_driver_problem", lambda: "no NVIDIA driver: libcuda.so.1 not found")
    _, provider = create_session(model_path, device="auto")
    assert provider == CPU
    assert FakeOrt.created == [([CPU], 0)] and fake.preloads == 0
    with pytest.raises(DeviceError, match=r"^cuda requested but this machine cannot run it \(no NVIDIA driver"):
        create_session(model_path, device="cuda")
