"""The catalog's encryption at rest: SQLite3 Multiple Ciphers (the ``apsw`` that
``apsw-sqlite3mc`` builds), ChaCha20-Poly1305 per page.

The key is a 32-byte subkey of the store's data key, already full entropy, so it is given
raw (``raw:<hex>``): sqlite3mc then skips its passphrase KDF (PBKDF2-SHA256, 64,007 rounds,
about 25 ms), which would otherwise run on every open. Every page carries a random nonce
and a Poly1305 tag (32 reserved bytes), the WAL's frames are encrypted the same way, and
the first 16 bytes of the file are a random salt instead of SQLite's magic string; bytes
16-23 of the header (page size, format versions, reserved bytes) stay in the clear, which
is what tells an encrypted catalog from a damaged plain one (``header_kind``).

What sqlite3mc raises: a first page that fails its tag (a wrong key, or damage to that
page) is SQLITE_NOTADB, exactly as a file with no key or a plain file read with one; a
later page that fails its tag is SQLITE_CORRUPT, like any damaged page. SQLite's temporary
files (sorts, statement journals, VACUUM's copy) are not encrypted: every catalog
connection keeps them in memory (``temp_store=MEMORY``).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Literal

import apsw
import sqlite_vec  # type: ignore[import-untyped]

from localmem.errors import CorruptFileError, InvalidArgumentError, StorageError
from localmem.files import fsync_dir

CIPHER = "chacha20"
KEY_BYTES = 32
SQLITE_MAGIC = b"SQLite format 3\x00"
# Header bytes 20-23 of a chacha20 page: 32 reserved bytes (nonce and tag), then SQLite's
# fixed payload fractions 64, 32, 32.
_CHACHA20_TAIL = bytes([32, 64, 32, 32])

HeaderKind = Literal["plain", "encrypted", "other"]


def check_key(key: bytes) -> bytes:
    """``key`` as bytes, if it is a catalog key (32 bytes): a passphrase never is one."""
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_BYTES:
        raise InvalidArgumentError(
            f"a catalog key is {KEY_BYTES} raw bytes (a subkey of the store's data key), not "
            f"{type(key).__name__} of length {len(key) if hasattr(key, '__len__') else '?'}"
        )
    return bytes(key)


def apply_key(db: apsw.Connection, key: bytes) -> None:
    """Keys a new connection: must run before any other statement reads the file. The
    statements are kept out of apsw's statement cache (their text holds the key)."""
    db.execute(f"PRAGMA cipher='{CIPHER}'", can_cache=False)
    got = db.execute(f"PRAGMA key='raw:{check_key(key).hex()}'", can_cache=False).fetchone()
    if got is None or got[0] != "ok":
        # A plain SQLite ignores pragmas it does not know: the catalog would be written in
        # the clear. apsw-sqlite3mc answers "ok".
        raise StorageError(
            "this SQLite cannot encrypt (PRAGMA key was ignored): install apsw-sqlite3mc in "
            "place of apsw"
        )


def header_kind(path: Path) -> HeaderKind:
    """What the first bytes of the file say it is: a plain SQLite database, one encrypted
    with chacha20 by sqlite3mc, or neither (damaged, truncated, empty, missing). An
    encrypted one holds at least its first page whole (it is written there before any
    transaction goes to the WAL): a shorter file is damage, whatever the key."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            length = os.fstat(f.fileno()).st_size
    except OSError:
        return "other"
    if len(head) < 24:
        return "other"
    if head[:16] == SQLITE_MAGIC:
        return "plain"
    size = int.from_bytes(head[16:18], "big")
    size = 65536 if size == 1 else size
    if (
        512 <= size <= 65536
        and size & (size - 1) == 0
        and head[20:24] == _CHACHA20_TAIL
        and length >= size
    ):
        return "encrypted"
    return "other"


def key_problem(path: Path, key: bytes | None, *, key_verified: bool) -> str | None:
    """Why a catalog whose first page did not open (SQLITE_NOTADB) is a matter of keys, not
    damage, or None when it is damage. ``key_verified``: the store vouched for ``key`` (its
    key file authenticated the data key it derives from), so an encrypted first page that
    fails its tag under it is damage; without that, a wrong key and a damaged first page
    look alike, and a key error is the one that destroys nothing."""
    kind = header_kind(path)
    if key is None and kind == "encrypted":
        return f"{path} is encrypted and did not open without a key: open its store with the key"
    if key is not None and kind == "plain":
        return (
            f"{path} is not encrypted, and it was opened with a key: its store is encrypted "
            "and its catalog was never converted"
        )
    if key is not None and kind == "encrypted" and not key_verified:
        return f"{path} is encrypted and did not open with this key"
    return None


def encrypt_catalog(src: Path, dst: Path, key: bytes) -> None:
    """Writes an encrypted copy of the plain catalog ``src`` to the new file ``dst`` (for
    ``localmem encrypt``, which builds the encrypted store aside, then switches): ``VACUUM
    INTO`` a keyed URI, so every page is encrypted as it is written and nothing decrypted
    goes to a temporary file; then WAL mode, a check that every page opens under ``key``,
    and an fsync of the file and its directory. ``src`` is opened read-only and left as it
    was; ``dst`` must not exist (it is removed again if the copy fails)."""
    key = check_key(key)
    dst = Path(dst).absolute()
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise StorageError(f"{dst} already exists: the encrypted catalog goes to a new file") from e
    os.close(fd)  # VACUUM INTO writes into an empty file; created here to be 0600
    try:
        uri = "file:{}?cipher={}&key={}".format(
            urllib.parse.quote(str(dst)), CIPHER, urllib.parse.quote(f"raw:{key.hex()}")
        )
        _copy(Path(src), uri)
        _finish(dst, key)
    except BaseException:
        for f in dst.parent.glob(dst.name + "*"):
            if f.name == dst.name or f.name[len(dst.name) :] in ("-wal", "-shm", "-journal"):
                f.unlink(missing_ok=True)
        raise
    fd = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # SQLite does not sync what VACUUM INTO writes
    finally:
        os.close(fd)
    fsync_dir(dst.parent)


def _copy(src: Path, uri: str) -> None:
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    try:
        db = apsw.Connection(str(src), flags=flags)
    except apsw.Error as e:
        raise StorageError(f"cannot open the catalog {src} to encrypt it: {e}") from e
    try:
        db.execute("PRAGMA temp_store=MEMORY")
        _load_vec(db)
        db.execute("VACUUM INTO ?", (uri,), can_cache=False)
    except (apsw.CorruptError, apsw.NotADBError) as e:
        raise CorruptFileError(
            f"{src} is damaged or not a plain catalog ({e}): cannot encrypt it"
        ) from e
    except apsw.Error as e:
        raise StorageError(f"cannot write an encrypted copy of the catalog {src}: {e}") from e
    finally:
        db.close()


def _finish(dst: Path, key: bytes) -> None:
    """The copy in WAL mode (the catalog's), and read back whole under ``key``: every page's
    tag checked before the copy is trusted in place of its source."""
    db = apsw.Connection(str(dst))
    try:
        apply_key(db, key)
        db.execute("PRAGMA temp_store=MEMORY")
        _load_vec(db)
        db.execute("PRAGMA journal_mode=WAL")
        bad = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
        if bad != ["ok"]:
            raise CorruptFileError(f"the encrypted copy {dst} does not check: {bad[:3]}")
    except apsw.Error as e:
        raise StorageError(f"cannot check the encrypted copy {dst}: {e}") from e
    finally:
        db.close()  # the last connection: checkpoints the WAL into the file and removes it


def _load_vec(db: apsw.Connection) -> None:
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.enable_load_extension(False)
