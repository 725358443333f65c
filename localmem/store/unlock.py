"""Which key opens a store: the passphrase given, else the OS keyring; and the message that
says how to unlock a store when neither is at hand."""

from __future__ import annotations

import os
from pathlib import Path

from localmem.errors import EncryptionKeyError
from localmem.files import fsync_dir
from localmem.store import keyfile, swap
from localmem.store.crypt import StoreKey

PASSPHRASE_ENV = "LOCALMEM_PASSPHRASE"


def unlock_command(path: Path) -> str:
    return f"localmem key unlock --store {path}"


def store_key(path: Path, passphrase: str | None, *, create: bool = True) -> StoreKey | None:
    """The key of the store at ``path`` (None: a plain store). An encrypted store opens with
    ``passphrase`` or, without one, with the key the OS keyring holds, else with
    ``$LOCALMEM_PASSPHRASE``; a new store given a passphrase is created encrypted with it."""
    swap.finish_switch(path)  # before deciding it is not encrypted, or no store at all
    if (path / keyfile.KEY_FILE).exists():
        try:
            return StoreKey(keyfile.unlock(path, passphrase))
        except EncryptionKeyError as e:
            if passphrase is not None:
                raise
            env = os.environ.get(PASSPHRASE_ENV)
            if env:  # scripts and sessions with no keyring (a server, a container)
                return StoreKey(keyfile.unlock(path, env))
            raise EncryptionKeyError(locked_message(path, str(e))) from None
    if passphrase is None:
        return None
    if (path / "MANIFEST").exists():
        raise EncryptionKeyError(
            f"{path} is not encrypted, so it takes no passphrase: open it without one, or "
            f"encrypt it first (localmem encrypt --store {path})"
        )
    if not create:
        raise FileNotFoundError(f"no store at {path}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_dir(path.parent, required=False)  # the new store's entry survives a power cut
    return StoreKey(keyfile.create(path, os.urandom(8).hex(), passphrase=passphrase))


def locked_message(path: Path, why: str) -> str:
    """What to do about an encrypted store whose key is not at hand."""
    if keyfile.keyring_available():
        return (
            f"{path} is encrypted and locked ({why}). Unlock it once with "
            f"`{unlock_command(path)}` (asks its passphrase and keeps the key in the OS "
            "keyring), or set LOCALMEM_PASSPHRASE"
        )
    return (
        f"{path} is encrypted and locked ({why}), and this session has no OS keyring to "
        "hold its key: set LOCALMEM_PASSPHRASE to its passphrase (or pass it: "
        "Memory.open(path, key=...))"
    )
