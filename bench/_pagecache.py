"""Dropping a file from the page cache, so that the next read comes from storage (benches
that measure loads or reads under a memory cap start from a cold file)."""

from __future__ import annotations

import os
from pathlib import Path


def evict_file(path: Path) -> None:
    """Writes back and drops the file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
