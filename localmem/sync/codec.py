"""What a sync segment carries, as bytes.

A segment's payload (``localmem.store.syncfolder``) is a header and a list of ``Change``:
one memory's whole synced state as the sending device holds it (every field with its
stamp, the lifecycle numbers, the recall counters) — or its purge — and, when its text is
new there, its vector, so that the device importing it never embeds it again. A whole state
rather than a delta: any one change makes the memory whole on a device that never saw the
others (changes from two devices arrive in any order), and merging states is what
``merge`` converges on. Binary, not JSON with base64: the folder is to grow by little more
than the records it carries.

    payload = "LMCHG2\\n" | u32 info length | info (UTF-8 JSON object) | u32 count | change*
    change  = u32 length | <q id> <B flags> <d stability> <d t_last> <I json length>
              json (UTF-8: {"d": [device, ...], "s": [[hlc, d index], ...],
                            "f": {name: [s index, value]}, "r": [[d index, count]],
                            "p": s index, "m": model})
              [<I dim> dim x f32]

A payload comes from another device through a folder anyone may have written to (the sync
key authenticates who wrote it, not that the writer's code was right): ``decode`` checks
every length, stamp and number, and raises ValueError naming the change, never anything
else and never a partial list. The values themselves are checked where they are applied, as
``remember`` checks its arguments (``validate.check_record``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from localmem.sync.merge import LWW_FIELDS, Stamp, Synced

MAGIC = b"LMCHG2\n"
MAX_DIM = 4096
MAX_JSON_BYTES = 1 << 20
# A clock stamp from past the year 2200 is a broken clock's: refused, so that no device's
# clock can be pushed to the end of its range by observing it.
MAX_HLC = 7_258_118_400_000 << 16
_HEAD = struct.Struct("<qBddI")
_PURGED, _VECTOR = 1, 2
_DEVICE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, eq=False)
class Change:
    id: int
    state: Synced
    vector: npt.NDArray[np.float32] | None = None
    model: str = ""  # the embedding model of ``vector``

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Change):
            return NotImplemented
        if self.vector is None or other.vector is None:
            same_vec = self.vector is None and other.vector is None
        else:
            same_vec = np.array_equal(self.vector, other.vector)
        return (same_vec and self.id == other.id and self.state == other.state
                and self.model == other.model)  # fmt: skip


def encode(changes: list[Change], info: dict[str, Any] | None = None) -> bytes:
    head = json.dumps(info or {}, separators=(",", ":")).encode()
    out = [MAGIC, struct.pack("<I", len(head)), head, struct.pack("<I", len(changes))]
    for c in changes:
        blob = _encode_one(c)
        out += [struct.pack("<I", len(blob)), blob]
    return b"".join(out)


def _encode_one(c: Change) -> bytes:
    s = c.state
    devices: dict[str, int] = {}
    stamps: dict[Stamp, int] = {}  # most fields of a memory share one or two stamps

    def ix(device: str) -> int:
        if not _DEVICE.match(device):
            raise ValueError(f"a device id is 32 lowercase hex digits, got {device!r}")
        return devices.setdefault(device, len(devices))

    def sx(stamp: Stamp) -> int:
        return stamps.setdefault(stamp, len(stamps))

    doc: dict[str, Any] = {
        "f": {k: [sx(st), v] for k, (st, v) in s.fields.items()},
        "r": [[ix(d), n] for d, n in sorted(s.recalls.items())],
    }
    if s.purged is not None:
        doc["p"] = sx(s.purged)
    if c.model:
        doc["m"] = c.model
    doc["s"] = [[h, ix(d)] for (h, d) in stamps]
    doc["d"] = list(devices)
    js = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    flags = (_PURGED if s.purged is not None else 0) | (_VECTOR if c.vector is not None else 0)
    body = [_HEAD.pack(c.id, flags, s.stability, s.t_last, len(js)), js]
    if c.vector is not None:
        v = np.ascontiguousarray(c.vector, dtype="<f4")
        body += [struct.pack("<I", v.shape[0]), v.tobytes()]
    return b"".join(body)


def decode(data: bytes) -> tuple[dict[str, Any], list[Change]]:
    """(info, changes) as ``encode`` wrote them; ValueError for anything else."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < len(MAGIC) + 8:
        raise ValueError("not a localmem change list (bad magic or cut short)")
    at = len(MAGIC)
    (n,) = struct.unpack_from("<I", view, at)
    at += 4
    if n > min(MAX_JSON_BYTES, len(view) - at - 4):
        raise ValueError("bad header length")
    info = _json(bytes(view[at : at + n]), "the header")
    if not isinstance(info, dict):
        raise ValueError("the header is not an object")
    at += n
    (count,) = struct.unpack_from("<I", view, at)
    at += 4
    out = []
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
    return info, out


def info(data: bytes) -> dict[str, Any]:
    """A payload's header alone (its changes not decoded); ValueError if it is not one."""
    if bytes(data[: len(MAGIC)]) != MAGIC or len(data) < len(MAGIC) + 4:
        raise ValueError("not a localmem change list (bad magic or cut short)")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    got = _json(bytes(data[len(MAGIC) + 4 : len(MAGIC) + 4 + min(n, MAX_JSON_BYTES)]), "the header")
    if not isinstance(got, dict):
        raise ValueError("the header is not an object")
    return got


def _json(b: bytes, what: str) -> Any:
    try:
        return json.loads(b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{what} is not JSON ({e})") from None


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"bad {what}: {v!r}")
    return v


def _body(b: bytes) -> Change:
    if len(b) < _HEAD.size:
        raise ValueError("cut short")
    id, flags, stability, t_last, n = _HEAD.unpack_from(b)
    if id < 0 or flags & ~(_PURGED | _VECTOR):
        raise ValueError("bad id or flags")
    if not (math.isfinite(stability) and math.isfinite(t_last)) or stability < 0:
        raise ValueError("bad lifecycle numbers")
    at = _HEAD.size
    if n > MAX_JSON_BYTES or at + n > len(b):
        raise ValueError("bad state length")
    doc = _json(b[at : at + n], "the state")
    at += n
    if not isinstance(doc, dict) or set(doc) - {"d", "s", "f", "r", "p", "m"}:
        raise ValueError("the state is not an object of d, s, f, r, p, m")
    devices = doc.get("d", [])
    if not isinstance(devices, list) or not all(
        isinstance(d, str) and _DEVICE.match(d) for d in devices
    ):
        raise ValueError("bad device list")

    def device(ix: Any) -> str:
        return str(devices[_int(ix, 0, len(devices) - 1, "device")])

    table = doc.get("s", [])
    if not isinstance(table, list) or not all(isinstance(t, list) and len(t) == 2 for t in table):
        raise ValueError("bad stamp table")
    stamps = [(_int(h, 0, MAX_HLC, "clock"), device(d)) for h, d in table]

    def stamp(ix: Any) -> Stamp:
        return stamps[_int(ix, 0, len(stamps) - 1, "stamp")]

    fields = doc.get("f", {})
    if not isinstance(fields, dict) or set(fields) - set(LWW_FIELDS):
        raise ValueError("fields are not an object of synced fields")
    got: dict[str, tuple[Stamp, Any]] = {}
    for k, f in fields.items():
        if not isinstance(f, list) or len(f) != 2:
            raise ValueError(f"field {k!r} is not [stamp, value]")
        got[k] = (stamp(f[0]), f[1])
    recalls: dict[str, int] = {}
    for r in doc.get("r", []) if isinstance(doc.get("r", []), list) else [None]:
        if not isinstance(r, list) or len(r) != 2:
            raise ValueError("bad recall counters")
        recalls[device(r[0])] = _int(r[1], 0, 2**31, "recall count")
    purged = None
    if "p" in doc:
        purged = stamp(doc["p"])
    if bool(flags & _PURGED) != (purged is not None) or (purged is not None and got):
        raise ValueError("a purge carries no fields")
    model = doc.get("m", "")
    if not isinstance(model, str) or len(model) > 1000:
        raise ValueError("bad model name")
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
    state = Synced(got, purged, stability, t_last, recalls)
    return Change(id, state, vector, model)
