"""Replacing a whole store directory at once, crash-safely (``localmem encrypt``).

The new store is built beside the old one in ``.<name>.localmem-new`` and switched in with
one ``renameat2(RENAME_EXCHANGE)``: at every instant ``<name>`` is the old store or the new
one, complete. The old one then sits where the new one was built, and is deleted. Where the
exchange is not available (not Linux, or a file system without it) two renames do it, with
``.<name>.localmem-old`` between them; ``recover`` finishes or undoes a switch that a crash
interrupted, and deletes what a crash left behind (an unfinished new store, or the old one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from localmem.files import fsync_dir
from localmem.store.lock import Presence

COMPLETE = "COMPLETE"  # in a new store once every byte of it is durable


def staging_path(store: Path) -> Path:
    return store.parent / f".{store.name}.localmem-new"


def _old_path(store: Path) -> Path:
    return store.parent / f".{store.name}.localmem-old"


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchanges two paths; False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def switch(store: Path, new: Path) -> None:
    """Puts the complete store at ``new`` in the place of ``store`` and deletes the old one
    (which may hold plaintext: it goes at once)."""
    (new / COMPLETE).touch(mode=0o600)
    fsync_dir(new)
    if _renameat2_exchange(store, new):
        fsync_dir(store.parent)
        old = new
    else:
        old = _old_path(store)
        os.rename(store, old)
        os.rename(new, store)
        fsync_dir(store.parent)
    (store / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(store.parent)


def enter(store: Path) -> Presence:
    """What every open of ``store`` holds while open (see ``Presence``), taken once what an
    interrupted switch left beside the store is dealt with."""
    presence = Presence(store / "USERS")
    try:
        recover(store)
    except BaseException:
        presence.close()
        raise
    return presence


def recover(store: Path) -> None:
    """Finishes or undoes a switch a crash interrupted, then removes leftovers. Called by
    every open, holding the store's presence lock (so never while a switch runs) — except
    when the store directory itself is missing, mid-way between two renames."""
    new, old = staging_path(store), _old_path(store)
    if not store.exists() and old.exists():
        os.rename(new if (new / COMPLETE).exists() else old, store)
        fsync_dir(store.parent)
    for leftover in (new, old):
        if leftover.exists() and store.exists():
            shutil.rmtree(leftover, ignore_errors=True)
    (store / COMPLETE).unlink(missing_ok=True)
