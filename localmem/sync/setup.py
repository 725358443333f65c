"""Setting a store up as a device of a sync folder, and its state file.

``init`` makes a new folder (this store is its first device, slot 0: its ids stay as they
are); ``join`` makes this store another device of a folder, with the key the join code
carries and a slot of ids of its own; ``attach`` (at every open) makes a device's writes
carry their clock stamps and take ids from its slot.

Both write the state before anything that depends on it, so that a crash is finished by the
next step rather than redone: ``init`` the state before the folder's marker (a step writes a
missing marker for a device that set the folder up and has written nothing yet); ``join``
the state with its renumbering plan (old id -> new id) before renumbering, which
``finish_renumbering`` completes from any point (the copy under the new id, then the old one
dropped as this device's own business, never as a purge).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from localmem.errors import (
    CorruptFileError,
    EncryptionKeyError,
    InvalidArgumentError,
    StorageError,
    UnknownIdError,
)
from localmem.memstore import MemoryStore
from localmem.memstore.edits import relinked
from localmem.store import syncfolder as sf
from localmem.store.crypt import StoreKey
from localmem.store.hlc import HybridClock
from localmem.sync import codec, stamps
from localmem.sync.state import (
    SLOT_SPAN,
    SyncState,
    describe,
    join_code,
    key_of_code,
    new_device,
    new_slot,
)

log = logging.getLogger("localmem")


class SyncFolderError(StorageError):
    """The sync folder cannot be used now (missing, not mounted, another folder's)."""


def load(records: MemoryStore, key: StoreKey | None) -> SyncState | None:
    """This store's sync state; None if it does not sync. CorruptFileError if the file is
    damaged."""
    path = records.path / sf.STATE_FILE
    raw = sf.read_state(path, None if key is None else key.native)
    return None if raw is None else SyncState.from_bytes(raw, path)


def save(records: MemoryStore, st: SyncState, key: StoreKey | None) -> None:
    sf.write_state(records.path / sf.STATE_FILE, st.to_bytes(), None if key is None else key.native)


def attach(records: MemoryStore, key: StoreKey | None) -> SyncState | None:
    """At open (and when another process sets sync up): a device's writes are stamped and
    its ids come from its slot. A damaged state leaves the store working without sync."""
    try:
        st = load(records, key)
    except (CorruptFileError, EncryptionKeyError) as e:
        log.warning("%s", e)
        return None
    if st is None:
        return None
    lo, hi = st.span
    records.id_span = st.span
    records.id_floor = max([records.id_floor, *(t + 1 for t in st.tombstones if lo <= t < hi)])
    if records.stamper is None:
        wall = records.clock
        clock = HybridClock(st.hlc, wall=lambda: int(wall() * 1000))
        records.stamper = stamps.Stamper(st.device, clock)
        exported = [st.exported_lsn]
        records.store.retain(lambda: exported[0])  # what the next export reads of the log
        records.sync_exported = exported
    return st


def folder_path(path: Any) -> Path:
    p = Path(os.fspath(path)).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise InvalidArgumentError(f"{p} is not a folder")
    return p


def init(records: MemoryStore, key: StoreKey | None, folder: Any) -> str:
    """Sets sync up in a new ``folder`` with this store as its first device; returns the
    join code the others need."""
    _not_yet(records, key)
    folder = folder_path(folder)
    if sf.read_marker(folder) is not None:
        raise InvalidArgumentError(
            f"{folder} is a sync folder already: join it (`localmem sync join {folder}` with "
            "the code a device that syncs shows)"
        )
    raw = sf.new_key()
    st = SyncState(device=new_device(), slot=0, folder=str(folder), key=raw.hex())
    big = [i for i in records.store_ids() if i >= SLOT_SPAN]  # past slot 0 (rare): renumbered
    plan_renumbering(records, st, big)
    save(records, st, key)
    sf.write_marker(folder, sf.aead_key(raw))
    attach(records, key)
    finish_renumbering(records, st, key)
    return join_code(raw)


def join(records: MemoryStore, key: StoreKey | None, folder: Any, code: str) -> SyncState:
    """Makes this store a device of the sync folder ``folder`` (set up by ``init`` on
    another device), with the key the join ``code`` carries. Memories this store already
    holds get ids from its own range, and are synced like the others."""
    _not_yet(records, key)
    raw = key_of_code(code)
    folder = folder_path(folder)
    marker = sf.read_marker(folder)
    if marker is None:
        raise SyncFolderError(
            f"{folder} is not a sync folder (no {sf.MARKER}): give the folder `localmem sync "
            "init` made, once the sync tool has copied it here"
        )
    k = sf.aead_key(raw)
    if marker["key_id"] != sf.key_id(k):
        raise EncryptionKeyError(f"this join code is another sync folder's, not {folder}'s")
    taken = {0, *announced(folder, k).values()}
    st = SyncState(device=new_device(), slot=new_slot(taken), folder=str(folder), key=raw.hex())
    plan_renumbering(records, st, records.store_ids())
    save(records, st, key)
    attach(records, key)
    finish_renumbering(records, st, key)
    return st


def _not_yet(records: MemoryStore, key: StoreKey | None) -> None:
    """Refuses a store that syncs already; a damaged state is set aside (the store is set
    up anew: a new device)."""
    try:
        st = load(records, key)
    except CorruptFileError as e:
        path = records.path / sf.STATE_FILE
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        log.warning("%s; moved aside to %s", e, aside.name)
        return
    if st is not None:
        raise InvalidArgumentError(
            f"{records.path} syncs with {st.folder} already (device {st.device[:8]})"
        )


def announced(folder: Path, k: Any) -> dict[str, int]:
    """device -> the slot its first segment announces."""
    out = {}
    for d in sf.devices(folder):
        try:
            segs, _ = sf.read_new(folder, d, 0, k, limit=1)
            slot = codec.info(segs[0].payload).get("slot") if segs else None
        except (EncryptionKeyError, ValueError):  # another folder's, or not ours to read
            continue
        if isinstance(slot, int):
            out[d] = slot
    return out


def plan_renumbering(records: MemoryStore, st: SyncState, ids: list[int]) -> None:
    """New ids in ``st``'s range for ``ids`` (outside it), recorded in the state before any
    memory moves."""
    lo, hi = st.span
    ids = [i for i in ids if not lo <= i < hi and str(i) not in st.renumber]
    if ids:
        records.id_span = st.span
        st.renumber.update((str(i), n) for i, n in zip(ids, records.new_ids(len(ids)), strict=True))


def finish_renumbering(records: MemoryStore, st: SyncState, key: StoreKey | None) -> None:
    """Moves each memory of ``st.renumber`` to its new id (from wherever a crash left it:
    copy first, then the old one dropped), references between them kept."""
    if not st.renumber:
        return
    new = {int(o): n for o, n in st.renumber.items()}
    olds = sorted(new)
    for i in range(0, len(olds), 1024):
        puts = []
        with records.editing:
            for old in olds[i : i + 1024]:
                if new[old] in records.store:
                    continue  # copied before a crash
                try:
                    it = records.store.get(old)
                except UnknownIdError:
                    continue
                meta = relinked(it.meta, new)
                meta.pop("sync", None)  # this device's own, from before it synced
                puts.append((new[old], it.text, meta, it.vector, meta.get("tier") == "warm"))
            records.store.put_many(puts)
        for old in olds[i : i + 1024]:
            if old in records.store:
                records.drop_locally(old)
    st.renumber = {}
    st.full = True  # sends them all, under their new ids
    save(records, st, key)
    records.sync()


def status(records: MemoryStore, key: StoreKey | None) -> dict[str, Any] | None:
    """``sync status``: None if the store does not sync; ``{"error": ...}`` if its state
    cannot be read."""
    try:
        st = load(records, key)
    except (CorruptFileError, EncryptionKeyError) as e:
        return {"error": str(e)}
    if st is None:
        return None
    out = describe(st)
    where = Path(st.folder)
    out["folder_reachable"] = (where / sf.MARKER).is_file()
    pending = 0
    for d in sf.devices(where):
        if d != st.device:
            pending += len([s for s in sf.segments(where, d) if s > st.seen.get(d, 0)])
            out["devices"].setdefault(d, {"segments": 0, "last_import": None, "slot": None})
    out["segments_pending"] = pending
    clash = [d for d, s in st.slots.items() if s == st.slot and d != st.device]
    if clash:
        out["slot_clash"] = clash
    return out


def code(records: MemoryStore, key: StoreKey | None) -> str:
    st = load(records, key)
    if st is None:
        raise InvalidArgumentError(f"{records.path} does not sync")
    return join_code(st.key_bytes)
