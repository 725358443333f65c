"""The changes a sync segment carries, as bytes (issue 26, in progress).

A segment's payload (``localmem.store.syncfolder``) is a list of ``Change``: one memory's
change, stamped with the hybrid-clock time and device that made it, carrying the fields it
set and, for a new or re-embedded text, its vector — so that the device importing it never
embeds again. Binary, not JSON with base64: the folder is to grow by little more than the
changes themselves.

    payload  = "LMCHG1\\n" | u32 count | change*
    change   = u32 length | body
    body     = <q id> <Q hlc> <16s device> <B flags> <d stability> <d t_last> <I recalls>
               <I fields length> fields (UTF-8 JSON object) [<I dim> dim x f32]

A payload comes from another device through a folder anyone may have written to (the sync
key authenticates who wrote it, not that the writer's code was right): ``decode`` checks
every length, field and number, and raises ValueError naming the change, never anything
else and never a partial list.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from localmem.sync.merge import LWW_FIELDS

MAGIC = b"LMCHG1\n"
MAX_DIM = 4096
MAX_FIELDS_BYTES = 1 << 20
_HEAD = struct.Struct("<qQ16sBddII")
_PURGED, _VECTOR = 1, 2


@dataclass(frozen=True)
class Change:
    id: int
    hlc: int
    device: str  # 32 hex digits
    fields: dict[str, Any] = field(default_factory=dict)
    purged: bool = False
    stability: float = 0.0
    t_last: float = 0.0
    recalls: int = 0  # the device's running count of reinforcements
    vector: npt.NDArray[np.float32] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Change):
            return NotImplemented
        if self.vector is None or other.vector is None:
            same_vec = self.vector is None and other.vector is None
        else:
            same_vec = np.array_equal(self.vector, other.vector)
        keys = ("id", "hlc", "device", "fields", "purged", "stability", "t_last", "recalls")
        return same_vec and all(getattr(self, k) == getattr(other, k) for k in keys)

    __hash__ = None  # type: ignore[assignment]


def encode(changes: list[Change]) -> bytes:
    out = [MAGIC, struct.pack("<I", len(changes))]
    for c in changes:
        if len(c.device) != 32 or not all(ch in "0123456789abcdef" for ch in c.device):
            raise ValueError(f"a device id is 32 lowercase hex digits, got {c.device!r}")
        fields = json.dumps(c.fields, ensure_ascii=False, separators=(",", ":")).encode()
        flags = (_PURGED if c.purged else 0) | (_VECTOR if c.vector is not None else 0)
        body = [_HEAD.pack(c.id, c.hlc, bytes.fromhex(c.device), flags, c.stability,
                           c.t_last, c.recalls, len(fields)), fields]  # fmt: skip
        if c.vector is not None:
            v = np.ascontiguousarray(c.vector, dtype="<f4")
            body += [struct.pack("<I", v.shape[0]), v.tobytes()]
        blob = b"".join(body)
        out += [struct.pack("<I", len(blob)), blob]
    return b"".join(out)


def decode(data: bytes) -> list[Change]:
    """The changes ``encode`` wrote; ValueError for anything else (see the module doc)."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < len(MAGIC) + 4:
        raise ValueError("not a localmem change list (bad magic or cut short)")
    (count,) = struct.unpack_from("<I", view, len(MAGIC))
    at, out = len(MAGIC) + 4, []
    for i in range(count):
        if at + 4 > len(view):
            raise ValueError(f"change {i} of {count}: the list is cut short")
        (n,) = struct.unpack_from("<I", view, at)
        at += 4
        if n > len(view) - at:
            raise ValueError(f"change {i} of {count}: its length runs past the end")
        try:
            out.append(_body(bytes(view[at : at + n])))
        except ValueError as e:
            raise ValueError(f"change {i} of {count}: {e}") from None
        at += n
    if at != len(view):
        raise ValueError(f"{len(view) - at} bytes after the last change")
    return out


def _body(b: bytes) -> Change:
    if len(b) < _HEAD.size:
        raise ValueError("cut short")
    id, hlc, device, flags, stability, t_last, recalls, flen = _HEAD.unpack_from(b)
    if id < 0 or flags & ~(_PURGED | _VECTOR):
        raise ValueError("bad id or flags")
    if not (math.isfinite(stability) and math.isfinite(t_last)) or stability < 0:
        raise ValueError("bad lifecycle numbers")
    at = _HEAD.size
    if flen > MAX_FIELDS_BYTES or at + flen > len(b):
        raise ValueError("bad fields length")
    try:
        fields = json.loads(b[at : at + flen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"fields are not JSON ({e})") from None
    if not isinstance(fields, dict) or set(fields) - set(LWW_FIELDS):
        raise ValueError("fields are not an object of synced fields")
    at += flen
    vector = None
    if flags & _VECTOR:
        if at + 4 > len(b):
            raise ValueError("cut short in the vector")
        (dim,) = struct.unpack_from("<I", b, at)
        at += 4
        if not 0 < dim <= MAX_DIM or at + 4 * dim != len(b):
            raise ValueError("bad vector length")
        vector = np.frombuffer(b, dtype="<f4", count=dim, offset=at).astype(np.float32)
        if not np.isfinite(vector).all():
            raise ValueError("the vector holds NaN or infinity")
        at += 4 * dim
    if at != len(b):
        raise ValueError("bytes after the change")
    return Change(id, hlc, device.hex(), fields, bool(flags & _PURGED), stability, t_last,
                  recalls, vector)  # fmt: skip
