"""An onnxruntime session on the provider the user asked for, and proof that it is really running there.

onnxruntime-gpu lists CUDA/TensorRT in ``get_available_providers()`` even when their libraries cannot
load, then quietly runs on CPU. We always read back ``session.get_providers()`` and refuse an explicit
GPU request that ended up on CPU. onnxruntime is imported inside functions: importing clf.serve stays
cheap and never needs onnxruntime (or torch) until a session is made.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from clf.choices import DEVICES
from clf.errors import DataError, DeviceError, one_line

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# The providers of each of DEVICES (clf/choices.py), in order of preference. auto does not try TensorRT: its first
# run builds engines for minutes and it needs its own libraries.
_PREFERENCE = {
    "auto": (CUDA, CPU),
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}
_REQUESTED = {"cuda": CUDA, "tensorrt": TENSORRT}
_INSTALL_HINT = {"cuda": "install CUDA/cuDNN", "tensorrt": "install TensorRT and CUDA/cuDNN"}
_NO_DRIVER_HINT = "use --device cpu, or run on a machine with an NVIDIA GPU and driver"
_VERBOSE_HINT = "--verbose shows onnxruntime's reason"

# onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_VERBOSE_SEVERITY = 2
# Without --verbose onnxruntime's C++ lines ("Failed to load library libonnxruntime_providers_cuda.so ...")
# stay off the screen, even for an explicit GPU request: our DeviceError says what went wrong in one line.
_QUIET_SEVERITY = 4

_preload_lock = threading.Lock()
_preloaded = False


def preload_cuda_libraries() -> bool:
    """Load CUDA/cuDNN libraries installed by pip ``nvidia-*`` packages, once per process.

    Without this the CUDA provider cannot find them unless torch was imported first. Failures are
    logged at DEBUG and swallowed: the provider check after session creation reports what matters.

    Returns:
        True when ``onnxruntime.preload_dlls`` ran without raising (now or earlier).
    """
    global _preloaded
    with _preload_lock:
        if _preloaded:
            return True
        import onnxruntime as ort

        preload = getattr(ort, "preload_dlls", None)
        if preload is None:
            logger.debug("onnxruntime %s has no preload_dlls; relying on the system library path", ort.__version__)
            return False
        printed = io.StringIO()  # preload_dlls reports problems with print(); keep them off stdout
        try:
            with contextlib.redirect_stdout(printed):
                preload()
        except Exception as exc:  # noqa: BLE001 - a failed preload must never stop a CPU fallback
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)
            return False
        finally:
            if printed.getvalue().strip():
                logger.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())
        _preloaded = True
        return True


def provider_candidates(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers to try, best first, for a device choice.

    Args:
        device: "auto" (CUDA if present, else CPU), "cpu", "cuda" or "tensorrt".
        available: ``onnxruntime.get_available_providers()`` (what the build has, not what can load).

    Returns:
        The preferred providers that the build has, always ending with CPUExecutionProvider.

    Raises:
        DeviceError: an unknown device name.
    """
    if device not in _PREFERENCE:
        raise DeviceError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}")
    return [p for p in _PREFERENCE[device] if p in available or p == CPU]


def create_session(
    model_path: str | os.PathLike,
    device: str = "auto",
    verbose: bool = False,
    threads: int | None = None,
    spinning: bool = True,
) -> tuple[Any, str]:
    """Open an ONNX model with onnxruntime on the requested device.

    Args:
        model_path: the .onnx file.
        device: "auto", "cpu", "cuda" or "tensorrt" (see ``provider_candidates``).
        verbose: let onnxruntime's own warnings through.
        threads: onnxruntime intra-op threads (None: onnxruntime's default, one per core).
        spinning: let idle intra-op threads busy-wait for the next job (onnxruntime's default). Turn it off
            when other threads of the process need the cores between runs, as the Predictor's decoders do.

    Returns:
        (onnxruntime.InferenceSession, the provider actually running the model).

    Raises:
        DataError: the file is missing, empty, a folder, or not a model onnxruntime can load.
        DeviceError: cuda/tensorrt was requested but onnxruntime cannot use it here.
    """
    path = _check_model_file(model_path)
    import onnxruntime as ort

    candidates = provider_candidates(device, ort.get_available_providers())
    requested = _REQUESTED.get(device)
    if requested and requested not in candidates:
        raise DeviceError(
            f"{device} requested but onnxruntime could not load it on this machine "
            f"(this onnxruntime build has only {', '.join(ort.get_available_providers())}); "
            "use --device cpu or install onnxruntime-gpu"
        )
    if candidates != [CPU]:
        problem = nvidia_driver_problem()
        if problem and requested:
            raise DeviceError(f"{device} requested but this machine cannot run it ({problem}); {_NO_DRIVER_HINT}")
        if problem:  # auto on a CPU-only host: do not even try to load the CUDA libraries
            logger.debug("%s: %s; running on %s", path, problem, CPU)
            candidates = [CPU]
    severity = _VERBOSE_SEVERITY if verbose else _QUIET_SEVERITY
    ort.set_default_logger_severity(severity)  # covers provider-library loading, which precedes the session
    options = ort.SessionOptions()
    options.log_severity_level = severity
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if candidates != [CPU]:
        preload_cuda_libraries()

    session = _open(ort, path, options, candidates, device)
    provider = session.get_providers()[0]
    if requested and provider != requested:
        raise DeviceError(
            f"{device} requested but onnxruntime could not load it on this machine "
            f"(running on {provider}; {_VERBOSE_HINT}); use --device cpu or {_INSTALL_HINT[device]}"
        )
    if provider != candidates[0]:
        logger.info("%s: %s is not usable on this machine; running on %s", path, candidates[0], provider)
    logger.debug("%s: onnxruntime %s session on %s", path, ort.__version__, session.get_providers())
    return session, provider


@functools.cache
def nvidia_driver_problem() -> str | None:
    """Why this machine cannot run CUDA at all (no NVIDIA driver library), or None when the driver loads.

    onnxruntime-gpu lists CUDA on every host; without the driver its provider can only fail, after
    loading hundreds of MB of CUDA libraries. Checked once per process.
    """
    if sys.platform == "darwin":
        return "macOS has no CUDA"
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError:
        return f"no NVIDIA driver: {name} not found"
    return None


def _check_model_file(model_path: str | os.PathLike) -> Path:
    """One-line DataErrors for the common file problems, before onnxruntime's longer messages."""
    path = Path(model_path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an ONNX model")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():  # a FIFO would block onnxruntime forever
        raise DataError(f"{path}: not a regular file (a FIFO, device or socket); give an .onnx file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, not an ONNX model")
    return path


def _open(ort: Any, path: Path, options: Any, candidates: list[str], device: str) -> Any:
    """Create the session; when a GPU provider fails outright, tell a bad model from a bad device."""
    try:
        return _new_session(ort, path, options, candidates)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        if candidates == [CPU]:
            raise _model_error(path, exc) from None
        gpu_error = exc
    try:  # the model loads on CPU -> the provider was the problem
        session = _new_session(ort, path, options, [CPU])
    except Exception as exc:  # noqa: BLE001
        raise _model_error(path, exc) from None
    logger.debug("%s: session on %s failed: %s", path, candidates, gpu_error)
    if device in _REQUESTED:
        raise DeviceError(
            f"{device} requested but onnxruntime could not load it on this machine "
            f"({_short_reason(gpu_error)}); use --device cpu or {_INSTALL_HINT[device]}"
        )
    return session


def _new_session(ort: Any, path: Path, options: Any, providers: list[str]) -> Any:
    # enable_fallback=0: onnxruntime would otherwise print a banner and silently retry on other providers.
    return ort.InferenceSession(
        str(path), sess_options=options, providers=[_with_options(p) for p in providers], enable_fallback=0
    )


def _with_options(provider: str) -> str | tuple[str, dict[str, str]]:
    """TensorRT builds engines for minutes: cache them across runs."""
    if provider != TENSORRT:
        return provider
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clf" / "tensorrt"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return provider
    return provider, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}


def _model_error(path: Path, exc: Exception) -> DataError:
    text = str(exc)
    if "INVALID_PROTOBUF" in text or "No graph was found" in text:
        return DataError(f"{path}: not a valid ONNX model ({_short_reason(exc)})")
    return DataError(f"{path}: onnxruntime cannot load this model ({_short_reason(exc)})")


def _short_reason(exc: Exception, limit: int = 200) -> str:
    """onnxruntime's message without its status prefix or C++ source location, on one line."""
    text = one_line(exc, limit=10_000)
    if "failed:" in text:
        text = text.split("failed:", 1)[1]
    elif text.startswith("[ONNXRuntimeError]"):
        text = text.rsplit(" : ", 1)[-1]
    text = re.sub(r"^\S+\.(?:cc|cpp|h):\d+ .*?\) ", "", text)  # "/src/x.cc:729 void f(...) message"
    text = text.strip().rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."
