"""Replacing a whole store directory at once, crash-safely (``localmem encrypt``).

The new store is built beside the old one in ``.<name>.localmem-new`` and switched in with
one ``renameat2(RENAME_EXCHANGE)``: at every instant ``<name>`` is the old store or the new
one, complete. The old one then sits where the new one was built, and is deleted. Where the
exchange is not available (not Linux, or a file system without it) two renames do it, with
``.<name>.localmem-old`` between them: ``finish_switch`` completes or undoes a switch that a
crash cut there, before anything may create a store in the empty place; ``recover`` then
deletes what a crash left beside a complete store — and never anything beside a directory
that is not one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import time
from pathlib import Path

from localmem.errors import StorageError
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
    """Puts the complete store at ``new`` (a real directory, as ``store`` is: no symlinks)
    in the place of ``store`` and deletes the old one, which may hold plaintext: a failure
    to delete it is an error that says where it is."""
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
    try:
        shutil.rmtree(old)
    except OSError as e:
        raise StorageError(
            f"{store} is converted, but its old copy at {old} could not be deleted ({e}): "
            "delete that directory yourself"
        ) from e
    fsync_dir(store.parent)


def finish_switch(store: Path) -> None:
    """Completes (or undoes) a two-rename switch that a crash cut between its renames: the
    old store is aside and ``store`` is missing, or holds what a retry made meanwhile (a
    key file), which is moved aside too. Takes no lock: it acts only in that window's state,
    which no running conversion is in."""
    new, old = staging_path(store), _old_path(store)
    if not old.exists() or (store / "MANIFEST").exists():
        return
    if store.exists():
        os.rename(store, store.parent / f".{store.name}.localmem-stray-{time.time_ns()}")
    os.rename(new if (new / COMPLETE).exists() else old, store)
    fsync_dir(store.parent)


def recover(store: Path) -> None:
    """Under the store's presence lock (no conversion runs): finishes a cut switch, then
    deletes the unfinished new store or the old one left beside a complete store."""
    finish_switch(store)
    if not (store / "MANIFEST").exists():
        return  # not a store (yet): nothing beside it is ours to judge
    for leftover in (staging_path(store), _old_path(store)):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
    (store / COMPLETE).unlink(missing_ok=True)


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
