"""Sync between one person's devices through a folder that some tool keeps in step
(Syncthing, Dropbox, iCloud Drive, a share, a USB stick, rsync).

Each device writes only its own segments (``FOLDER/<device>/<seq>.seg``: sealed with the
sync key, written once) and reads everyone else's in sequence. A step (``step``):

1. its own segments past what it knows it wrote: a device restored from an old backup
   finds its later changes there (they are imported: nothing it had synced is lost) and
   goes on numbering after them;
2. import: every other device's new segments, merged in (``apply``);
3. export: the memories this device changed since its last export (every write since then
   that carries a local change, ``stamps.written``) as their whole synced state, and the
   ids it purged, in new segments.

Only one process of a store syncs at a time (``SYNC.lock``); the others skip the step.
Derived state (catalog, index, tiers) is each device's own, rebuilt from the merged memories.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localmem.errors import (
    CorruptFileError,
    EncryptionKeyError,
    InvalidArgumentError,
    LogTruncatedError,
    StorageError,
    UnknownIdError,
)
from localmem.items import Progress
from localmem.memstore import MemoryStore
from localmem.store import records as rec
from localmem.store import syncfolder as sf
from localmem.store.crypt import StoreKey
from localmem.store.hlc import HybridClock
from localmem.sync import apply, codec, stamps
from localmem.sync.codec import Change, decode, encode
from localmem.sync.merge import Synced
from localmem.sync.state import SLOT_SPAN, SyncState, describe, join_code, key_of_code, new_slot
from localmem.sync.state import new_device as _new_device

log = logging.getLogger("localmem")

STATE_FILE, LOCK_FILE = sf.STATE_FILE, "SYNC.lock"
SEGMENT_CHANGES = 4096  # changes per segment: a few MiB with vectors
BUSY = {"busy": True}


class SyncFolderError(StorageError):
    """The sync folder cannot be used now (missing, not mounted, another folder's)."""


# ---------------------------------------------------------------------- the state file


def load(records: MemoryStore, key: StoreKey | None) -> SyncState | None:
    path = records.path / STATE_FILE
    raw = sf.read_state(path, None if key is None else key.native)
    return None if raw is None else SyncState.from_bytes(raw, path)


def save(records: MemoryStore, st: SyncState, key: StoreKey | None) -> None:
    sf.write_state(records.path / STATE_FILE, st.to_bytes(), None if key is None else key.native)


@contextmanager
def _exclusive(records: MemoryStore) -> Iterator[bool]:
    """True while this process alone syncs the store; False if another does."""
    fd = os.open(records.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- set-up


def attach(records: MemoryStore, key: StoreKey | None) -> SyncState | None:
    """At open: a store that syncs stamps its writes and issues ids from its own range."""
    st = load(records, key)
    if st is None:
        return None
    lo, hi = st.span
    records.id_span = st.span
    records.id_floor = max([t + 1 for t in st.tombstones if lo <= t < hi], default=0)
    wall = records.clock
    records.stamper = stamps.Stamper(
        st.device, HybridClock(st.hlc, wall=lambda: int(wall() * 1000))
    )
    exported = [st.exported_lsn]
    records.store.retain(lambda: exported[0])  # what the next export reads of the log
    records.sync_exported = exported
    return st


def _folder(path: Any) -> Path:
    p = Path(os.fspath(path)).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise InvalidArgumentError(f"{p} is not a folder")
    return p


def init(records: MemoryStore, key: StoreKey | None, folder: Any) -> str:
    """Sets sync up in a new ``folder`` with this store as its first device; returns the
    join code the others need (see ``state``)."""
    _not_yet(records, key)
    folder = _folder(folder)
    if sf.read_marker(folder) is not None:
        raise InvalidArgumentError(
            f"{folder} is a sync folder already: join it (`localmem sync join {folder}` with "
            "the code a device that syncs shows)"
        )
    raw = sf.new_key()
    sf.write_marker(folder, sf.aead_key(raw))
    st = SyncState(device=_new_device(), slot=0, folder=str(folder), key=raw.hex())
    big = [i for i in records.store_ids() if i >= SLOT_SPAN]
    if big:  # ids past slot 0's range (a store of over a billion writes): renumbered
        _renumber(records, big, st)
    save(records, st, key)
    attach(records, key)
    return join_code(raw)


def join(records: MemoryStore, key: StoreKey | None, folder: Any, code: str) -> SyncState:
    """Makes this store a device of the sync folder ``folder`` (set up by ``init`` on
    another device), with the key the join ``code`` carries. Memories this store already
    holds get ids from its own range, and are synced like the others."""
    _not_yet(records, key)
    raw = key_of_code(code)
    folder = _folder(folder)
    marker = sf.read_marker(folder)
    if marker is None:
        raise SyncFolderError(
            f"{folder} is not a sync folder (no {sf.MARKER}): give the folder `localmem sync "
            "init` made, once the sync tool has copied it here"
        )
    k = sf.aead_key(raw)
    if marker["key_id"] != sf.key_id(k):
        raise EncryptionKeyError(f"this join code is another sync folder's, not {folder}'s")
    taken = {0, *_announced(folder, k).values()}
    st = SyncState(device=_new_device(), slot=new_slot(taken), folder=str(folder), key=raw.hex())
    mine = [i for i in records.store_ids()]
    if mine:
        _renumber(records, mine, st)
    save(records, st, key)
    attach(records, key)
    return st


def _not_yet(records: MemoryStore, key: StoreKey | None) -> None:
    st = load(records, key)
    if st is not None:
        raise InvalidArgumentError(
            f"{records.path} syncs with {st.folder} already (device {st.device[:8]})"
        )


def _announced(folder: Path, k: Any) -> dict[str, int]:
    """device -> the slot its first segment announces."""
    out = {}
    for d in sf.devices(folder):
        try:
            segs, _ = sf.read_new(folder, d, 0, k)
        except EncryptionKeyError:  # another folder's device, copied in by mistake
            continue
        if segs:
            try:
                slot = codec.info(segs[0].payload).get("slot")
            except ValueError:
                continue
            if isinstance(slot, int):
                out[d] = slot
    return out


def _renumber(records: MemoryStore, ids: list[int], st: SyncState) -> None:
    """Memories ``ids`` again under new ids from ``st``'s range (written, then the old ones
    deleted: a crash between leaves both, never neither), references between them kept."""
    records.id_span = st.span
    new = dict(zip(ids, records.new_ids(len(ids)), strict=True))
    for i in range(0, len(ids), 1024):
        puts = []
        for old in ids[i : i + 1024]:
            try:
                it = records.store.get(old)
            except UnknownIdError:
                continue
            meta = dict(it.meta)
            meta.pop("sync", None)
            for ref in ("superseded_by", "merged_into"):
                if meta.get(ref) in new:
                    meta[ref] = new[meta[ref]]
            puts.append((new[old], it.text, meta, it.vector, meta.get("tier") == "warm"))
        records.store.put_many(puts)
        for old in ids[i : i + 1024]:
            records.store.delete(old)
    records.sync()


# ---------------------------------------------------------------------- a step


def step(
    records: MemoryStore,
    key: StoreKey | None,
    *,
    folder: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One sync step (see the module doc); returns what it did. ``folder``: where the sync
    folder is now, when it moved (remembered)."""
    with _exclusive(records) as mine:
        if not mine:
            return dict(BUSY)
        st = load(records, key)
        if st is None:
            raise InvalidArgumentError(
                f"{records.path} does not sync: `localmem sync init FOLDER` on the first "
                "device, `localmem sync join FOLDER --code ...` on the others"
            )
        if records.stamper is None:
            attach(records, key)
        if folder is not None:
            st.folder = str(_folder(folder))
        where = Path(st.folder)
        k = sf.aead_key(st.key_bytes)
        marker = sf.read_marker(where) if where.is_dir() else None
        if marker is None:
            raise SyncFolderError(
                f"the sync folder {where} is not there (not mounted, or moved: "
                "`localmem sync --folder NEW_PATH`)"
            )
        if marker["key_id"] != sf.key_id(k):
            raise EncryptionKeyError(f"{where} is another sync folder (its key differs)")
        clock = records.stamper.clock  # type: ignore[union-attr]
        clock.observe(st.hlc)
        records.sync()
        report: dict[str, Any] = {"imported": 0, "exported": 0, "embedded": 0, "waiting": {}}
        tombs = set(st.tombstones)
        # Its own segments first (a restore from a backup: numbering goes on after them),
        # then its changes out, then the others' in: an export never reads the imports.
        if _own_segments(records, st, k, tombs, report):
            _export(records, st, k, tombs, report, key)
        for device in sf.devices(where):
            if device == st.device:
                continue
            try:
                segs, scan = sf.read_new(where, device, st.seen.get(device, 0), k)
            except EncryptionKeyError:  # another folder's device, copied in by mistake
                report["waiting"][device] = "sealed with another sync key"
                continue
            for seg in segs:
                _import(records, st, seg, tombs, report)
                save(records, st, key)
            if scan.waiting:
                report["waiting"][device] = scan.waiting
        st.tombstones = sorted(tombs)
        st.hlc = max(st.hlc, clock.last)
        st.last_sync = time.time()
        save(records, st, key)
        if records.sync_exported is not None:  # what this process's checkpoints keep
            records.sync_exported[0] = st.exported_lsn
        report["conflicts_resolved"] = st.conflicts
        return report


def _own_segments(
    records: MemoryStore, st: SyncState, k: Any, tombs: set[int], report: dict[str, Any]
) -> bool:
    """This device's segments past ``st.seq`` (a crash after writing one, or a restore
    from a backup): imported like another's. False while one of them does not read yet."""
    for tmp in sf.stray_temporaries(Path(st.folder), st.device):
        tmp.unlink(missing_ok=True)
    segs, scan = sf.read_new(Path(st.folder), st.device, st.seq, k)
    for seg in segs:
        _import(records, st, seg, tombs, report, own=True)
    if scan.waiting and scan.later:
        report["waiting"][st.device] = scan.waiting
        return False
    return True


def _import(
    records: MemoryStore,
    st: SyncState,
    seg: sf.Segment,
    tombs: set[int],
    report: dict[str, Any],
    own: bool = False,
) -> None:
    try:
        info, changes = decode(seg.payload)
    except ValueError as e:  # authentic, but not what this version writes: skipped, counted
        log.warning("sync: segment %d of device %s refused: %s", seg.seq, seg.device[:8], e)
        st.rejected += 1
        changes, info = [], {}
    if isinstance(info.get("slot"), int):
        st.slots[seg.device] = int(info["slot"])
    done = apply.apply(records, changes, tombs)
    records.stamper.clock.observe(min(done.newest, 2**63 - 1))  # type: ignore[union-attr]
    st.imported += done.written + done.purged
    st.conflicts += done.conflicts
    st.rejected += done.rejected
    report["imported"] += done.written + done.purged
    report["embedded"] += done.embedded
    if own:
        st.seq = max(st.seq, seg.seq)
    else:
        st.seen[seg.device] = seg.seq
        st.last_import[seg.device] = time.time()
    st.tombstones = sorted(tombs)


def _export(
    records: MemoryStore,
    st: SyncState,
    k: Any,
    tombs: set[int],
    report: dict[str, Any],
    key: StoreKey | None,
) -> None:
    store = records.store
    upto = store.last_lsn
    ids: dict[int, bool] = {}  # id -> whether its vector travels
    gone: set[int] = set()
    full = st.full
    if not full:
        try:
            for lsn, rtype, payload in store.changes(st.exported_lsn):
                if lsn > upto:
                    break
                if rtype == rec.PUT:
                    item = rec.decode_put(payload)
                    w = stamps.written(item.meta)
                    if w:
                        ids[item.id] = ids.get(item.id, False) or w == 2
                elif rtype == rec.DELETE:
                    gone.add(rec.delete_id(payload))
        except LogTruncatedError:  # a checkpoint dropped part of it: everything, once
            full = True
    if full:  # what this device wrote (before sync was set up, or since): not its imports
        ids, gone = {}, set()
        for id in store.ids():
            try:
                meta = store.get(id).meta
            except (UnknownIdError, CorruptFileError):
                continue
            if "sync" not in meta or stamps.written(meta):
                ids[id] = True
    out: list[Change] = []
    me = st.device
    for id in sorted(ids):
        try:
            it = store.get(id)
        except UnknownIdError:
            continue  # deleted since: its purge goes out below if this device made it
        if it.meta.get("type") != "memory":
            continue
        hot = ids[id] and it.vector is not None and it.meta.get("tier", "hot") == "hot"
        out.append(Change(id, stamps.state(it), it.vector if hot else None,
                          str(it.meta.get("model", "")) if hot else ""))  # fmt: skip
    clock = records.stamper.clock  # type: ignore[union-attr]
    for id in sorted(gone - tombs):
        # Purged here, and back since from an import of an older change (the purge was not
        # a tombstone yet): a purge is final, so it goes again.
        store.delete(id)
        out.append(Change(id, Synced(purged=(clock.now(), me))))
        tombs.add(id)
    for i in range(0, len(out), SEGMENT_CHANGES):
        payload = encode(out[i : i + SEGMENT_CHANGES], {"slot": st.slot})
        sf.write_segment(Path(st.folder), me, st.seq + 1, k, payload)
        st.seq += 1
        st.exported += len(out[i : i + SEGMENT_CHANGES])
        st.tombstones = sorted(tombs)
        save(records, st, key)
    if not out and st.seq == 0:  # announce the slot even with nothing to send
        sf.write_segment(Path(st.folder), me, 1, k, encode([], {"slot": st.slot}))
        st.seq = 1
    st.exported_lsn, st.full = upto, False
    report["exported"] += len(out)


def status(records: MemoryStore, key: StoreKey | None) -> dict[str, Any] | None:
    """``sync status``: None if the store does not sync."""
    st = load(records, key)
    if st is None:
        return None
    out = describe(st)
    where = Path(st.folder)
    out["folder_reachable"] = where.is_dir() and (where / sf.MARKER).exists()
    pending = 0
    if out["folder_reachable"]:
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
