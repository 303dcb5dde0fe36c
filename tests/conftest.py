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


@pytest.fixture(autouse=True, scope="session")
def _cpu_precision_independent_of_load():
    """`--amp auto` (the default) trains in bf16 where the CPU has it and a timing probe says so; under a loaded test
    run that probe could flip between runs and with it every number a test compares. In-process runs here see this
    CPU as one without native bf16, so auto means fp32 with no probe (as on AMD); bf16 itself is tested with
    `--amp on` (tests/test_precision.py), and the probe's choice with fake timings."""
    try:
        from clf.train import precision
    except ImportError:  # the torch-free serve tests
        yield
        return
    real = precision.cpu_bf16_support
    precision.cpu_bf16_support = lambda cpuinfo=None: real(cpuinfo) if cpuinfo is not None else None
    yield
    precision.cpu_bf16_support = real


# ---- export fixtures, shared by test_export.py and test_export_cli.py ----


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    """A tiny sample competition's train/ folder: a run's data, so parity uses real validation images."""
    from export_helpers import make_data

    return make_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def run(tmp_path, train_dir):
    """A cnn run folder whose config points at the sample data: 4 validation images, one per class."""
    from export_helpers import make_checkpoint

    make_checkpoint(tmp_path / "run" / "best.pt", data=train_dir)
    return tmp_path / "run"
