"""``<store>/MANIFEST``: which generation of each view is current.

JSON with a CRC32C of its canonical body, replaced atomically (write aside, fsync, rename,
fsync the directory), so a reader sees the old manifest or the new one, never a mix. The
rename is the commit point of a checkpoint and of an arena compaction.

In an encrypted store that JSON is sealed (``StoreKey``) inside an outer JSON that says only
the format and the key id: ``{"format": 2, "key_id": ..., "sealed": "<hex>"}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from localmem import _core
from localmem.errors import CorruptFileError, EncryptionKeyError, InvalidArgumentError
from localmem.files import write_durable
from localmem.store.crypt import StoreKey

_AD = b"localmem manifest"

# 2: PUT records may carry deflated metadata (records.META_DEFLATE). A store is raised to 2
# when this version opens it, before it writes anything, so that an older localmem refuses it
# with a clear error instead of failing on items it cannot decode.
FORMAT = 2
READABLE = (1, 2)


@dataclass(frozen=True)
class Manifest:
    dim: int | None
    metric: str
    generation: int  # arena/gen-<generation>.blob
    checkpoint_lsn: int  # every view below is complete up to this LSN
    index_file: str | None  # relative to the store; None until the first checkpoint
    arena_end: int  # bytes of the arena that were fsynced at the checkpoint
    store_id: str
    format: int = FORMAT  # what the store's files may hold (see FORMAT)

    def arena_file(self) -> str:
        return f"arena/gen-{self.generation:06d}.blob"


def _body(m: Manifest) -> str:
    return json.dumps(asdict(m), sort_keys=True, separators=(",", ":"))


def read_manifest(path: str | Path, key: StoreKey | None = None) -> Manifest:
    path = Path(path)
    raw = _unsealed(path, path.read_bytes(), key)
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        crc = doc.pop("crc32c")
        fmt = doc["format"]
        if fmt not in READABLE and isinstance(fmt, int) and fmt > FORMAT:
            raise CorruptFileError(
                f"{path}: the store has format {fmt}, written by a newer localmem; this one "
                f"reads formats up to {FORMAT}: upgrade localmem to open it"
            )
        if fmt not in READABLE:
            raise ValueError(f"unsupported format {fmt!r}")
        m = Manifest(**doc)
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        # RecursionError: deeply nested JSON (a damaged or hostile file) must not escape.
        raise CorruptFileError(f"{path} is not a valid store manifest ({e!r})") from None
    if _core.crc32c(_body(m).encode()) != crc:
        raise CorruptFileError(f"{path}: checksum mismatch (the file was damaged)")
    for name in ("generation", "checkpoint_lsn", "arena_end"):
        value = getattr(m, name)
        if not isinstance(value, int) or value < 0:
            raise CorruptFileError(f"{path}: bad {name}")
    return m


def _unsealed(path: Path, raw: bytes, key: StoreKey | None) -> bytes:
    """The manifest's JSON: ``raw`` itself, or what it seals."""
    try:
        doc = json.loads(raw)
        sealed = isinstance(doc, dict) and "sealed" in doc
    except (ValueError, RecursionError):
        sealed = False  # not JSON at all: read_manifest says so
    if not sealed:
        if key is not None:
            raise CorruptFileError(f"{path} is not encrypted, in an encrypted store")
        return raw
    if key is None:
        raise EncryptionKeyError(f"{path.parent} is encrypted: open it with its key")
    try:
        kid, blob = doc["key_id"], bytes.fromhex(doc["sealed"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(f"{path} is not a valid store manifest ({e!r})") from None
    if kid != key.key_id:
        raise EncryptionKeyError(f"{path.parent} is encrypted with another key than this one")
    try:
        return key.open(blob, _AD)
    except CorruptFileError:
        raise CorruptFileError(
            f"{path} failed authentication: it was damaged or tampered with"
        ) from None


def write_manifest(path: Path, m: Manifest, key: StoreKey | None = None) -> None:
    if m.dim is not None and m.dim <= 0:
        raise InvalidArgumentError(f"dim must be positive, got {m.dim}")
    body = _body(replace(m, format=FORMAT))
    doc = json.loads(body)
    doc["crc32c"] = _core.crc32c(body.encode())
    text = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    if key is not None:
        outer = {"format": FORMAT, "key_id": key.key_id, "sealed": key.seal(text, _AD).hex()}
        text = (json.dumps(outer, indent=1, sort_keys=True) + "\n").encode()
    write_durable(path, text)


def signature(path: str | Path) -> tuple[int, int, int] | None:
    """Cheap change detector: (inode, mtime, size); a rename always changes the inode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
