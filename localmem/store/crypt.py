"""An encrypted store's data key as the store uses it (``StoreKey``).

The key is held natively (``_core.AeadKey``): the log, the arena and the index snapshot seal
with it without the GIL. The manifest is sealed here, and the catalog gets its own key
derived from the data key (SQLite3 Multiple Ciphers encrypts it with its own construction;
one key must not serve two constructions).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from localmem import _core
from localmem.errors import EncryptionKeyError, InvalidArgumentError
from localmem.store import keyfile

_SUBKEY_PERSON = b"localmem-subkey"


class StoreKey:
    """The data key of one encrypted store (see keyfile.py for how it is kept on disk)."""

    __slots__ = ("catalog_key", "key_id", "native")

    def __init__(self, data_key: bytes) -> None:
        if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != 32:
            raise InvalidArgumentError("a store's data key is 32 bytes")
        self.native = _core.AeadKey(bytes(data_key))
        self.key_id = int(self.native.key_id)
        self.catalog_key = hashlib.blake2b(
            b"catalog", key=bytes(data_key), digest_size=32, person=_SUBKEY_PERSON
        ).digest()

    def seal(self, data: bytes, ad: bytes) -> bytes:
        return bytes(self.native.seal(data, ad))

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        """The plaintext; CorruptFileError if ``sealed`` fails authentication."""
        return bytes(self.native.open(sealed, ad))

    def __repr__(self) -> str:  # never the key itself
        return f"StoreKey(key_id={self.key_id:#010x})"


def check_key(path: Path, key: StoreKey | None) -> None:
    """Refuses, before anything is read or written, a key that does not fit the store at
    ``path`` (the KEY file says whether it is encrypted, and with which key)."""
    has_key_file = (path / keyfile.KEY_FILE).exists()
    if key is None:
        if has_key_file:
            raise EncryptionKeyError(f"{path} is encrypted: open it with its key")
        return
    if not has_key_file:
        if (path / "MANIFEST").exists():
            raise EncryptionKeyError(
                f"{path} is not encrypted: open it without a key (or encrypt it first: "
                f"localmem --store {path} encrypt)"
            )
        raise EncryptionKeyError(f"{path} has no {keyfile.KEY_FILE} file: create its key first")
    if keyfile.read(path)["key_id"] != key.key_id:
        raise EncryptionKeyError(f"this is not the key of the encrypted store {path}")
