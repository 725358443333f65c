"""The sync folder's files: each device's segments, sealed.

    FOLDER/<device id: 32 hex>/<seq: 16 hex>.seg

A segment is written once, whole, by the device whose folder it is in, and never changed:
sealed with the sync key in STREAM chunks (``_core.write_sealed``; its name is authenticated
with it, so a copy under another name does not read). A folder-sync tool may deliver
segments late, out of order, twice, or half-copied, and may add its own conflict copies;
the reader therefore takes a device's segments in sequence order only, stops at the first
one that is missing or does not authenticate yet (still being copied: it is read again
next time), and ignores every name that is not a segment's. What each device's segments
hold is opaque here: the sync layer above encodes its records in them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localmem import _core
from localmem.errors import CorruptFileError, InvalidArgumentError, StorageError
from localmem.files import write_durable, write_private

KIND = 0x53594E43  # sealed-file kind of a sync segment ("SYNC")
DEVICE = re.compile(r"^[0-9a-f]{32}$")
SEGMENT = re.compile(r"^([0-9a-f]{16})\.seg$")
TEMPORARY = re.compile(r"^[0-9a-f]{16}\.seg\.tmp-[0-9]+$")  # a write cut by a crash


def check_device(device: str) -> str:
    if not isinstance(device, str) or not DEVICE.match(device):
        raise InvalidArgumentError(f"a device id is 32 lowercase hex digits, got {device!r}")
    return device


def segment_path(folder: Path, device: str, seq: int) -> Path:
    return Path(folder) / check_device(device) / f"{seq:016x}.seg"


def write_segment(folder: Path, device: str, seq: int, key: Any, payload: bytes) -> Path:
    """Writes this device's segment ``seq`` (from 1, one after the last it wrote) sealed
    with the sync key ``key`` (an ``_core.AeadKey``); refuses to replace one: a segment,
    once another device may have read it, never changes."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2**63:
        raise InvalidArgumentError(f"a segment number is a positive int, got {seq!r}")
    path = segment_path(folder, device, seq)
    if path.exists():
        raise InvalidArgumentError(f"{path} exists: segments are written once")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _core.write_sealed(os.fspath(path), key, KIND, payload)
    return path


def segments(folder: Path, device: str) -> list[int]:
    """The segment numbers present for ``device``, ascending (gaps possible: not copied yet)."""
    d = Path(folder) / check_device(device)
    try:
        names = os.listdir(d)
    except OSError:  # not there (yet), or unreadable: nothing to read from it now
        return []
    return sorted(int(m.group(1), 16) for n in names if (m := SEGMENT.match(n)))


def devices(folder: Path) -> list[str]:
    try:
        return sorted(
            n for n in os.listdir(folder) if DEVICE.match(n) and (Path(folder) / n).is_dir()
        )
    except OSError:  # not mounted, unreadable: no devices to read now
        return []


@dataclass(frozen=True)
class Segment:
    device: str
    seq: int
    payload: bytes


@dataclass
class Scan:
    """Why reading a device's segments stopped where it did."""

    device: str
    waiting: str = ""  # "" (nothing in the way), "missing", "incomplete"
    later: int = 0  # segments present past the last one read


def read_new(
    folder: Path, device: str, after: int, key: Any, *, limit: int = 2**31
) -> tuple[list[Segment], Scan]:
    """``device``'s segments after number ``after`` (at most ``limit``: each is up to a few
    MiB in memory), in order, up to the first that is missing or does not authenticate yet.
    EncryptionKeyError if they are sealed with another sync key (another folder's)."""
    present = [s for s in segments(folder, device) if s > after]
    out: list[Segment] = []
    want = after + 1
    for seq in present[:limit]:
        if seq != want:
            return out, Scan(device, "missing", len(present) - len(out))
        try:
            payload = _core.read_sealed(os.fspath(segment_path(folder, device, seq)), key, KIND)
        except CorruptFileError:
            return out, Scan(device, "incomplete", len(present) - len(out))
        except StorageError:  # removed or unreadable meanwhile (a sync tool's own move)
            return out, Scan(device, "missing", len(present) - len(out))
        out.append(Segment(device, seq, payload))
        want += 1
    return out, Scan(device, "", len(present) - len(out))


# ---------------------------------------------------------------------- this device's state

STATE_FILE = "SYNC"  # <store>/SYNC: the device's sync state (localmem.sync.state)
STATE_KIND = 0x53594E53  # sealed-file kind of a store's sync state ("SYNS")
MARKER = "localmem-sync.json"  # the folder's one other file: its format and key id


def new_key() -> bytes:
    return os.urandom(32)


def aead_key(raw: bytes) -> Any:
    """The native key of a sync key (32 bytes)."""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise InvalidArgumentError("a sync key is 32 bytes")
    return _core.AeadKey(raw)


def write_state(path: Path, data: bytes, key: Any | None) -> None:
    """The store's sync state (it holds the sync key): sealed with the store's key when the
    store is encrypted (``key``: its ``_core.AeadKey``), else 0600 like the store's own
    files; atomic either way."""
    if key is not None:
        _core.write_sealed(os.fspath(path), key, STATE_KIND, data)
        os.chmod(path, 0o600)
    else:
        write_durable(path, data)


def read_state(path: Path, key: Any | None) -> bytes | None:
    """What ``write_state`` wrote (None: no state, sync was never set up)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if key is not None:
        return bytes(_core.read_sealed(os.fspath(path), key, STATE_KIND))
    return raw


def exported_lsn(store: Path) -> int | None:
    """The log position a plain store's next sync export starts from (None: it does not
    sync, or cannot say): what a checkpoint that rewrites the store must keep."""
    try:
        raw = read_state(Path(store) / STATE_FILE, None)
        return None if raw is None else int(json.loads(raw)["exported_lsn"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def key_id(key: Any) -> str:
    return f"{int(key.key_id):08x}"


def write_marker(folder: Path, key: Any) -> None:
    """Marks ``folder`` as a sync folder: the format and the sync key's id (a keyed hash of
    32 bits: says which key, reveals nothing of it)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(folder / MARKER, json.dumps({"format": 1, "key_id": key_id(key)}).encode())


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"{Path(folder) / MARKER} cannot be read: {e}") from None
    except ValueError as e:
        raise CorruptFileError(f"{Path(folder) / MARKER} cannot be read: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("key_id"), str):
        raise CorruptFileError(f"{Path(folder) / MARKER} is not a localmem sync folder's")
    return doc


def stray_temporaries(folder: Path, device: str) -> list[Path]:
    """Temporary files a write of this device's segments left behind (a crash)."""
    d = Path(folder) / check_device(device)
    try:
        return [d / n for n in os.listdir(d) if TEMPORARY.match(n)]
    except OSError:
        return []
