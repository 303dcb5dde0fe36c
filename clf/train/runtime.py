"""Where training runs: device choice, AMP, and torch.distributed (torchrun) set-up."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist

from clf.errors import ClfError, DeviceError
from clf.system import torchrun_world_size

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """The resolved execution context of one training process."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None = full fp32
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    cpu_channels_last: bool = False  # decided per model on the CPU (clf/train/precision.py); CUDA always is

    @property
    def channels_last(self) -> bool:
        return self.cuda or self.cpu_channels_last

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes the run folder and reports."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda when available else cpu; cuda on a machine without CUDA is an error, not a silent CPU run.

    `requested` is one of TRAIN_DEVICES (TrainConfig checked it).
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("--device cuda requested but PyTorch sees no CUDA device on this machine; use --device cpu")
    return torch.device("cuda", local_rank)


def resolve_amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16, unless --amp off. CPU: None here;
    the run decides with its model (clf/train/precision.py, `with_cpu_precision`)."""
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def setup_runtime(requested_device: str, amp: str) -> Runtime:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1), then pick the device."""
    world_size = torchrun_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        logger.info("distributed: rank %d of %d on %s (%s)", rank, world_size, device, backend)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    return Runtime(device, resolve_amp_dtype(device, amp), rank, world_size, local_rank)


def with_cpu_precision(runtime: Runtime, amp_dtype: torch.dtype | None, channels_last: bool) -> Runtime:
    """The CPU runtime with the precision its run decided (a CUDA runtime is unchanged)."""
    if runtime.cuda:
        return runtime
    return replace(runtime, amp_dtype=amp_dtype, cpu_channels_last=channels_last)


# Set by the CLI (`meet_at_exit`), whose ranks exit through os._exit right after meeting; a library caller that
# catches the error and goes on gets its process group destroyed as usual.
_exit_meeting = {"enabled": False}


def meet_at_exit() -> None:
    """Keep the process group after an error every rank shares, for `meet_other_ranks` before the process exits."""
    _exit_meeting["enabled"] = True


def teardown_runtime(runtime: Runtime, error: BaseException | None = None) -> None:
    """Destroy the process group, unless every rank is ending with the same error and the ranks meet at exit."""
    if _exit_meeting["enabled"] and getattr(error, "every_rank", False):
        return
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(requested_device: str, amp: str) -> Iterator[Runtime]:
    """`setup_runtime`, then `teardown_runtime` on the way out, told of the error that ends the block if one does."""
    runtime = setup_runtime(requested_device, amp)
    try:
        yield runtime
    except BaseException as exc:
        teardown_runtime(runtime, exc)
        raise
    teardown_runtime(runtime)


def raise_on_every_rank(error: ClfError) -> NoReturn:
    """Raise an error that every rank raises together, marked so that the ranks meet before they exit."""
    error.every_rank = True
    raise error


def agree(work: Callable[[], T], runtime: Runtime) -> T:
    """`work()` on every rank; when it raises a ClfError on any rank, every rank raises the lowest such rank's error.

    For the set-up before training (checking the data, building the model): a rank that failed alone used to exit
    while the others went on into DDP's first collective, to be stopped by torchrun with SIGTERM and no line.
    """
    if not runtime.distributed:
        return work()
    result, error = None, None
    try:
        result = work()
    except ClfError as exc:
        error = exc
    errors: list[ClfError | None] = [None] * runtime.world_size
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise_on_every_rank(first)
    return result  # type: ignore[return-value]


def on_main(work: Callable[[], T], runtime: Runtime) -> T:
    """Rank 0 does `work` (it alone writes); every rank gets its result, or raises its ClfError."""
    if not runtime.distributed:
        return work()
    result, error = None, None
    if runtime.is_main:
        try:
            result = work()
        except ClfError as exc:
            error = exc
    result, error = broadcast_object((result, error), runtime)  # type: ignore[misc]
    if error is not None:
        raise_on_every_rank(error)
    return result  # type: ignore[return-value]


def end_worker(code: int = 0, meet_others: bool = False) -> NoReturn:
    """Exit a torchrun worker now with `code`, output flushed, without the interpreter's teardown.

    DistributedDataParallel keeps the gloo process group alive after destroy_process_group (torch 2.x: its
    threads `gloo_tcp_loop` and `pt_gloo_runloop` are still running at exit, however the wrapper is released).
    Tearing them down with the interpreter aborted about 1 run in 9 under load: "terminate called without an
    active exception", SIGABRT, and torchrun reported a failure for a finished run. On a failure, every rank
    reports the same error; torchrun sends SIGTERM to the others as soon as one exits, so a rank still in the
    (slow) teardown was reported as killed (-15) instead of its own exit code.

    An error every rank raised together (`meet_others`) waits until each rank has printed it: otherwise the first
    rank to exit had torchrun stop a slower sibling before its line (seen under load).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if meet_others:
        meet_other_ranks()
    logging.shutdown()
    os._exit(code)


def meet_other_ranks(timeout_s: float = 30.0) -> None:
    """Wait until every rank got here (each printed its error line), or `timeout_s`, whichever comes first.

    A sibling that died instead makes the barrier fail at once or time out: either way this rank goes on exiting.
    """
    if not dist.is_initialized():
        return
    try:
        dist.barrier(async_op=True).wait(timeout=timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - the rank is exiting with its own error in any case
        logger.debug("ranks did not meet before exiting: %s", exc)


def all_reduce_sum(values: list[float], runtime: Runtime) -> list[float]:
    """Sum plain numbers over all ranks (train loss/correct/count); identity when not distributed."""
    if not runtime.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's decision (e.g. early stop) for everyone."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=runtime.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_object(obj: object, runtime: Runtime) -> object:
    """Rank 0's value of a small picklable object (a run name, an error message) for every rank."""
    if not runtime.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
