"""A store's sync state (``<store>/SYNC``) and the join code.

    device      this device's id: 32 random hex digits, its folder's name
    slot        its id range: memory ids slot * 10**9 + n (the device that set the folder
                up keeps slot 0, so its existing ids stay as they are); unique across the
                devices of a folder, so ids are never issued twice
    folder      the sync folder; key: the sync key (never in the folder)
    seq         the last segment this device wrote; exported_lsn: the log it covered
                (``full``: the next export covers all of it: the first one)
    seen        device -> the last of its segments imported here
    tombstones  ids purged on any device: a write to them, however late, is dropped

The state only ever moves forward, and what it records is redone harmlessly when a crash
loses its last save: an import merges (applying a change twice changes nothing), an export
writes its changes again in a new segment.

The join code carries the sync key from one device to another by hand (typed or pasted; a
QR code of it prints fine): never through the folder, which a cloud may read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localmem.errors import CorruptFileError, InvalidArgumentError

SLOT_SPAN = 10**9  # ids per device: 42_000_000_017 is memory 17 of the device in slot 42
MAX_SLOT = 999_999
CODE_PREFIX = "LM1"


@dataclass
class SyncState:
    device: str
    slot: int
    folder: str
    key: str  # hex
    seq: int = 0
    exported_lsn: int = 0
    full: bool = True  # the next export sends every memory this device wrote (set-up)
    hlc: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)  # device -> slot, as announced
    tombstones: list[int] = field(default_factory=list)
    last_import: dict[str, float] = field(default_factory=dict)  # device -> unix time
    last_sync: float = 0.0
    exported: int = 0
    imported: int = 0
    conflicts: int = 0  # fields two devices wrote concurrently, settled by the clock
    rejected: int = 0  # changes refused (damaged, or not a memory)
    renumber: dict[str, int] = field(default_factory=dict)  # old id -> new: a join's, to finish
    format: int = 1

    @property
    def span(self) -> tuple[int, int]:
        lo = self.slot * SLOT_SPAN
        return (max(lo, 1), lo + SLOT_SPAN)

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: Path) -> SyncState:
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != 1:
                raise ValueError("not format 1")
            st = cls(**doc)
            _validate(st)
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as e:
            raise CorruptFileError(
                f"{where} (this store's sync state) cannot be read ({e}): the store works "
                "without sync; join the folder again (`localmem sync join FOLDER`)"
            ) from None
        return st


def _validate(st: SyncState) -> None:
    """Every field of the right type and range (a damaged file is refused whole)."""

    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63

    ints = (st.slot, st.seq, st.exported_lsn, st.hlc, st.exported, st.imported, st.conflicts,
            st.rejected)  # fmt: skip
    if not all(count(v) for v in ints) or st.slot > MAX_SLOT:
        raise ValueError("a count is not a non-negative int")
    for name in ("device", "folder", "key"):
        if not isinstance(getattr(st, name), str):
            raise ValueError(f"{name} is not a string")
    if len(st.device) != 32 or len(bytes.fromhex(st.device)) != 16:
        raise ValueError("bad device id")
    if len(bytes.fromhex(st.key)) != 32:
        raise ValueError("bad key")
    if not isinstance(st.full, bool) or not isinstance(st.last_sync, (int, float)):
        raise ValueError("bad flags")
    tables = (st.seen, st.slots, st.last_import, st.renumber)
    if not all(isinstance(t, dict) for t in tables) or not isinstance(st.tombstones, list):
        raise ValueError("bad tables")
    for d, n in (*st.seen.items(), *st.slots.items(), *st.renumber.items()):
        if not isinstance(d, str) or not count(n):
            raise ValueError("bad table entry")
    if not all(count(t) for t in st.tombstones):
        raise ValueError("bad tombstones")
    if not all(isinstance(t, (int, float)) for t in st.last_import.values()):
        raise ValueError("bad import times")


def new_device() -> str:
    return secrets.token_hex(16)


def new_slot(taken: set[int]) -> int:
    """A random slot no device of the folder announced (two devices joining at the same
    time pick the same one with odds of one in a million)."""
    while True:
        s = secrets.randbelow(MAX_SLOT) + 1
        if s not in taken:
            return s


def _check(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=2, person=b"localmem-code").digest()


def join_code(key: bytes) -> str:
    """The sync key as a code to type or paste: LM1-XXXXX-... (base32 with a check)."""
    b32 = base64.b32encode(key + _check(key)).decode().rstrip("=")
    return CODE_PREFIX + "-" + "-".join(b32[i : i + 5] for i in range(0, len(b32), 5))


def key_of_code(code: str) -> bytes:
    """The sync key a join code carries; InvalidArgumentError, saying why, for a mistyped
    one (case, spaces and dashes do not matter)."""
    if not isinstance(code, str):
        raise InvalidArgumentError("a join code is a string (LM1-...)")
    s = "".join(code.split()).replace("-", "").upper()
    if not s.startswith(CODE_PREFIX):
        raise InvalidArgumentError(
            "a join code starts with LM1- (`localmem sync init` printed it on the first device)"
        )
    s = s[len(CODE_PREFIX) :]
    try:
        raw = base64.b32decode(s + "=" * (-len(s) % 8))
    except ValueError:
        raw = b""
    if len(raw) != 34 or _check(raw[:32]) != raw[32:]:
        raise InvalidArgumentError(
            "this join code is mistyped (its check does not match): copy it again from "
            "`localmem sync status --code` on a device that syncs"
        )
    return raw[:32]


def describe(st: SyncState) -> dict[str, Any]:
    """What ``sync status`` shows (never the key)."""
    return {
        "device": st.device,
        "slot": st.slot,
        "folder": st.folder,
        "segments_written": st.seq,
        "devices": {
            d: {"segments": n, "last_import": st.last_import.get(d), "slot": st.slots.get(d)}
            for d, n in sorted(st.seen.items())
        },
        "last_sync": st.last_sync or None,
        "exported": st.exported,
        "imported": st.imported,
        "conflicts_resolved": st.conflicts,
        "rejected": st.rejected,
        "purged": len(st.tombstones),
    }
