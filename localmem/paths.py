"""Where stores live on disk."""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from localmem.errors import InvalidArgumentError, StoreNotFoundError

STORE_ENV = "LOCALMEM_STORE"
# What a store directory holds (localmem.store, its catalog, key and sync state): a directory
# holding only these is a store, or one whose creation was cut short.
_STORE_FILES = {"LOCK", "EDIT.lock", "USERS", "MANIFEST", "KEY", "SYNC", "SYNC.lock",
                "catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm",
                "catalog.sqlite-journal"}  # fmt: skip
_STORE_DIRS = {"wal", "arena", "index"}
# Temporary names a crash may leave (localmem.files: ``.NAME.<16 hex>.tmp``, ``NAME.tmp-PID``)
# and a damaged catalog set aside by ``repair``.
_STORE_LEFTOVERS = re.compile(
    r"^(\.[A-Za-z.]+\.[0-9a-f]{16}\.tmp|[A-Za-z.]+\.tmp-[0-9]+|catalog\.sqlite\.corrupt-.*)$"
)
# What operating systems and file managers put in any folder.
_OS_FILES = {".DS_Store", ".localized", "Thumbs.db", "desktop.ini", "lost+found"}


def default_store_path() -> Path:
    """The store used when none is named: ``$LOCALMEM_STORE``, else the user data dir."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("localmem")) / "default"


def store_path(path: str | os.PathLike[str] | None) -> Path:
    """The store's directory: ``path`` (``~`` expanded) or the default. An empty path is
    refused: ``Path("")`` is the current directory, which must not become a store unasked."""
    if path is None:
        return default_store_path()
    if not str(os.fspath(path)).strip():
        raise InvalidArgumentError(
            "the store path is empty: name a directory, or give none for the default "
            f"(${STORE_ENV}, else {default_store_path()})"
        )
    return Path(path).expanduser()


def is_store(path: Path) -> bool:
    """A store is there: its MANIFEST, the key file an encrypted one starts with, or a log
    (a store whose MANIFEST was lost: opening it says it is damaged, never makes a new one)."""
    return (
        (path / "MANIFEST").exists()
        or (path / "KEY").exists()
        or ((path / "wal").is_dir() and any((path / "wal").glob("*.wal")))
    )


def _ours(entry: Path) -> bool:
    """A file a store has (or a crash left), or one an OS puts anywhere."""
    name = entry.name
    if name in _STORE_DIRS:
        return entry.is_dir()
    return name in _STORE_FILES or name in _OS_FILES or bool(_STORE_LEFTOVERS.match(name))


def check_store_dir(path: Path, *, create: bool) -> None:
    """Refuses what must not be opened as a store: with ``create=False`` (a read) a path
    with no store (StoreNotFoundError); and whatever the call, a file, or a directory that
    holds other things than a store's files (a mistyped ``--store`` would otherwise scatter
    a store's files among the user's own)."""
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{path} is a file, not a store: name a directory")
    if is_store(path):
        return
    try:
        others = sorted(e.name for e in (path.iterdir() if path.is_dir() else ()) if not _ours(e))
    except PermissionError:
        raise InvalidArgumentError(f"{path} cannot be read (permission denied)") from None
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InvalidArgumentError(
            f"{path} is not a localmem store: it holds other files ({shown}). Name a new or "
            "empty directory for a store, or the directory of an existing one"
        )
    if not create:
        raise StoreNotFoundError(f"no store at {path}; `localmem remember` creates one")
