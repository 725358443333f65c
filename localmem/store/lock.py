"""The store's write lock: an exclusive ``flock`` on ``<store>/LOCK`` plus an in-process
mutex (native ``FileLock``), shared with the native write path (``StoreWriter``).

flock locks belong to an open file description, so two Store objects (in one process or
two) exclude each other, and the kernel drops the lock when its holder dies, even by
kill -9: a crashed writer never leaves the store locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from localmem import _core
from localmem.errors import StoreLockedError


class StoreLock:
    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.native = _core.FileLock(str(path))
        self._held = False

    def acquire(self) -> None:
        if not self.native.acquire(self.timeout):
            raise StoreLockedError(
                f"the store at {self.path.parent} is busy: another process has held its "
                f"write lock for more than {self.timeout:g} s; try again, or raise "
                "lock_timeout"
            )
        self._held = True

    def release(self) -> None:
        self._held = False
        self.native.release()

    def close(self) -> None:
        """Releases the lock if held (the descriptor closes with the object)."""
        if self._held:
            self.release()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Presence:
    """A shared ``flock`` on ``<store>/USERS`` for as long as a Store is open, so that work
    that replaces the whole store (``localmem encrypt``) can take it exclusively and know
    that no other process holds the store's files open (their writes would land in files
    that are about to go)."""

    def __init__(self, path: Path, *, exclusive: bool = False) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            if exclusive:
                raise StoreLockedError(
                    f"the store at {path.parent} is open in another process (the chat, an "
                    "MCP server, a script?): close it, then try again"
                ) from None
            raise StoreLockedError(
                f"the store at {path.parent} is being converted (localmem encrypt): try "
                "again when that is done"
            ) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None
