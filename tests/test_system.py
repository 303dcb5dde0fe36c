"""clf.system: CPUs and memory this process may use, a container's cgroup limits included (files faked)."""

from __future__ import annotations

import os

import pytest

from clf import system


def write(path, text: str):
    path.write_text(text)
    return path


@pytest.fixture
def no_cgroup(tmp_path, monkeypatch):
    """No cgroup file is readable: the machine's own numbers."""
    monkeypatch.setattr(system, "CGROUP_CPU_MAX", tmp_path / "no-cpu.max")
    monkeypatch.setattr(system, "CGROUP_V1_CPU", (tmp_path / "no-quota", tmp_path / "no-period"))
    monkeypatch.setattr(system, "CGROUP_LIMITS", ((tmp_path / "no-max", tmp_path / "no-current"),))


@pytest.mark.parametrize("cpu_max, quota", [("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("max 100000\n", None)])
def test_cgroup_v2_cpu_quota(tmp_path, monkeypatch, no_cgroup, cpu_max, quota):
    monkeypatch.setattr(system, "CGROUP_CPU_MAX", write(tmp_path / "cpu.max", cpu_max))
    assert system.cgroup_cpu_quota() == quota


@pytest.mark.parametrize("quota_us, quota", [("-1", None), ("50000", 0.5), ("400000", 4.0)])
def test_cgroup_v1_cpu_quota(tmp_path, monkeypatch, no_cgroup, quota_us, quota):
    files = (write(tmp_path / "cfs_quota_us", quota_us + "\n"), write(tmp_path / "cfs_period_us", "100000\n"))
    monkeypatch.setattr(system, "CGROUP_V1_CPU", files)
    assert system.cgroup_cpu_quota() == quota


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path, monkeypatch, no_cgroup):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert system.usable_cpus() == 8  # no quota
    cpu_max = write(tmp_path / "cpu.max", "150000 100000\n")
    monkeypatch.setattr(system, "CGROUP_CPU_MAX", cpu_max)
    assert system.usable_cpus() == 2  # --cpus 1.5: two threads keep 1.5 CPUs busy
    write(cpu_max, "10000 100000\n")
    assert system.usable_cpus() == 1  # never 0
    write(cpu_max, "6400000 100000\n")
    assert system.usable_cpus() == 8  # a quota above the cpuset adds no CPU


def test_this_machine_answers():
    assert 1 <= system.usable_cpus() <= (os.cpu_count() or 1)
    assert 0 < (system.total_memory() or 1) < 2**50 and 0 < (system.available_memory() or 1) < 2**50


def test_total_memory_is_the_container_limit_when_lower(tmp_path, monkeypatch, no_cgroup):
    physical = system._physical_memory()
    assert system.total_memory() == physical
    limits = ((write(tmp_path / "max", "3000000\n"), write(tmp_path / "current", "1000000\n")),)
    monkeypatch.setattr(system, "CGROUP_LIMITS", limits)
    assert system.total_memory() == min(physical, 3_000_000)
    write(tmp_path / "max", "max\n")
    assert system.total_memory() == physical


def test_available_memory_is_unknown_where_nothing_says(tmp_path, monkeypatch, no_cgroup):
    monkeypatch.setattr(system, "MEMINFO", tmp_path / "absent")
    assert system.available_memory() is None
    write(tmp_path / "max", "garbage\n")  # an unreadable limit is skipped like a missing file, not a crash
    monkeypatch.setattr(system, "CGROUP_LIMITS", ((tmp_path / "max", write(tmp_path / "current", "5\n")),))
    assert system.available_memory() is None
