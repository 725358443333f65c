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
    """Bytes of memory available to new allocations (MemAvailable), or 0 if unknown."""
    kb = _proc_field("/proc/meminfo", "MemAvailable")
    return 0 if kb is None else kb * 1024


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
