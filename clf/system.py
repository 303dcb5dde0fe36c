"""What this process may use of the machine: CPUs and memory, a container's (cgroup) limits included; how it was
launched (one torchrun worker among several, or alone).

A container on a 64-core, 512 GB host may get 2 CPUs and 4 GB: threads, worker processes, image caches and buffers
are sized from its share, not the host's. Linux reads cgroup v2, then v1; elsewhere the OS's numbers (or None).
Ground floor: the standard library only (train sizes its image cache with it, serve its threads and buffers).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
# (limit, usage) files of the container's memory, cgroup v2 then v1.
CGROUP_LIMITS = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)
# The container's CPU quota: v2 "quota period" (or "max period") in one file, v1 quota and period in two (-1: none).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def torchrun_world_size() -> int:
    """How many processes torchrun launched for this job (WORLD_SIZE), 1 when it was not launched by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """One worker of several, started by torchrun: it ends through clf.train.runtime.end_worker."""
    return torchrun_world_size() > 1


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset), capped by a container's
    CPU quota (docker --cpus) rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota() -> float | None:
    """The container's CPU quota in CPUs (1.5 = one and a half); None without one or off Linux."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = (path.read_text(encoding="ascii").strip() for path in CGROUP_V1_CPU)
        except (OSError, ValueError):
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # v2's "max": no quota
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def total_memory() -> int | None:
    """The memory this process may fill, in bytes: the machine's RAM, or a container's limit when lower; None where
    the OS does not say."""
    known = [value for value in (_physical_memory(), _cgroup_limit()) if value is not None]
    return min(known) if known else None


def available_memory() -> int | None:
    """Memory available to new allocations, in bytes: the machine's MemAvailable, or less when a container's limit
    is nearer; None where neither can be read (not Linux)."""
    free = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    return min(free) if free else None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory() -> tuple[int, int] | None:
    """The container's memory (limit, usage); None without a limit ("max", or v1's near-2**63 value) or off Linux."""
    for limit_file, usage_file in CGROUP_LIMITS:
        try:
            limit_text = limit_file.read_text(encoding="ascii").strip()
            usage = int(usage_file.read_text(encoding="ascii").strip())
            limit = UNLIMITED if limit_text == "max" else int(limit_text)
        except (OSError, ValueError):
            continue
        return (limit, usage) if limit < UNLIMITED else None
    return None


def _cgroup_limit() -> int | None:
    memory = _cgroup_memory()
    return memory[0] if memory else None


def _cgroup_headroom() -> int | None:
    """The container's memory limit less its usage; None without a limit."""
    memory = _cgroup_memory()
    return max(0, memory[0] - memory[1]) if memory else None
