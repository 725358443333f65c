"""Files localmem writes outside a store (exports, cache stamps, probe results): written
whole or not at all, readable by the user alone, whatever the umask."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


@contextmanager
def private_output(path: Path, *, mkdir: bool = False) -> Iterator[TextIO]:
    """A UTF-8 text file that becomes ``path`` (mode 0600) when the block ends without an
    error, and is removed when it raises. It is written under a random name beside
    ``path``, created exclusively and never through a symlink (a planted ``X.tmp`` link
    cannot redirect it), then renamed over ``path``."""
    if mkdir:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits off; never more than 0600
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically with mode 0600 (``private_output``); the
    directory is made 0700 if it does not exist."""
    with private_output(path, mkdir=True) as f:
        f.buffer.write(data)


def private_files(db: Path) -> None:
    """Makes an SQLite database and its companions (``-wal``, ``-shm``, ``-journal``) 0600:
    SQLite creates the companions with the database file's mode, so the database is
    created 0600 before SQLite opens it, and bits an older version left are taken back."""
    try:
        os.close(os.open(db, _EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # a read-only place or a full disk: SQLite's own error will say which
    for f in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            st = os.lstat(f)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(f, 0o600)
        except OSError:
            pass


def fsync_dir(path: Path, *, required: bool = True) -> None:
    """Makes a directory's entries durable (a rename or a new file in it survives a power
    cut). ``required=False``: a directory that cannot be opened (permissions) is skipped —
    the files themselves are still synced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if required:
            raise
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data`` (mode 0600) so that a crash or a power cut leaves the
    old file or the new one, whole: written aside, fsynced, renamed over it, and the
    directory fsynced."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
