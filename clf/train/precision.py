"""Training precision on the CPU: bf16 autocast and channels_last where this CPU and this model gain from them.

bf16 autocast (fp32 master weights, no loss scaling) was about 1.9x fp32 on an Intel Xeon with AMX, and
channels_last on top about 2.4x (issue 23); on a CPU without AMX or AVX512-BF16, bf16 is emulated and slower. So
`--amp auto` takes bf16 only where the CPU has it AND a short probe of the run's own model, at its batch and
image size, shows it faster; channels_last the same way, for nets with convolutions. The decision is recorded in
the config (`precision`) and a resumed run replays it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

FP32, BF16, CHANNELS_LAST = "fp32", "bf16", "+channels_last"
PROBE_STEPS = 2  # timed fwd+bwd steps per candidate, after one warm-up step
PROBE_BUDGET_S = 20.0  # a big model probes fewer candidates instead of delaying the start
PROBE_BATCH = 16  # at most this many images per probe step: the ratio, not the absolute rate, is what counts
MIN_GAIN = 1.1  # a candidate must beat fp32 by this much: noise on a busy machine must not flip the choice


@dataclass(frozen=True)
class Precision:
    """How the CPU trains: autocast dtype (None = fp32), memory format, and the line that says why."""

    amp_dtype: torch.dtype | None
    channels_last: bool
    reason: str

    @property
    def label(self) -> str:
        """The recorded form: fp32 / bf16, + '+channels_last'."""
        return (BF16 if self.amp_dtype is not None else FP32) + (CHANNELS_LAST if self.channels_last else "")


def from_label(label: str, reason: str = "") -> Precision:
    """The Precision a recorded label names (a resumed run)."""
    return Precision(torch.bfloat16 if label.startswith(BF16) else None, label.endswith(CHANNELS_LAST),
                     reason or f"{label} (recorded by the run)")


def cpu_bf16_support(cpuinfo: str | None = None) -> str | None:
    """'AMX' or 'AVX512-BF16' when the CPU computes bf16 natively, else None (from /proc/cpuinfo's flags, or torch's
    capability where there is no /proc: AMX implies both)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if not cpuinfo and torch.backends.cpu.get_cpu_capability() == "AVX512_BF16":  # pragma: no cover - no /proc
        return "AVX512-BF16"
    return None


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def candidates(model: nn.Module) -> list[Precision]:
    """What the probe compares with fp32 (first): bf16, and bf16 + channels_last for conv nets."""
    found = [Precision(torch.bfloat16, False, "")]
    if has_convolutions(model):
        found.append(Precision(torch.bfloat16, True, ""))
    return found


# step_seconds(precision) -> seconds per fwd+bwd step (the probe; a test fakes it)
StepTimer = Callable[[Precision], float]


def choose_cpu_precision(amp: str, support: str | None, model: nn.Module, step_seconds: StepTimer) -> Precision:
    """The CPU's precision for `--amp` (auto|on|off), the CPU's bf16 `support` and the probe `step_seconds`.

    off -> fp32. on -> bf16 even without native support (a warning: it is emulated and slow), channels_last
    by the probe for conv nets. auto -> bf16 only when the CPU has it and the probe shows it faster by MIN_GAIN.
    """
    fp32 = Precision(None, False, "")
    if amp == "off":
        return Precision(None, False, "fp32 (--amp off)")
    if amp == "cuda":
        return Precision(None, False, "fp32 (--amp cuda: mixed precision on CUDA only; --amp auto tries bf16)")
    if amp == "auto" and support is None:
        return Precision(None, False, "fp32 (no bf16 on this CPU)")
    if amp == "on" and support is None:
        logger.warning("--amp on: this CPU has no AMX or AVX512-BF16; bf16 is emulated and likely slower than "
                       "--amp off")
    start = time.perf_counter()
    base = step_seconds(fp32)
    best, best_s = fp32, base
    for candidate in candidates(model):
        if time.perf_counter() - start > PROBE_BUDGET_S:
            break
        seconds = step_seconds(candidate)
        if seconds * MIN_GAIN < best_s or (amp == "on" and best.amp_dtype is None):
            best, best_s = candidate, seconds
    speedup = base / best_s if best_s > 0 else 1.0
    where = support or "no native bf16"
    if best.amp_dtype is None:
        return Precision(None, False, f"fp32 (bf16 probe on {where}: {speedup:.2f}x, not faster)")
    layout = ", channels_last" if best.channels_last else ""
    return Precision(best.amp_dtype, best.channels_last, f"cpu bf16 autocast{layout} ({where}; probe {speedup:.1f}x)")


def probe_step_timer(model: nn.Module, batch: int, img_size: int, classes: int) -> StepTimer:
    """Seconds per fwd+bwd step of a copy of `model` (the run's own weights and statistics stay untouched)."""
    probe = copy.deepcopy(model).train()
    images = torch.randn(min(batch, PROBE_BATCH), 3, img_size, img_size)
    labels = torch.randint(0, max(classes, 1), (images.shape[0],))

    def step(precision: Precision) -> None:
        memory = torch.channels_last if precision.channels_last else torch.contiguous_format
        probe.to(memory_format=memory)
        x = images.contiguous(memory_format=memory)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.amp_dtype is not None):
            loss = nn.functional.cross_entropy(probe(x).float(), labels)
        loss.backward()
        probe.zero_grad(set_to_none=True)

    def seconds(precision: Precision) -> float:
        step(precision)  # warm-up: oneDNN builds its kernels for this shape and format
        start = time.perf_counter()
        for _ in range(PROBE_STEPS):
            step(precision)
        return (time.perf_counter() - start) / PROBE_STEPS

    return seconds


# The decisions this process made, by (amp, model, batch, image size): a fold group's folds, a refit beside its run
# and a run repeated in one process train alike, instead of each flipping with the probe's noise on a busy machine.
_decided: dict[tuple, Precision] = {}


def resolve_cpu_precision(amp: str, recorded: str, model: nn.Module, batch: int, img_size: int,
                          classes: int) -> Precision:
    """A resumed run's recorded precision, else the choice for `amp` with a probe of `model` (once per process)."""
    if recorded:
        return from_label(recorded)
    key = (amp, type(model).__name__, sum(p.numel() for p in model.parameters()), batch, img_size)
    if key not in _decided:
        support = cpu_bf16_support()
        probing = amp not in ("off", "cuda") and (support or amp == "on")
        timer = probe_step_timer(model, batch, img_size, classes) if probing else None
        _decided[key] = choose_cpu_precision(amp, support, model, timer or (lambda _: 1.0))
    return _decided[key]


def decide_precision(cfg, model: nn.Module, runtime, classes: int):
    """(cfg with `precision` recorded, model in its memory format, runtime with the CPU's autocast) for a run.

    Rank 0 decides and every rank follows (a probe per rank could disagree under load). The probe runs on a copy
    of the model with its own random numbers: the run's random stream is the same whatever was decided.
    """
    from dataclasses import replace

    from clf.train import runtime as rt

    if runtime.cuda:
        return cfg, model, runtime

    def decide() -> str:
        with torch.random.fork_rng(devices=[]):
            precision = resolve_cpu_precision(cfg.amp, cfg.precision, model, cfg.batch_size, cfg.img_size, classes)
        logger.info("%s", precision.reason)
        return precision.label

    precision = from_label(rt.on_main(decide, runtime))
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runtime = rt.with_cpu_precision(runtime, precision.amp_dtype, precision.channels_last)
    return replace(cfg, precision=precision.label), model, runtime
