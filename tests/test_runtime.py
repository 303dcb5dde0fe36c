"""clf.train.runtime: device and AMP choice, and the collective helpers outside torchrun (identities)."""

from __future__ import annotations

import pytest
import torch

from clf.errors import DeviceError
from clf.train import runtime as rt


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rt.resolve_device("cpu") == torch.device("cpu")
    assert rt.resolve_device("auto") == torch.device("cpu")


def test_cuda_without_cuda_is_an_error_not_a_silent_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as error:
        rt.resolve_device("cuda")
    assert str(error.value) == ("--device cuda requested but PyTorch sees no CUDA device on this machine; "
                                "use --device cpu")


def test_auto_picks_the_local_rank_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rt.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_amp_dtype(monkeypatch):
    assert rt.resolve_amp_dtype(torch.device("cpu"), amp="on") is None  # the CPU decides with its model
    assert rt.resolve_amp_dtype(torch.device("cuda", 0), amp="off") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert rt.resolve_amp_dtype(torch.device("cuda", 0), amp="auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert rt.resolve_amp_dtype(torch.device("cuda", 0), amp="on") is torch.float16


def test_a_single_process_runtime(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    runtime = rt.setup_runtime("cpu", amp="auto")
    assert runtime == rt.Runtime(torch.device("cpu"), None, 0, 1, 0)
    assert runtime.is_main and not runtime.distributed and not runtime.cuda
    assert rt.all_reduce_sum([1.0, 2.0], runtime) == [1.0, 2.0]
    assert rt.broadcast_flag(True, runtime) is True
    assert rt.broadcast_object(("name", None), runtime) == ("name", None)
    rt.barrier(runtime)
    rt.teardown_runtime(runtime)  # nothing to tear down


def test_rank_and_world_come_from_torchrun_s_environment():
    runtime = rt.Runtime(torch.device("cpu"), None, rank=1, world_size=2, local_rank=1)
    assert runtime.distributed and not runtime.is_main


def test_outside_torchrun_agree_and_on_main_just_run_the_work():
    runtime = rt.Runtime(torch.device("cpu"), None, 0, 1, 0)
    assert rt.agree(lambda: 7, runtime) == 7
    assert rt.on_main(lambda: "run", runtime) == "run"

    def refuse() -> None:
        raise DeviceError("no such device")

    for run in (rt.agree, rt.on_main):
        with pytest.raises(DeviceError) as error:
            run(refuse, runtime)
        assert not error.value.every_rank  # one process: nobody to meet


@pytest.mark.parametrize("cli_meets, kept", [(False, False), (True, True)], ids=["library caller", "the CLI"])
def test_a_shared_error_keeps_the_process_group_only_for_the_cli_s_meeting(cli_meets, kept, monkeypatch):
    destroyed = []
    monkeypatch.setattr(rt.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(rt.dist, "destroy_process_group", lambda: destroyed.append(True))
    monkeypatch.setitem(rt._exit_meeting, "enabled", False)
    if cli_meets:
        rt.meet_at_exit()
    runtime = rt.Runtime(torch.device("cpu"), None, rank=0, world_size=2, local_rank=0)
    shared = DeviceError("the same on every rank")
    with pytest.raises(DeviceError):
        rt.raise_on_every_rank(shared)
    assert shared.every_rank
    rt.teardown_runtime(runtime, shared)
    assert destroyed == ([] if kept else [True])
    rt.teardown_runtime(runtime, DeviceError("this rank's own"))  # not shared: always destroyed
    assert destroyed[-1:] == [True]
