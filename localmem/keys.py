"""Encryption at rest, as the package offers it: whether a store is encrypted and how its key
is held; encrypting a plain store in place; keeping its key in the OS keyring or dropping it
from there; changing its passphrase or keyring key (``rotate_key``: the data key is re-wrapped,
the data is not re-encrypted). The work lives in ``localmem.store`` (keyfile, convert)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from localmem.errors import EncryptionKeyError
from localmem.items import Progress
from localmem.paths import store_path
from localmem.store import convert, keyfile
from localmem.store.unlock import locked_message, store_key


def _path(path: str | os.PathLike[str] | None) -> Path:
    return store_path(path)


def encryption(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """None for a plain store; else ``cipher``, ``key_id``, ``held_by`` (``argon2id``: a
    passphrase, ``keyring``: the OS keyring) and ``keyring_has_key`` (whether it would open
    now with no passphrase)."""
    p = _path(path)
    info = keyfile.describe(p)
    if info is None:
        return None
    try:
        keyfile.unlock(p)
        info["keyring_has_key"] = True
    except EncryptionKeyError:
        info["keyring_has_key"] = False
    return info


def held_by(info: dict[str, Any]) -> str:
    """What holds the key, in words: ``a passphrase and the OS keyring``."""
    words = {"argon2id": "a passphrase", "keyring": "the OS keyring"}
    return " and ".join(words.get(k, k) for k in info["held_by"])


def check_unlocked(path: str | os.PathLike[str] | None = None) -> None:
    """Raises EncryptionKeyError, with the command that unlocks it, if the store at ``path``
    is encrypted and neither the OS keyring nor ``$LOCALMEM_PASSPHRASE`` opens it: for the
    programs that cannot ask for a passphrase (the MCP server, ``localmem ask``)."""
    store_key(_path(path), None, create=False)


def keyring_available() -> bool:
    """Whether this session has an OS keyring that can hold a store's key."""
    return keyfile.keyring_available()


def encrypt(
    path: str | os.PathLike[str] | None = None,
    *,
    passphrase: str | None = None,
    keyring: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Encrypts the plain store at ``path`` in place, crash-safely (a kill at any point
    leaves the plain store or the encrypted one, each complete). Its new data key is wrapped
    with ``passphrase`` and/or kept by the OS keyring. No other process may have the store
    open meanwhile (StoreLockedError)."""
    return convert.encrypt_store(
        _path(path), passphrase=passphrase, use_keyring=keyring, progress=progress
    )


def unlock(path: str | os.PathLike[str] | None, passphrase: str) -> None:
    """Keeps the key of the encrypted store at ``path`` in the OS keyring (its passphrase
    checked first), so that it opens with none typed: the MCP server, ``localmem ask``."""
    p = _path(path)
    keyfile.add_keyring(p, keyfile.unlock(p, passphrase))


def lock(path: str | os.PathLike[str] | None = None) -> None:
    """Removes the store's key from the OS keyring: only its passphrase opens it then."""
    keyfile.drop_keyring(_path(path))


def rotate_key(
    path: str | os.PathLike[str] | None = None,
    *,
    passphrase: str | None = None,
    new_passphrase: str | None = None,
    keyring: bool = False,
) -> None:
    """Re-wraps the store's data key: with ``new_passphrase`` (a new salt) and/or a new
    random keyring key; every old wrap goes. The store is opened with ``passphrase`` or, if
    None, the keyring's key. The data itself is not touched."""
    p = _path(path)
    try:
        dek = keyfile.unlock(p, passphrase)
    except EncryptionKeyError as e:
        if passphrase is not None:
            raise
        raise EncryptionKeyError(locked_message(p, str(e))) from None
    keyfile.rewrap(p, dek, passphrase=new_passphrase, use_keyring=keyring)
