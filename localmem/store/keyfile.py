"""``<store>/KEY``: the data key of an encrypted store, wrapped.

Every encrypted file of a store is sealed with one random 256-bit data key. The data key is
never stored as it is: ``KEY`` holds it sealed (XChaCha20-Poly1305, ``_core.aead_seal``) by
one or more key-encryption keys ("wraps"):

- ``argon2id``: derived from a passphrase by Argon2id, whose parameters and salt are
  recorded in the wrap (so a later default changes nothing for a store already wrapped);
- ``keyring``: a random 256-bit key kept by the OS keyring (macOS Keychain, Windows
  Credential Locker, Secret Service) under service ``localmem``, user ``store-<store id>``.

Each wrap's associated data is the file's header and the wrap's own fields (canonical JSON),
so a changed salt, parameter or key id fails authentication like a changed key does. The
header also carries the data key's id (``AeadKey.key_id``): every encrypted file names it,
which tells "another key" from "damage". Changing a passphrase or the keyring's key re-wraps
the same data key: nothing else is re-encrypted.

JSON, replaced atomically and durably (``files.write_durable``), mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from localmem import _core
from localmem.errors import CorruptFileError, EncryptionKeyError, InvalidArgumentError
from localmem.files import write_durable

FORMAT = "localmem-key"
VERSION = 2
KEY_FILE = "KEY"
KEYRING_SERVICE = "localmem"
# Argon2id as RFC 9106 recommends where memory is constrained (its second choice): 64 MiB,
# 3 passes, one lane; ~0.2 s here.
ARGON2 = {"time_cost": 3, "memory_kib": 65536, "parallelism": 1}
# A key file is read before it is authenticated: bounds keep a hostile one from asking for
# hours or gigabytes.
_LIMITS = {"time_cost": (1, 20), "memory_kib": (8, 1 << 20), "parallelism": (1, 16)}
_MAX_WRAPS = 16


def derive_kek(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    """A 256-bit key-encryption key from ``passphrase`` (Argon2id with ``salt`` and
    ``params``, which ``checked_params`` has bounded)."""
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidArgumentError("the passphrase must be a non-empty string")
    return hash_secret_raw(
        passphrase.encode("utf-8"), salt, time_cost=params["time_cost"],
        memory_cost=params["memory_kib"], parallelism=params["parallelism"], hash_len=32,
        type=Type.ID,
    )  # fmt: skip


def checked_params(params: dict[str, Any], error: type[Exception]) -> dict[str, int]:
    """The Argon2id parameters, each an int within ``_LIMITS`` (else ``error``)."""
    if not isinstance(params, dict):
        raise error("Argon2id parameters must be an object")
    for k, (lo, hi) in _LIMITS.items():
        v = params.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise error(f"Argon2id {k} must be an int in [{lo}, {hi}], got {v!r}")
    return {k: int(params[k]) for k in _LIMITS}


def key_id(data_key: bytes) -> int:
    """The id every encrypted file of the store records (see ``AeadKey.key_id``)."""
    return int(_core.AeadKey(data_key).key_id)


def keyring_user(store_id: str) -> str:
    """A new keyring entry's name: one per wrap, so that a new keyring key is stored beside
    the old one, never over it (overwritten in place, a crash before the new key file is
    durable would lose the key; and a copy of the store, a backup, may still use it)."""
    return f"store-{store_id}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------- the file


def _header(store_id: str, kid: int) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "cipher": "xchacha20poly1305",
            "store_id": store_id, "key_id": kid}  # fmt: skip


def _ad(header: dict[str, Any], wrap: dict[str, Any]) -> bytes:
    """What a wrap's sealing authenticates: the header and the wrap's fields."""
    fields = {k: v for k, v in wrap.items() if k != "wrapped"}
    return json.dumps({"header": header, "wrap": fields}, sort_keys=True,
                      separators=(",", ":")).encode()  # fmt: skip


def _seal_wrap(header: dict[str, Any], wrap: dict[str, Any], kek: bytes, dek: bytes) -> None:
    wrap["wrapped"] = _core.aead_seal(kek, dek, _ad(header, wrap)).hex()


def passphrase_wrap(
    header: dict[str, Any], dek: bytes, passphrase: str, params: dict[str, int] | None = None
) -> dict[str, Any]:
    p = checked_params(ARGON2 if params is None else params, InvalidArgumentError)
    salt = secrets.token_bytes(16)
    wrap: dict[str, Any] = {"kek": "argon2id", "argon2id": {"salt": salt.hex(), **p}}
    _seal_wrap(header, wrap, derive_kek(passphrase, salt, p), dek)
    return wrap


def keyring_wrap(header: dict[str, Any], dek: bytes) -> dict[str, Any]:
    """A wrap by a new random key that the OS keyring keeps (EncryptionKeyError if there
    is no usable keyring)."""
    kek = secrets.token_bytes(32)
    user = keyring_user(header["store_id"])
    _keyring_set(user, base64.b64encode(kek).decode())
    wrap: dict[str, Any] = {"kek": "keyring", "keyring": {"service": KEYRING_SERVICE,
                                                          "user": user}}  # fmt: skip
    _seal_wrap(header, wrap, kek, dek)
    return wrap


def write(path: Path, store_id: str, dek: bytes, wraps: list[dict[str, Any]]) -> None:
    """The key file with these wraps (``make_wraps``), replacing any, durably."""
    doc = {**_header(store_id, key_id(dek)), "wraps": wraps}
    write_durable(path / KEY_FILE, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def header_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("format", "version", "cipher", "store_id", "key_id")}


def new_key(store_id: str) -> tuple[bytes, dict[str, Any]]:
    """A new random data key and the header its wraps authenticate."""
    dek = secrets.token_bytes(32)
    return dek, _header(store_id, key_id(dek))


def create(
    path: Path,
    store_id: str,
    *,
    passphrase: str | None = None,
    use_keyring: bool = False,
    params: dict[str, int] | None = None,
) -> bytes:
    """A new random data key for the store at ``path``, wrapped with ``passphrase`` and/or
    the OS keyring into its ``KEY`` file (refused if one exists: replacing it would lose
    every encrypted byte)."""
    if (path / KEY_FILE).exists():
        raise InvalidArgumentError(f"{path / KEY_FILE} exists: this store already has a key")
    dek, header = new_key(store_id)
    write(path, store_id, dek, make_wraps(header, dek, passphrase, use_keyring, params))
    return dek


def make_wraps(
    header: dict[str, Any],
    dek: bytes,
    passphrase: str | None,
    use_keyring: bool,
    params: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    wraps = []
    if passphrase is not None:
        wraps.append(passphrase_wrap(header, dek, passphrase, params))
    if use_keyring:
        wraps.append(keyring_wrap(header, dek))
    if not wraps:
        raise InvalidArgumentError("an encrypted store needs a passphrase or the keyring")
    return wraps


def unlock(path: Path, passphrase: str | None = None) -> bytes:
    """The data key of the store at ``path``: with ``passphrase``, from its passphrase
    wrap; without, from the OS keyring. EncryptionKeyError for a wrong passphrase (or a
    changed key file: authentication cannot tell them apart) or a keyring that does not
    hold the key; CorruptFileError for a key file that is not one."""
    doc = read(path)
    header = header_of(doc)
    kind = "argon2id" if passphrase is not None else "keyring"
    wraps = [w for w in doc["wraps"] if w["kek"] == kind]
    if passphrase is not None:
        for w in wraps:
            a = w["argon2id"]
            kek = derive_kek(passphrase, bytes.fromhex(a["salt"]), _params(w))
            dek = _open(header, w, kek)
            if dek is not None:
                return dek
        if not wraps:
            raise EncryptionKeyError(
                f"{path} has no passphrase (its key is held by the OS keyring only)"
            )
        raise EncryptionKeyError(
            f"{path} did not open with this passphrase: it is the wrong one (or {KEY_FILE} "
            "was changed)"
        )
    for w in wraps:
        secret = _keyring_get(w["keyring"]["user"])
        if secret is None:
            continue
        try:
            kek = base64.b64decode(secret, validate=True)
        except ValueError:
            continue
        dek = _open(header, w, kek) if len(kek) == 32 else None
        if dek is not None:
            return dek
    raise EncryptionKeyError(f"the OS keyring does not hold the key of {path}")


def _open(header: dict[str, Any], wrap: dict[str, Any], kek: bytes) -> bytes | None:
    try:
        dek = _core.aead_open(kek, bytes.fromhex(wrap["wrapped"]), _ad(header, wrap))
    except CorruptFileError:
        return None
    return dek if key_id(dek) == header["key_id"] else None


def rewrap(
    path: Path,
    dek: bytes,
    *,
    passphrase: str | None = None,
    use_keyring: bool = False,
    params: dict[str, int] | None = None,
) -> None:
    """Replaces every wrap of the store's data key ``dek`` (which ``unlock`` gave) with new
    ones: a new salt for ``passphrase``, a new keyring key. The data stays as it is, and so
    does the data key: an old copy of ``KEY`` still opens the store with what it was wrapped
    by. Old keyring entries are left in place: a copy of the store (a backup) may hold its
    key only there (``drop_keyring`` removes this file's)."""
    doc = read(path)
    header = header_of(doc)
    if key_id(dek) != header["key_id"]:
        raise EncryptionKeyError(f"this is not the data key of {path}")
    wraps = make_wraps(header, dek, passphrase, use_keyring, params)
    write(path, doc["store_id"], dek, wraps)


def add_keyring(path: Path, dek: bytes) -> None:
    """Adds (or renews) a keyring wrap of the store's data key ``dek``, keeping its
    passphrase: the keyring then opens the store with no passphrase typed."""
    doc = read(path)
    header = header_of(doc)
    if key_id(dek) != header["key_id"]:
        raise EncryptionKeyError(f"this is not the data key of {path}")
    wraps = [w for w in doc["wraps"] if w["kek"] != "keyring"]
    write(path, doc["store_id"], dek, [*wraps, keyring_wrap(header, dek)])


def drop_keyring(path: Path) -> None:
    """Removes the keyring's wraps and secrets of the store: its passphrase alone opens it
    then. Refused when no passphrase wrap would remain (the key would be lost)."""
    doc = read(path)
    kept = [w for w in doc["wraps"] if w["kek"] != "keyring"]
    if not kept:
        raise InvalidArgumentError(
            f"the OS keyring holds the only key of {path}: set a passphrase first "
            "(localmem key rotate)"
        )
    users = {w["keyring"]["user"] for w in doc["wraps"] if w["kek"] == "keyring"}
    # Each wrap is sealed over the header and its own fields, not the others': the wraps
    # kept stay valid as they are.
    write_durable(path / KEY_FILE, (json.dumps({**doc, "wraps": kept}, indent=1,
                                               sort_keys=True) + "\n").encode())  # fmt: skip
    for user in users:
        _keyring_delete(user)


def describe(path: Path) -> dict[str, Any] | None:
    """How the store's key is held (no secret read), or None for a plain store."""
    if not (path / KEY_FILE).exists():
        return None
    doc = read(path)
    kinds = sorted({w["kek"] for w in doc["wraps"]})
    return {"cipher": doc["cipher"], "key_id": doc["key_id"], "held_by": kinds}


def read(path: Path) -> dict[str, Any]:
    """The key file of the store at ``path``, its fields checked (not yet authenticated)."""
    f = path / KEY_FILE
    try:
        doc = json.loads(f.read_bytes())
    except FileNotFoundError:
        raise EncryptionKeyError(f"{path} has no {KEY_FILE} file: it is not encrypted") from None
    except (OSError, ValueError, RecursionError) as e:
        raise CorruptFileError(f"{f} cannot be read as a key file: {e}") from None
    try:
        if not isinstance(doc, dict) or doc["format"] != FORMAT or doc["version"] != VERSION:
            raise ValueError("not this format or version")
        if doc["cipher"] != "xchacha20poly1305" or not isinstance(doc["store_id"], str):
            raise ValueError("cipher or store_id")
        kid = doc["key_id"]
        if isinstance(kid, bool) or not isinstance(kid, int) or not 0 < kid < 2**32:
            raise ValueError("key_id")
        wraps = doc["wraps"]
        if not isinstance(wraps, list) or not 0 < len(wraps) <= _MAX_WRAPS:
            raise ValueError("wraps")
        for w in wraps:
            if len(bytes.fromhex(w["wrapped"])) != 72:
                raise ValueError("a wrapped key of the wrong size")
            if w["kek"] == "argon2id":
                if len(bytes.fromhex(w["argon2id"]["salt"])) != 16:
                    raise ValueError("salt")
                checked_params(w["argon2id"], ValueError)
            elif w["kek"] == "keyring":
                if not isinstance(w["keyring"]["user"], str):
                    raise ValueError("keyring user")
            else:
                raise ValueError(f"unknown wrap {w['kek']!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptFileError(f"{f} is not a localmem key file ({e})") from None
    return dict(doc)


def _params(wrap: dict[str, Any]) -> dict[str, int]:
    """The Argon2id parameters a (``read``-checked) wrap records."""
    return {k: int(wrap["argon2id"][k]) for k in ARGON2}


# ---------------------------------------------------------------------- the OS keyring


def _keyring() -> Any:
    import keyring
    import keyring.errors

    return keyring


def keyring_available() -> bool:
    """Whether an OS keyring can hold a secret here (a desktop session has one; a bare
    server or container usually does not). Backends the keyring library ranks below 1 (a
    plaintext file, say) count only when chosen explicitly ($PYTHON_KEYRING_BACKEND)."""
    try:
        backend = _keyring().get_keyring()
    except Exception:
        return False
    priority = float(getattr(backend, "priority", 0) or 0)
    return priority >= 1 or (priority > 0 and bool(os.environ.get("PYTHON_KEYRING_BACKEND")))


def _keyring_get(user: str) -> str | None:
    try:
        return _keyring().get_password(KEYRING_SERVICE, user)  # type: ignore[no-any-return]
    except Exception:  # no backend, a locked collection, D-Bus gone: not there, for us
        return None


def _keyring_set(user: str, secret: str) -> None:
    try:
        _keyring().set_password(KEYRING_SERVICE, user, secret)
    except Exception as e:
        raise EncryptionKeyError(
            f"the OS keyring cannot hold the key here ({type(e).__name__}: {e}); use a "
            "passphrase instead"
        ) from None


def _keyring_delete(user: str) -> None:
    with contextlib.suppress(Exception):  # already gone, or no keyring: nothing to remove
        _keyring().delete_password(KEYRING_SERVICE, user)
