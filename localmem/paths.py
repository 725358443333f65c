"""Where stores live on disk."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from localmem.errors import InvalidArgumentError, StoreNotFoundError

STORE_ENV = "LOCALMEM_STORE"
# What a store directory holds (localmem.store, its catalog, key and sync state): a directory
# holding only these is a store, or one whose creation was cut short.
_STORE_NAMES = {"LOCK", "EDIT.lock", "USERS", "wal", "arena", "index", "SYNC", "SYNC.lock"}
_STORE_PREFIXES = ("MANIFEST", "KEY", "catalog.sqlite")


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
            "the store path is empty: name a directory (--store ~/notes-mem), or leave it "
            f"out for the default (${STORE_ENV}, else {default_store_path()})"
        )
    return Path(path).expanduser()


def is_store(path: Path) -> bool:
    """A store is there: its MANIFEST, or the key file an encrypted one starts with."""
    return (path / "MANIFEST").exists() or (path / "KEY").exists()


def _ours(name: str) -> bool:
    """A name a store's own files have, a temporary one a crash left included (``SYNC.tmp-1``,
    ``.KEY.3f2a.tmp``: localmem.files)."""
    base = name.lstrip(".")
    return base.startswith(_STORE_PREFIXES) or any(
        base == n or base.startswith(n + ".") for n in _STORE_NAMES
    )


def check_store_dir(path: Path, *, create: bool) -> None:
    """Refuses what must not be opened as a store: with ``create=False`` (a read) a path
    with no store (StoreNotFoundError); and whatever the call, a file, or a directory that
    holds other things than a store's files (a mistyped ``--store`` would otherwise scatter
    a store's files among the user's own)."""
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{path} is a file, not a store: name a directory")
    if is_store(path):
        return
    others = sorted(e.name for e in (path.iterdir() if path.is_dir() else ()) if not _ours(e.name))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InvalidArgumentError(
            f"{path} is not a localmem store: it holds other files ({shown}). Name a new or "
            "empty directory for a store, or the directory of an existing one"
        )
    if not create:
        raise StoreNotFoundError(f"no store at {path}; `localmem remember` creates one")
