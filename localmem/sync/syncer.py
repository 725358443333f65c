"""Sync between one person's devices through a folder that some tool keeps in step
(Syncthing, Dropbox, iCloud Drive, a share, a USB stick, rsync).

Each device writes only its own segments (``FOLDER/<device>/<seq>.seg``: sealed with the
sync key, written once, their device and number also inside, checked) and reads everyone
else's in sequence. A step (``step``):

1. its own segments past what it knows it wrote: a device restored from an old backup
   finds its later changes there (they are imported: nothing it had synced is lost) and
   goes on numbering after them (``catch_up`` runs this at open);
2. export: the memories this device changed since its last export (every write since then
   that carries a local change, ``stamps.written``) as their whole synced state, and the
   ids it purged, in new segments (before the import: an export never reads imports);
3. import: every other device's new segments, merged in (``apply``).

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
    UnknownIdError,
)
from localmem.memstore import MemoryStore
from localmem.memstore.edits import LOCAL_DROP, local_drop_id
from localmem.store import records as rec
from localmem.store import syncfolder as sf
from localmem.store.crypt import StoreKey
from localmem.sync import apply, setup, stamps
from localmem.sync.codec import Change, decode, encode
from localmem.sync.merge import Synced
from localmem.sync.setup import SyncFolderError, load, save
from localmem.sync.state import SyncState

log = logging.getLogger("localmem")

LOCK_FILE = "SYNC.lock"
SEGMENT_CHANGES = 4096  # changes per segment: a few MiB with vectors
READ_AHEAD = 4  # segments of one device in memory at once
BUSY = {"busy": True}


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


def behind(records: MemoryStore, key: StoreKey | None) -> bool:
    """Whether the folder holds segments of this device it does not know it wrote (it was
    restored from a backup, or crashed right after writing one): ``step`` takes them back
    before this device writes anything new."""
    try:
        st = load(records, key)
    except (CorruptFileError, EncryptionKeyError):
        return False
    if st is None:
        return False
    mine = sf.segments(Path(st.folder), st.device)
    return bool(mine) and mine[-1] > st.seq


def step(records: MemoryStore, key: StoreKey | None, *, folder: Any = None) -> dict[str, Any]:
    """One sync step (see the module doc); returns what it did. ``folder``: where the sync
    folder is now, when it moved (remembered)."""
    with _exclusive(records) as mine:
        if not mine:
            return dict(BUSY)
        st = load(records, key)
        if st is None:
            raise InvalidArgumentError(
                f"{records.path} does not sync: `localmem sync init FOLDER` on the first "
                "device, `localmem sync join FOLDER` on the others"
            )
        setup.attach(records, key)
        if folder is not None:
            st.folder = str(setup.folder_path(folder))
        where = Path(st.folder)
        k = sf.aead_key(st.key_bytes)
        _check_folder(where, st, k)
        clock = records.stamper.clock  # type: ignore[union-attr]
        clock.observe(st.hlc)
        setup.finish_renumbering(records, st, key)  # a join cut by a crash
        records.sync()
        report: dict[str, Any] = {"imported": 0, "exported": 0, "embedded": 0, "waiting": {}}
        tombs = set(st.tombstones)
        if _read(records, st, k, tombs, report, st.device, key):
            _export(records, st, k, tombs, report, key)
        for device in sf.devices(where):
            if device != st.device:
                _read(records, st, k, tombs, report, device, key)
        lo, hi = st.span
        records.id_floor = max([records.id_floor, *(t + 1 for t in tombs if lo <= t < hi)])
        st.tombstones = sorted(tombs)
        st.hlc = max(st.hlc, clock.last)
        st.last_sync = time.time()
        save(records, st, key)
        if records.sync_exported is not None:  # what this process's checkpoints keep
            records.sync_exported[0] = st.exported_lsn
        report["conflicts_resolved"] = st.conflicts
        return report


def _check_folder(where: Path, st: SyncState, k: Any) -> None:
    marker = sf.read_marker(where) if where.is_dir() else None
    if marker is None and st.slot == 0 and st.seq == 0 and _empty(where):
        sf.write_marker(where, k)  # ``init`` was cut between its state and the marker
        return
    if marker is None:
        raise SyncFolderError(
            f"the sync folder {where} is not there (not mounted, or moved: "
            "`localmem sync --folder NEW_PATH`)"
        )
    if marker["key_id"] != sf.key_id(k):
        raise EncryptionKeyError(f"{where} is another sync folder (its key differs)")


def _empty(p: Path) -> bool:
    try:
        return not any(p.iterdir())
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _read(
    records: MemoryStore,
    st: SyncState,
    k: Any,
    tombs: set[int],
    report: dict[str, Any],
    device: str,
    key: StoreKey | None,
) -> bool:
    """Imports ``device``'s segments past those already read (this device's own: past
    those it knows it wrote), a few at a time; True if nothing is left in the way."""
    own = device == st.device
    where = Path(st.folder)
    if own:
        for tmp in sf.stray_temporaries(where, device):
            tmp.unlink(missing_ok=True)
    while True:
        after = st.seq if own else st.seen.get(device, 0)
        try:
            segs, scan = sf.read_new(where, device, after, k, limit=READ_AHEAD)
        except EncryptionKeyError:  # another folder's device, copied in by mistake
            report["waiting"][device] = "sealed with another sync key"
            return False
        for seg in segs:
            why = _import(records, st, seg, tombs, report)
            if why:
                report["waiting"][device] = why
                return False
            save(records, st, key)
        if scan.waiting and scan.later:
            report["waiting"][device] = scan.waiting
            return False
        if not scan.later:
            return True


def _import(
    records: MemoryStore,
    st: SyncState,
    seg: sf.Segment,
    tombs: set[int],
    report: dict[str, Any],
) -> str:
    """Merges one segment in; "" when done, else why it waits (it is read again next
    time: a segment is never skipped)."""
    try:
        info, changes = decode(seg.payload)
    except ValueError as e:  # authentic, but not what this version writes
        log.warning("sync: segment %d of device %s: %s", seg.seq, seg.device[:8], e)
        return "written by a newer localmem? (upgrade this one)"
    if info.get("device", seg.device) != seg.device or info.get("seq", seg.seq) != seg.seq:
        return "a segment under another device's or number's name"
    if isinstance(info.get("slot"), int):
        st.slots[seg.device] = int(info["slot"])
    done = apply.apply(records, changes, tombs)
    records.stamper.clock.observe(done.newest)  # type: ignore[union-attr]
    st.imported += done.written + done.purged
    st.conflicts += done.conflicts
    st.rejected += done.rejected
    report["imported"] += done.written + done.purged
    report["embedded"] += done.embedded
    if seg.device == st.device:
        st.seq = max(st.seq, seg.seq)
    else:
        st.seen[seg.device] = seg.seq
        st.last_import[seg.device] = time.time()
    st.tombstones = sorted(tombs)
    return ""


def _scan(records: MemoryStore, st: SyncState) -> tuple[dict[int, bool], set[int], set[int], bool]:
    """What the log says this device changed since its last export: (id -> whether its
    vector travels, ids it purged, unstamped writes outside its range, whether the log was
    cut and everything must go)."""
    ids: dict[int, bool] = {}
    gone: set[int] = set()
    strays: set[int] = set()
    local: set[int] = set()  # deletions that are this device's own business
    lo, hi = st.span
    upto = records.store.last_lsn
    try:
        for lsn, rtype, payload in records.store.changes(st.exported_lsn):
            if lsn > upto:
                break
            if rtype == rec.PUT:
                item = rec.decode_put(payload)
                if item.meta.get("type") != "memory":
                    continue
                w = stamps.written(item.meta)
                if w:
                    ids[item.id] = ids.get(item.id, False) or w == 2
                elif "sync" not in item.meta and not lo <= item.id < hi:
                    strays.add(item.id)  # another process wrote it before it knew of sync
            elif rtype == LOCAL_DROP:
                id = local_drop_id(payload)
                if id is not None:
                    local.add(id)
            elif rtype == rec.DELETE:
                id = rec.delete_id(payload)
                if id not in local:
                    gone.add(id)
    except LogTruncatedError:  # a checkpoint dropped part of it: everything, once
        return {}, set(), set(), True
    return ids, gone, strays, False


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
    ids, gone, strays, full = ({}, set(), set(), True) if st.full else _scan(records, st)
    if strays - gone:  # renumbered into this device's range, then sent
        setup.plan_renumbering(records, st, sorted(strays - gone))
        save(records, st, key)
        setup.finish_renumbering(records, st, key)
        full = True
    if full:  # what this device wrote (before sync was set up, or since): not its imports
        ids = {}
        for id in store.ids():
            try:
                meta = store.get(id).meta
            except (UnknownIdError, CorruptFileError):
                continue
            if meta.get("type") == "memory" and ("sync" not in meta or stamps.written(meta)):
                ids[id] = True
    out: list[Change] = []
    me = st.device
    for id in sorted(ids):
        try:
            it = store.get(id)
        except UnknownIdError:
            continue  # deleted since: its purge goes out below if this device made it
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
    for i in range(0, max(len(out), 1 if st.seq == 0 else 0), SEGMENT_CHANGES):
        chunk = out[i : i + SEGMENT_CHANGES]  # the first one announces the slot, even empty
        info = {"slot": st.slot, "device": me, "seq": st.seq + 1}
        sf.write_segment(Path(st.folder), me, st.seq + 1, k, encode(chunk, info))
        st.seq += 1
        st.exported += len(chunk)
        st.tombstones = sorted(tombs)
        save(records, st, key)
    st.exported_lsn, st.full = upto, False
    report["exported"] += len(out)
