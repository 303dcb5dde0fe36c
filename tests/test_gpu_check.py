"""benchmarks/gpu_check.sh on a machine without a CUDA device: one line and a non-zero exit at once, nothing run."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
NO_DEVICE = "gpu_check: no CUDA device (nvidia-smi finds no NVIDIA GPU); run this on a machine with an NVIDIA GPU\n"


def run_script(tmp_path: Path, nvidia_smi: str | None) -> tuple[subprocess.CompletedProcess, float]:
    """The script with `nvidia-smi` replaced by a stub (None: absent from PATH), from an unrelated working folder."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    if nvidia_smi is not None:
        (stubs / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        (stubs / "nvidia-smi").chmod(0o755)
    path = [str(stubs)] + [p for p in os.environ["PATH"].split(os.pathsep)
                           if p and not (Path(p) / "nvidia-smi").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path), "GPU_CHECK_DIR": str(tmp_path / "work")}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, timeout=60)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("nvidia_smi", [None, "echo 'No devices found.'; exit 6", "exit 0"],
                         ids=["no nvidia-smi", "driver finds no GPU", "empty list"])
def test_without_a_cuda_device_it_stops_at_once_with_one_line(tmp_path, nvidia_smi):
    proc, seconds = run_script(tmp_path, nvidia_smi)
    assert proc.returncode == 2, proc
    assert proc.stderr == NO_DEVICE and proc.stdout == ""
    assert seconds < 10 and not (tmp_path / "work").exists()  # nothing was started or written


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
