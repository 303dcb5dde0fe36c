"""Suite-wide settings: one torch thread per test process (2 shared cores; torch's pool stalls when oversubscribed)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    try:
        import torch
    except ImportError:  # the torch-free serve tests run without it too
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
