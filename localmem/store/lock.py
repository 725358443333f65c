"""The store's write lock: an exclusive ``flock`` on ``<store>/LOCK``.

flock locks belong to an open file description, so two Store objects (in one process or
two) exclude each other, and the kernel drops the lock when its holder dies, even by
kill -9: a crashed writer never leaves the store locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from localmem.errors import StoreLockedError


class StoreLock:
    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held = False

    def acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            self._wait()
        self._held = True

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"the store at {self.path.parent} is busy: another process has held its "
                    f"write lock for more than {self.timeout:g} s; try again, or raise "
                    "lock_timeout"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self.release()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # a Store dropped without close(): do not leak the descriptor
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
