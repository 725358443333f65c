"""Encrypted exports (issue 25): a byte stream sealed with a key derived from a passphrase,
in chunks, so that an export is encrypted as it is written and nothing in clear ever reaches
the disk.

Layout (all integers big-endian)::

    magic       b"localmem-encrypted-export/v1\\n"                       29 bytes
    header      one line of JSON, at most 1 KiB with its b"\\n":
                {"chunk_size":65536,"cipher":"xchacha20poly1305","kdf":"argon2id",
                 "memory_kib":65536,"parallelism":1,"salt":"<16 bytes, hex>","time_cost":3}
    key check   aead_seal(key, b"", ad=KEY_CHECK + magic + header)    40 bytes
    digest      sha256(magic + header + key check)                     32 bytes
    chunks      u32 length N, then N bytes: aead_seal(key, plaintext, ad=digest + u64 index
                + u8 last), nonce (24) | ciphertext | tag (16); N - 40 <= chunk_size

``key = Argon2id(passphrase, salt, params)`` (``keyfile.derive_kek``), fresh salt per file.
Every chunk but the last holds exactly ``chunk_size`` bytes of plaintext; the last holds the
rest (possibly none) and is flagged. The STREAM construction (Hoang, Reyhanitabar, Rogaway,
Vizár 2015): each chunk's associated data binds the header (through its digest), its index
and whether it is the last, so a reordered, dropped, repeated or changed chunk, a cut at a
chunk boundary or bytes after the last chunk all fail authentication.

The digest is not a secret: it tells a damaged header (or key check) from a wrong passphrase,
and keeps a header damaged on disk from making the KDF run on garbage parameters. A forged
header with a digest recomputed over it still fails the key check. Before anything is
authenticated, every size read from the file is bounded: the header line, the Argon2id
parameters (``keyfile.checked_params``), the chunk size and each chunk's length.

``open_sealed`` authenticates the whole file before it returns a byte: an import never sees
content that was not authenticated, and never a part of a file that is damaged further on.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import struct
from collections.abc import Callable
from typing import IO, Any

from localmem import _core
from localmem.errors import CorruptFileError, EncryptionKeyError, InvalidArgumentError
from localmem.store.keyfile import ARGON2, checked_params, derive_kek

MAGIC = b"localmem-encrypted-export/v1\n"
_PREFIX = b"localmem-encrypted-export/v"  # any version: a newer one is named, not "garbage"
VERSION = 1
CIPHER, KDF = "xchacha20poly1305", "argon2id"
CHUNK_SIZE = 64 * 1024
# Bounds on what a file says about itself, checked before anything is authenticated.
MIN_CHUNK, MAX_CHUNK = 256, 1 << 24
MAX_HEADER = 1024  # the JSON line with its newline
OVERHEAD = 40  # nonce (24) + tag (16) of each sealed piece
KEY_CHECK = b"localmem export key check\x00"
_HEADER_KEYS = {"chunk_size", "cipher", "kdf", "memory_kib", "parallelism", "salt", "time_cost"}
_LEN = struct.Struct(">I")
_AD = struct.Struct(">QB")


def _chunk_ad(digest: bytes, index: int, last: bool) -> bytes:
    return digest + _AD.pack(index, 1 if last else 0)


class SealedWriter:
    """Writes an encrypted export to the binary stream ``out``: the header at once, then a
    sealed chunk each ``chunk_size`` bytes given to ``write``. ``close`` seals the last chunk;
    used as a context manager it is called only when the block ends without an error, so an
    export that failed half-way has no last chunk and is refused as cut short, never taken
    for a whole one. ``params`` are Argon2id's (default ``keyfile.ARGON2``)."""

    def __init__(
        self,
        out: IO[bytes],
        passphrase: str,
        *,
        params: dict[str, int] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        p = checked_params(ARGON2 if params is None else params, InvalidArgumentError)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise InvalidArgumentError(f"chunk_size must be an int, got {chunk_size!r}")
        if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise InvalidArgumentError(f"chunk_size must be in [{MIN_CHUNK}, {MAX_CHUNK}]")
        salt = secrets.token_bytes(16)
        header = {"chunk_size": chunk_size, "cipher": CIPHER, "kdf": KDF, "salt": salt.hex(), **p}
        head = MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        self._key = derive_kek(passphrase, salt, p)
        check = _core.aead_seal(self._key, b"", KEY_CHECK + head)
        self._digest = hashlib.sha256(head + check).digest()
        self._out, self._chunk_size = out, chunk_size
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        out.write(head + check + self._digest)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Takes ``data``; seals and writes each chunk as soon as it is full."""
        if self._closed:
            raise InvalidArgumentError("the encrypted export is closed")
        self._buf += data
        # A chunk is sealed only once more data follows it: the last one is ``close``'s.
        while len(self._buf) > self._chunk_size:
            self._seal(bytes(self._buf[: self._chunk_size]), last=False)
            del self._buf[: self._chunk_size]
        return len(data)

    def _seal(self, plain: bytes | bytearray | memoryview, *, last: bool) -> None:
        sealed = _core.aead_seal(self._key, plain, _chunk_ad(self._digest, self._index, last))
        self._out.write(_LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def close(self) -> None:
        """Seals the rest as the last chunk (once)."""
        if not self._closed:
            self._seal(self._buf, last=True)
            self._buf.clear()
            self._closed = True

    def abandon(self) -> None:
        """Ends without a last chunk: what was written is refused as cut short."""
        self._closed = True
        self._buf.clear()

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def is_sealed(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is an encrypted export — or what is left of one: its magic line with
    a byte or two damaged, another version's, or a file cut inside the magic line (all of
    which ``open_sealed`` refuses with what is wrong, instead of an import taking them for
    notes)."""
    head = bytes(data[: len(MAGIC)])
    if not head:
        return False
    if head == MAGIC or head.startswith(_PREFIX) or MAGIC.startswith(head):
        return True
    return len(head) == len(MAGIC) and sum(a != b for a, b in zip(head, MAGIC, strict=True)) <= 2


def _header(view: memoryview, name: str) -> tuple[dict[str, Any], int]:
    """The checked header fields and where the chunks start; errors before any key."""
    m = len(MAGIC)
    if bytes(view[:m]) != MAGIC:
        first = bytes(view[: m + 8]).split(b"\n", 1)[0]
        version = re.fullmatch(rb"localmem-encrypted-export/v(\d{1,6})", first)
        if version is not None and int(version.group(1)) != VERSION:
            raise InvalidArgumentError(
                f"{name} is an encrypted export of version {int(version.group(1))}: this "
                f"localmem reads version {VERSION} (a newer localmem wrote it)"
            )
        if len(view) < m and MAGIC.startswith(bytes(view)):
            raise CorruptFileError(f"{name} is an encrypted export cut short in its first line")
        raise CorruptFileError(f"{name}: the encrypted export's first line is damaged")
    end = bytes(view[m : m + MAX_HEADER]).find(b"\n")
    if end < 0:
        what = "cut short in" if len(view) < m + MAX_HEADER else "damaged: no end to"
        raise CorruptFileError(f"{name}: the encrypted export is {what} its header")
    body = m + end + 1
    start = body + OVERHEAD + 32
    if len(view) < start:
        raise CorruptFileError(f"{name}: the encrypted export is cut short in its header")
    if hashlib.sha256(view[: body + OVERHEAD]).digest() != bytes(view[body + OVERHEAD : start]):
        raise CorruptFileError(
            f"{name}: the encrypted export's header is damaged (its checksum does not match)"
        )
    try:
        h = json.loads(bytes(view[m:body]))
        if not isinstance(h, dict) or set(h) != _HEADER_KEYS:
            raise ValueError(f"its fields are not {', '.join(sorted(_HEADER_KEYS))}")
        if h["cipher"] != CIPHER or h["kdf"] != KDF:
            raise ValueError(f"cipher {h['cipher']!r}, kdf {h['kdf']!r}")
        salt = h["salt"]
        if not isinstance(salt, str) or not re.fullmatch(r"[0-9a-f]{32}", salt):
            raise ValueError("the salt is not 16 bytes in hex")
        c = h["chunk_size"]
        if isinstance(c, bool) or not isinstance(c, int) or not MIN_CHUNK <= c <= MAX_CHUNK:
            raise ValueError(f"chunk_size {c!r} is not in [{MIN_CHUNK}, {MAX_CHUNK}]")
        checked_params(h, ValueError)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{name}: not a valid encrypted export header ({e})") from None
    return h, body


def open_sealed(
    data: bytes | bytearray | memoryview,
    passphrase: str | Callable[[], str],
    *,
    name: str = "the export",
) -> bytes:
    """The plaintext of the encrypted export ``data``, every chunk authenticated before any
    of it is returned. ``passphrase`` may be a function, called only once the header has been
    read and checked (a damaged file is reported before a prompt). EncryptionKeyError for a
    wrong passphrase; CorruptFileError, naming ``name`` and the chunk, for a damaged or cut
    file; InvalidArgumentError for another version's."""
    view = memoryview(data).cast("B")
    h, body = _header(view, name)
    secret = passphrase() if callable(passphrase) else passphrase
    params = {k: int(h[k]) for k in ARGON2}
    key = derive_kek(secret, bytes.fromhex(h["salt"]), params)
    try:
        _core.aead_open(key, view[body : body + OVERHEAD], KEY_CHECK + bytes(view[:body]))
    except CorruptFileError:
        # The digest matched, so the header and the key check are as written.
        raise EncryptionKeyError(
            f"{name} did not open with this passphrase: it is the wrong one"
        ) from None
    digest = bytes(view[body + OVERHEAD : body + OVERHEAD + 32])
    return _chunks(view, body + OVERHEAD + 32, key, digest, int(h["chunk_size"]), name)


def _chunks(
    view: memoryview, pos: int, key: bytes, digest: bytes, chunk_size: int, name: str
) -> bytes:
    out = bytearray()
    index = 0
    while True:
        where = f"{name}: chunk {index} (at byte {pos:,})"
        if pos == len(view):
            raise CorruptFileError(
                f"{name}: the encrypted export was cut short after chunk {index - 1} "
                "(it has no last chunk)"
                if index
                else f"{name}: the encrypted export was cut short after its header"
            )
        if len(view) - pos < _LEN.size:
            raise CorruptFileError(f"{where} was cut short in its length")
        (n,) = _LEN.unpack(view[pos : pos + _LEN.size])
        if not OVERHEAD <= n <= OVERHEAD + chunk_size:
            raise CorruptFileError(f"{where} is damaged: its length {n:,} is out of bounds")
        start, pos = pos + _LEN.size, pos + _LEN.size + n
        if pos > len(view):
            raise CorruptFileError(f"{where} was cut short")
        sealed = view[start:pos]
        last = pos == len(view)  # only the chunk that ends the file may be the last
        try:
            plain = _core.aead_open(key, sealed, _chunk_ad(digest, index, last))
        except CorruptFileError:
            raise CorruptFileError(f"{where} {_why(key, sealed, digest, index, last)}") from None
        if not last and len(plain) != chunk_size:  # a writer's bug, but never read past one
            raise CorruptFileError(f"{where} holds {len(plain):,} bytes, not {chunk_size:,}")
        out += plain
        if last:
            return bytes(out)
        index += 1


def _why(key: bytes, sealed: memoryview, digest: bytes, index: int, last: bool) -> str:
    """Why chunk ``index`` failed: tried with the other last flag, a cut or appended bytes
    are named; anything else is damage."""
    try:
        _core.aead_open(key, sealed, _chunk_ad(digest, index, not last))
    except CorruptFileError:
        return "failed authentication: the file was damaged or changed"
    if last:
        return "is not the last one: the encrypted export was cut short after it"
    return "is the last one, but more bytes follow it: the file was changed"
