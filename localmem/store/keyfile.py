"""``<store>/KEY``: the data key of an encrypted store, wrapped (issue 25, in progress).

Every encrypted file of a store is sealed with one random 256-bit data key. The data key is
never stored as it is: ``KEY`` holds it sealed (XChaCha20-Poly1305, ``_core.aead_seal``) with
a key-encryption key derived from a passphrase by Argon2id, whose parameters and salt are
recorded beside it. The JSON header is the sealing's associated data, so a changed salt or
parameter fails authentication like a changed key does. A new passphrase re-wraps the same
data key (``rewrap``): nothing else is re-encrypted.

JSON, replaced atomically and durably (``files.write_durable``), mode 0600.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from localmem import _core
from localmem.errors import CorruptFileError, EncryptionKeyError, InvalidArgumentError
from localmem.files import write_durable

FORMAT = "localmem-key"
VERSION = 1
KEY_FILE = "KEY"
# Argon2id as RFC 9106 recommends where memory is constrained (its second choice): 64 MiB,
# 3 passes, one lane; ~0.2 s here. Recorded per file, so that a later default changes nothing
# for a store already wrapped.
ARGON2 = {"time_cost": 3, "memory_kib": 65536, "parallelism": 1}
# A key file is read before it is authenticated: bounds keep a hostile one from asking for
# hours or gigabytes.
_LIMITS = {"time_cost": (1, 20), "memory_kib": (8, 1 << 20), "parallelism": (1, 16)}


def _kek(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidArgumentError("the passphrase must be a non-empty string")
    return hash_secret_raw(
        passphrase.encode("utf-8"), salt, time_cost=params["time_cost"],
        memory_cost=params["memory_kib"], parallelism=params["parallelism"], hash_len=32,
        type=Type.ID,
    )  # fmt: skip


def _header(store_id: str, salt: bytes, params: dict[str, int]) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "cipher": "xchacha20poly1305",
        "kek": "argon2id", "argon2id": {"salt": salt.hex(), **params}, "store_id": store_id,
    }  # fmt: skip


def _ad(header: dict[str, Any]) -> bytes:
    """The header as the wrapping authenticates it (canonical JSON)."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _write(path: Path, dek: bytes, store_id: str, passphrase: str, params: dict[str, int]) -> None:
    salt = secrets.token_bytes(16)
    header = _header(store_id, salt, params)
    kek = _kek(passphrase, salt, params)
    wrapped = _core.aead_seal(kek, dek, _ad(header))
    doc = {**header, "wrapped": wrapped.hex()}
    write_durable(path / KEY_FILE, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def create(
    path: Path, store_id: str, passphrase: str, *, params: dict[str, int] | None = None
) -> bytes:
    """A new random data key for the store at ``path``, wrapped with ``passphrase`` into its
    ``KEY`` file (refused if one exists: replacing it would lose every encrypted byte)."""
    if (path / KEY_FILE).exists():
        raise InvalidArgumentError(
            f"{path / KEY_FILE} exists: this store already has a key (rewrap changes its "
            "passphrase)"
        )
    p = _checked_params(ARGON2 if params is None else params, InvalidArgumentError)
    dek = secrets.token_bytes(32)
    _write(path, dek, store_id, passphrase, p)
    return dek


def unlock(path: Path, passphrase: str) -> bytes:
    """The data key of the store at ``path``. EncryptionKeyError for a wrong passphrase (or a
    changed key file: authentication cannot tell them apart); CorruptFileError for a key file
    that is not one."""
    return _unwrap(path, read(path), passphrase)


def _unwrap(path: Path, doc: dict[str, Any], passphrase: str) -> bytes:
    header = {k: v for k, v in doc.items() if k != "wrapped"}
    a = doc["argon2id"]
    kek = _kek(passphrase, bytes.fromhex(a["salt"]), _params(doc))
    try:
        return _core.aead_open(kek, bytes.fromhex(doc["wrapped"]), _ad(header))
    except CorruptFileError:
        raise EncryptionKeyError(
            f"{path} did not open with this passphrase: it is the wrong one (or {KEY_FILE} "
            "was changed)"
        ) from None


def rewrap(path: Path, passphrase: str, new_passphrase: str) -> None:
    """Wraps the store's data key with ``new_passphrase`` (fresh salt; the data untouched)."""
    doc = read(path)
    dek = _unwrap(path, doc, passphrase)
    _write(path, dek, doc["store_id"], new_passphrase, _params(doc))


def read(path: Path) -> dict[str, Any]:
    """The key file of the store at ``path``, its fields checked (not yet authenticated)."""
    f = path / KEY_FILE
    try:
        doc = json.loads(f.read_bytes())
    except FileNotFoundError:
        raise EncryptionKeyError(f"{path} has no {KEY_FILE} file: it is not encrypted") from None
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"{f} cannot be read as a key file: {e}") from None
    try:
        if doc["format"] != FORMAT or doc["version"] != VERSION or doc["kek"] != "argon2id":
            raise ValueError(f"format {doc['format']!r} version {doc['version']!r}")
        a = doc["argon2id"]
        if len(bytes.fromhex(a["salt"])) != 16 or len(bytes.fromhex(doc["wrapped"])) != 72:
            raise ValueError("salt or wrapped key of the wrong size")
        _checked_params(a, ValueError)
        if not isinstance(doc["store_id"], str):
            raise ValueError("store_id")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptFileError(f"{f} is not a localmem key file ({e})") from None
    return dict(doc)


def _params(doc: dict[str, Any]) -> dict[str, int]:
    """The Argon2id parameters a (``read``-checked) key file records."""
    return {k: int(doc["argon2id"][k]) for k in ARGON2}


def _checked_params(params: dict[str, Any], error: type[Exception]) -> dict[str, int]:
    """The Argon2id parameters, each an int within ``_LIMITS`` (else ``error``)."""
    for k, (lo, hi) in _LIMITS.items():
        v = params.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise error(f"Argon2id {k} must be an int in [{lo}, {hi}], got {v!r}")
    return {k: int(params[k]) for k in _LIMITS}
