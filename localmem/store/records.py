"""The store's log record types and their payload encodings.

A record is one mutation. The core treats payloads as opaque bytes; this module is the only
place that knows their layout. All integers are little-endian.

``PUT``     ``<q id><I flags><I text_len><I meta_len><I dim><I 0>`` + text (UTF-8) + meta
            (JSON, UTF-8) + zero pad to 4 + ``dim`` float32. The same bytes become the item's
            blob in the arena, so the vector is read in place (payloads start 8-aligned).
            With flag ``VEC_INT8`` the vector is its INT8 code instead: ``<f scale>`` +
            ``dim`` int8 (a quarter of the bytes; the warm tier's form). Quantizing its
            dequantized values gives the same code back, so the index holds it exactly.
            With flag ``META_DEFLATE`` the meta bytes are a zlib stream (RFC 1950) of the
            JSON with ``META_DICT`` as preset dictionary: a memory's metadata is ~150 bytes
            of JSON whose keys and many values every item repeats; deflated against them it
            is a third of that, and for a cold or forgotten memory the metadata is half of
            what it costs. Written only when it is shorter. The zlib wrapper's 10 bytes name
            the dictionary (its Adler-32) and check the inflated JSON: a stream read with
            another dictionary is an error, never plausible JSON with wrong values.
``DELETE``  ``<q id>``; the arena keeps a tombstone blob with the same payload.
``CHECKPOINT`` ``<Q generation>``: a marker appended by each checkpoint; applying it is a
            no-op, but a writer in another process finds the log moved and re-reads the
            manifest (a new arena generation) before it appends.

Types from ``FIRST_USER_TYPE`` up belong to the layers above the store (memory lifecycle:
touch, retier, ...); the store logs them and hands them to its listeners.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from localmem.errors import CorruptFileError, InvalidArgumentError

PUT = 1
DELETE = 2
CHECKPOINT = 3  # written after each checkpoint, so every other writer sees the log move
FIRST_USER_TYPE = 64

TOMBSTONE = 1  # arena blob flag: the key was deleted at this LSN
VEC_INT8 = 1  # PUT flag: the vector is stored as scale + int8 code
META_DEFLATE = 2  # PUT flag: the meta JSON is deflated against META_DICT
_FLAGS = VEC_INT8 | META_DEFLATE

# The preset dictionary of META_DEFLATE: what memory metadata repeats (memory.py, memmeta,
# tiers), the most frequent last, where DEFLATE reaches it with the shortest distances.
# Part of the on-disk format: never edit it; a new dictionary needs a new flag.
# (Times are unix seconds: "1" is all the dictionary can say of them for decades.)
META_DICT = (
    b'"superseded_by":"merged_into":"importance":0."pinned":true,"tags":["speaker":"'
    b'"key":"preference","source":"mcp","source":"import","source":"chat",'
    b'"sources":[{"id":"text":"","source":"api","session":"d","created":1'
    b'"code":"","recalls":"forgotten_at":1"tier":"forgotten","tier":"cold","tier":"warm",'
    b'"model":"all-minilm-l6-v2-int8","stability":60.0,"t_last":1'
    b'{"type":"memory","kind":"episodic","kind":"fact","session":"","when":1'
)
# Inflated metadata larger than this is damage (the writer deflates no larger JSON):
# DEFLATE expands up to ~1000x, and a damaged length must not become a huge allocation.
MAX_DEFLATED_META = 16 << 20

# A payload from the log (bytes) or a zero-copy view of an arena blob (``ndarray.data``).
Payload = bytes | memoryview

_PUT_HEAD = struct.Struct("<qIIIII")
_DELETE = struct.Struct("<q")
MAX_ID = 2**63 - 1


def check_id(id: object) -> int:
    """A memory id: a non-negative int64."""
    if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
        raise InvalidArgumentError(f"id must be an int, got {type(id).__name__}")
    value = int(id)
    if not 0 <= value <= MAX_ID:
        raise InvalidArgumentError(f"id must be in [0, 2**63 - 1], got {value}")
    return value


def encode_put(
    id: int,
    text: str,
    meta: dict[str, Any] | None,
    vector: np.ndarray | None,
    dim: int | None,
    *,
    quantized: bool = False,
) -> bytes:
    """Validates one item and encodes it; raises InvalidArgumentError naming the fix."""
    id = check_id(id)
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    try:
        text_b = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(f"text is not valid Unicode: {e}") from None
    deflated = False
    if meta is None:
        meta_b = b""
    elif not isinstance(meta, dict):
        raise InvalidArgumentError(f"meta must be a dict, got {type(meta).__name__}")
    else:
        try:
            meta_b = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"meta must be JSON-serializable: {e}") from None
        if len(meta_b) <= MAX_DEFLATED_META:
            z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zdict=META_DICT)
            packed = z.compress(meta_b) + z.flush()
            if len(packed) < len(meta_b):
                meta_b, deflated = packed, True
    vec_b = b""
    vdim = 0
    if vector is not None:
        if dim is None:
            raise InvalidArgumentError(
                "this store was created without dim, so it holds no vectors; "
                "open it with Store.open(path, dim=...) when creating it"
            )
        v = np.asarray(vector, dtype=np.float32)
        if v.ndim != 1 or v.shape[0] != dim:
            raise InvalidArgumentError(f"vector must have shape ({dim},), got {v.shape}")
        if not np.isfinite(v).all():
            raise InvalidArgumentError("vector contains NaN or infinity")
        if quantized:
            from localmem.store.index import quantize

            codes, scales = quantize(v)
            vec_b = np.asarray(scales[:1], dtype="<f4").tobytes() + codes.tobytes()
        else:
            vec_b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        vdim = dim
    pad = (-(_PUT_HEAD.size + len(text_b) + len(meta_b))) % 4
    flags = (VEC_INT8 if quantized and vdim else 0) | (META_DEFLATE if deflated else 0)
    head = _PUT_HEAD.pack(id, flags, len(text_b), len(meta_b), vdim, 0)
    return b"".join((head, text_b, meta_b, b"\0" * pad, vec_b))


def encode_delete(id: int) -> bytes:
    return _DELETE.pack(check_id(id))


def blob_key(rtype: int, payload: Payload) -> tuple[int, int] | None:
    """(key, flags) of the arena blob a record gets, or None for records without one."""
    if rtype == PUT:
        return put_id(payload), 0
    if rtype == DELETE:
        return delete_id(payload), TOMBSTONE
    return None


@dataclass(frozen=True)
class Item:
    """One stored item (a decoded PUT payload). ``vector`` is a read-only view into the
    payload's buffer: for an item read from the store, the mmap'd arena (no copy)."""

    id: int
    text: str
    meta: dict[str, Any]
    vector: npt.NDArray[np.float32] | None


def put_id(payload: Payload) -> int:
    return int(_PUT_HEAD.unpack_from(payload, 0)[0])


def delete_id(payload: Payload) -> int:
    if len(payload) != _DELETE.size:
        raise CorruptFileError(f"DELETE record of {len(payload)} bytes (expected 8)")
    return int(_DELETE.unpack_from(payload, 0)[0])


def put_vector(payload: Payload) -> npt.NDArray[np.float32] | None:
    """The vector of a PUT payload without decoding its text (for index replay)."""
    id, flags, tl, ml, dim, _ = _PUT_HEAD.unpack_from(payload, 0)
    _check_flags(id, flags)
    if dim == 0:
        return None
    start = _PUT_HEAD.size + tl + ml
    start += (-start) % 4
    if flags & VEC_INT8:
        if start + 4 + dim != len(payload):
            raise CorruptFileError(f"PUT record of id {id} has inconsistent lengths")
        scale = np.frombuffer(payload, dtype="<f4", count=1, offset=start)[0]
        codes = np.frombuffer(payload, dtype=np.int8, count=dim, offset=start + 4)
        out: npt.NDArray[np.float32] = codes.astype(np.float32) * np.float32(scale)
        return out
    end = start + 4 * dim
    if end != len(payload):
        raise CorruptFileError(f"PUT record of id {id} has inconsistent lengths")
    return np.frombuffer(payload, dtype="<f4", count=dim, offset=start)


def put_quantized(payload: Payload) -> bool:
    """True if the PUT stores its vector as an INT8 code (the warm form)."""
    return bool(_PUT_HEAD.unpack_from(payload, 0)[1] & VEC_INT8)


def decode_put(payload: Payload) -> Item:
    if len(payload) < _PUT_HEAD.size:
        raise CorruptFileError(f"PUT record of {len(payload)} bytes is shorter than its header")
    id, flags, tl, ml, _dim, _ = _PUT_HEAD.unpack_from(payload, 0)
    body = memoryview(payload)
    t0 = _PUT_HEAD.size
    if t0 + tl + ml > len(payload):
        raise CorruptFileError(f"PUT record of id {id} has inconsistent lengths")
    _check_flags(id, flags)
    meta_b = bytes(body[t0 + tl : t0 + tl + ml])
    if flags & META_DEFLATE:
        meta_b = _inflate_meta(id, meta_b)
    try:
        text = bytes(body[t0 : t0 + tl]).decode("utf-8")
        meta = json.loads(meta_b) if meta_b else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CorruptFileError(f"PUT record of id {id} is damaged ({e})") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(f"PUT record of id {id} has metadata that is not an object")
    return Item(id=id, text=text, meta=meta, vector=put_vector(payload))


def _check_flags(id: int, flags: int) -> None:
    if flags & ~_FLAGS:
        raise CorruptFileError(
            f"PUT record of id {id} has flags {flags:#x} this version does not know (damaged, or "
            "written by a newer localmem: upgrade to read it)"
        )


def _inflate_meta(id: int, data: bytes) -> bytes:
    z = zlib.decompressobj(15, zdict=META_DICT)
    try:
        out = z.decompress(data, MAX_DEFLATED_META)
    except zlib.error as e:
        raise CorruptFileError(f"PUT record of id {id} has damaged metadata ({e})") from None
    if not z.eof or z.unconsumed_tail or z.unused_data:
        raise CorruptFileError(f"PUT record of id {id} has damaged metadata (truncated or long)")
    return out
