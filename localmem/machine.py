"""Readings of this machine and process: usable CPUs, memory, resident and read bytes."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def _proc_field(path: str, key: str) -> int | None:
    """The number after ``key:`` in a /proc file (None where there is no such file)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable, or less when this
    process's memory cgroup leaves less under its limit), or 0 if unknown."""
    kb = _proc_field("/proc/meminfo", "MemAvailable")
    free = 0 if kb is None else kb * 1024
    room = cgroup_room()
    return min(free, room) if free and room is not None else free or (room or 0)


def cgroup_room() -> int | None:
    """Bytes this process's memory cgroup may still take: its limit less what it holds,
    the page cache it could drop first (inactive files) not counted as held; None when it
    has no limit or none is found."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrl, rel = line.split(":", 2)
        if "memory" in ctrl.split(","):  # cgroup v1
            d = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            limit, used = "memory.limit_in_bytes", "memory.usage_in_bytes"
            idle = "total_inactive_file"
            break
        if ctrl == "":  # cgroup v2
            d = Path("/sys/fs/cgroup") / rel.lstrip("/")
            limit, used, idle = "memory.max", "memory.current", "inactive_file"
            break
    else:
        return None
    try:
        lim = (d / limit).read_text().strip()
        if lim == "max" or int(lim) >= 1 << 60:
            return None
        held = int((d / used).read_text())
        for stat in (d / "memory.stat").read_text().splitlines():
            key, _, value = stat.partition(" ")
            if key == idle:
                held -= int(value)
        return max(0, int(lim) - max(0, held))
    except (OSError, ValueError):
        return None


def io_read_bytes() -> int:
    """Bytes this process has had read from storage (page-cache hits do not count)."""
    return _proc_field("/proc/self/io", "read_bytes") or 0


def rss_bytes(part: str = "VmRSS") -> int:
    """Resident bytes: ``VmRSS`` (all), ``RssAnon`` (private: KV cache, buffers) or
    ``RssFile`` (mapped file pages: the mmap'd weights, shared with the page cache)."""
    kb = _proc_field("/proc/self/status", part)
    if kb is not None:
        return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if part == "VmRSS" else 0
