"""A child memory cgroup for one benchmark process: a hard cap on what it may keep in memory
(anonymous pages and the page cache it reads into), as a user's small machine would impose.

cgroup v1 (``memory.limit_in_bytes``) or v2 (``memory.max``), created under this process's
own cgroup; needs root (or a delegated cgroup). ``MemoryCgroup.unavailable()`` says why not
when it cannot be done, so a bench can skip instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_memory_cgroup() -> tuple[Path, int] | None:
    """(directory of this process's memory cgroup, version) or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # v1: "4:memory:/path"
        _, ctrl, rel = line.split(":", 2)
        if "memory" in ctrl.split(","):
            d = ROOT / "memory" / rel.lstrip("/")
            return (d, 1) if (d / "memory.limit_in_bytes").exists() else None
    for line in lines:  # v2: "0::/path", the memory controller enabled there
        _, ctrl, rel = line.split(":", 2)
        if ctrl == "":
            d = ROOT / rel.lstrip("/")
            ctl = d / "cgroup.subtree_control"
            if ctl.exists() and "memory" in ctl.read_text().split():
                return d, 2
    return None


class MemoryCgroup:
    """A fresh child cgroup (removed by ``close``); ``limit`` bytes, or no limit when None."""

    def __init__(self, limit: int | None = None) -> None:
        own = _own_memory_cgroup()
        if own is None:
            raise OSError("no writable memory cgroup: " + (MemoryCgroup.unavailable() or "?"))
        parent, self.version = own
        self.path = parent / f"localmem-bench-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        if limit is not None:
            name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (self.path / name).write_text(str(int(limit)))

    @staticmethod
    def unavailable() -> str | None:
        """Why a child memory cgroup cannot be made here, or None if it can."""
        own = _own_memory_cgroup()
        if own is None:
            return "this process's memory cgroup is not found (no cgroup v1 memory controller "
            "and no cgroup v2 with memory enabled)"
        if not os.access(own[0], os.W_OK):
            return f"{own[0]} is not writable (run as root, or delegate the cgroup)"
        return None

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Runs argv inside this cgroup (it joins before exec, so every page it touches is
        charged here)."""
        procs = self.path / "cgroup.procs"

        def join() -> None:
            procs.write_text(str(os.getpid()))

        return subprocess.run(argv, preexec_fn=join, **kw)

    def peak(self) -> int:
        """The most this cgroup has held at once, in bytes."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text())

    def close(self) -> None:
        with contextlib.suppress(OSError):  # still busy: left for the next run to see
            self.path.rmdir()

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
