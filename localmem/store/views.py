"""How a Store's views follow its log: loading from the checkpoint and replaying the log
(``_load_locked``), catching up with what other processes wrote (``_catch_up_locked``),
applying records to the in-memory views (``_apply``), and writing a checkpoint that makes
them durable and lets the log below it go (``_checkpoint_locked``). A base class of
``Store``; the public API and the write paths live in store.py.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from localmem import _core
from localmem.errors import (
    ConcurrencyError,
    CorruptFileError,
    InvalidArgumentError,
    StorageError,
    StorageFullError,
)
from localmem.store import keyfile
from localmem.store import records as rec
from localmem.store.crypt import StoreKey
from localmem.store.faults import crash_point
from localmem.store.index import Int8Index
from localmem.store.lock import StoreLock
from localmem.store.manifest import (
    FORMAT,
    Manifest,
    read_manifest,
    signature,
    write_manifest,
)

log = logging.getLogger("localmem.store")

_READ_BATCH = 4096
BLOB_OVERHEAD = 32  # arena blob header


class _Reload(Exception):
    """The views must be rebuilt from the checkpoint (another process compacted)."""


class StoreViews:
    """The in-memory views of a store and how they follow the log (see module doc)."""

    path: Any
    _opt: dict[str, Any]
    _mu: threading.RLock
    _lock: StoreLock
    _writer: _core.StoreWriter
    recovery: list[dict[str, Any]]
    _wal: _core.Wal | None
    _arena: _core.BlobArena
    _manifest: Manifest
    _manifest_path: str
    _manifest_sig: tuple[int, int, int] | None
    _handles: dict[int, tuple[int, int]]
    _blob_at: dict[int, tuple[int, int]]
    _index: Int8Index | None
    _index_lsn: int
    _arena_lsn: int
    _applied: int
    _log_bytes: int
    _retainers: list[Callable[[], int]]
    _key: StoreKey | None

    @property
    def _native_key(self) -> Any:
        return None if self._key is None else self._key.native

    def _append_locked(self, records: Sequence[tuple[int, bytes]]) -> int:
        raise NotImplementedError  # Store's

    def _new_manifest_locked(self) -> Manifest:
        if (self.path / "wal").is_dir() and any((self.path / "wal").glob("*.wal")):
            raise CorruptFileError(
                f"{self.path} has a log but no MANIFEST; it was damaged or is not a store "
                "that this version of localmem created"
            )
        for sub in ("wal", "arena", "index"):
            (self.path / sub).mkdir(mode=0o700, exist_ok=True)
        m = Manifest(
            dim=self._opt["dim"],
            metric=self._opt["metric"],
            generation=1,
            checkpoint_lsn=0,
            index_file=None,
            arena_end=64,
            # An encrypted store's id is its key file's (the keyring entry is named after it).
            store_id=(keyfile.read(self.path)["store_id"] if self._key else os.urandom(8).hex()),
        )
        _core.BlobArena.create(str(self.path / m.arena_file()), m.generation, self._native_key)
        write_manifest(self.path / "MANIFEST", m, self._key)
        return m

    def _load_locked(self) -> None:
        """Reads the manifest and rebuilds every view from the checkpoint plus the log.
        Caller holds the store lock."""
        mpath = self.path / "MANIFEST"
        try:
            m = read_manifest(mpath, self._key)
        except FileNotFoundError:
            if not self._opt["create"]:
                raise FileNotFoundError(f"no store at {self.path}") from None
            m = self._new_manifest_locked()
        for name in ("dim", "metric"):
            want = self._opt[name]
            if want is not None and getattr(m, name) != want and (name != "metric" or m.dim):
                raise InvalidArgumentError(
                    f"the store at {self.path} has {name}={getattr(m, name)!r}, not {want!r}; "
                    f"open it without {name}= or with the store's value"
                )
        if m.format < FORMAT:  # raised before this version writes anything (manifest.FORMAT)
            write_manifest(mpath, m, self._key)
            m = read_manifest(mpath, self._key)
        self._manifest, self._manifest_sig = m, signature(mpath)
        # Always a fresh scan of the log directory: an older Wal object may have followed a
        # chain of segments that another process's checkpoint has deleted since. (Threads
        # still committing through the old object keep it alive; its records are on disk.)
        wal = self._wal = _core.Wal(
            str(self.path / "wal"),
            sync=self._opt["sync"],
            segment_bytes=self._opt["segment_bytes"],
            group_commit_us=self._opt["group_commit_us"],
            start_lsn=m.checkpoint_lsn + 1,
            key=self._native_key,
        )
        self._note_wal_repair(wal.recover())
        if wal.first_lsn > m.checkpoint_lsn + 1:
            raise CorruptFileError(
                f"{self.path}: log records {m.checkpoint_lsn + 1}..{wal.first_lsn - 1} are "
                "missing (log segments were deleted); the store cannot be recovered safely"
            )
        last = wal.last_lsn
        if last < m.checkpoint_lsn:
            raise CorruptFileError(
                f"{self.path}: the log ends at {last}, before the checkpoint at {m.checkpoint_lsn}"
            )

        arena_path = self.path / m.arena_file()
        if not arena_path.exists():
            raise CorruptFileError(f"{self.path}: {m.arena_file()} named by MANIFEST is missing")
        arena = _core.BlobArena(str(arena_path), m.generation, self._native_key)
        scan = arena.refresh(last)
        if scan["end"] < m.arena_end:
            raise CorruptFileError(
                f"{arena_path} is damaged at offset {scan['end']} ({scan['reason']}), inside "
                f"the part made durable by the last checkpoint ({m.arena_end} bytes); "
                "nothing was changed; restore the store from a backup"
            )
        _, repair = arena.recover(last)
        if repair["any"]:
            self._note("arena", repair)
        self._arena = arena
        self._handles = _live_handles(scan)
        self._blob_at = {}
        self._load_index_locked(m)

        # Replay: the arena is complete up to max(its last blob, checkpoint); the index up to
        # its snapshot; records before the log's first segment are in both.
        arena_lsn = max(arena.last_lsn, m.checkpoint_lsn)
        start = max(min(self._index_lsn, arena_lsn), wal.first_lsn - 1)
        self._applied = start
        self._arena_lsn = arena_lsn
        self._index_lsn = 0
        self._log_bytes = int(wal.stats()["bytes"])
        if self._replay_for_reading_locked(last):
            self._remove_unreferenced_locked()
            self._attach_locked()

    def _replay_for_reading_locked(self, upto: int) -> bool:
        """The replay of an open or of a reader that found a blob missing (store lock
        held). On a full disk the arena may not take a record the log holds (the disk
        filled between the two writes): the view then stops before it, and what is complete
        stays readable; the next write, or open, applies it once there is room. False when
        the view stopped short."""
        try:
            self._replay_locked(upto, writer=True)
            return True
        except StorageFullError as e:
            log.warning("store %s: serving what is complete up to log record %d: %s",
                        self.path, self._applied, e)  # fmt: skip
            return False

    def _attach_locked(self) -> None:
        """Hands the native write path the log and arena the views use, complete up to
        the last LSN (store lock held, views caught up)."""
        assert self._wal is not None and self._applied == self._wal.last_lsn
        self._writer.attach(self._wal, self._arena, self._applied)

    def _take_drained(self) -> None:
        """Blob offsets of the records the native write path appended, for replay."""
        for lsn, off, length in self._writer.drain():
            self._blob_at[lsn] = (off, length)
            self._arena_lsn = max(self._arena_lsn, lsn)

    def _load_index_locked(self, m: Manifest) -> None:
        self._index, self._index_lsn = None, 0
        if m.dim is None:
            return
        if m.index_file is not None:
            try:
                self._index = Int8Index.load(self.path / m.index_file, key=self._native_key)
                self._index_lsn = m.checkpoint_lsn
                return
            except (CorruptFileError, StorageError, OSError) as e:
                self._note("index", {"reason": str(e), "action": "rebuilt from the arena"})
        # No usable snapshot: rebuild from the fp32 vectors kept in the arena.
        index = Int8Index(m.dim, metric=m.metric)  # type: ignore[arg-type]
        ids, vecs = [], []
        for id, (off, length) in self._handles.items():
            try:
                v = rec.put_vector(self._arena.view(off, length).data)
            except CorruptFileError as e:  # (encrypted) a blob that fails authentication
                self._note("index", {"reason": str(e), "action": f"item {id} left out"})
                continue
            if v is not None:
                ids.append(id)
                vecs.append(v)
        if ids:
            index.add(np.asarray(ids, dtype=np.int64), np.stack(vecs))
        self._index = index
        self._index_lsn = max(self._arena.last_lsn, m.checkpoint_lsn)

    def _note_wal_repair(self, damage: dict[str, Any]) -> None:
        if damage["any"]:
            self._note("wal", damage)

    def _note(self, part: str, report: dict[str, Any]) -> None:
        entry = {"part": part, **report}
        self.recovery.append(entry)
        log.warning("store %s: repaired %s: %s", self.path, part, report)

    def _remove_unreferenced_locked(self) -> None:
        """Deletes files no manifest names any more: arena generations and index snapshots
        left by a checkpoint that was interrupted, and temporary files."""
        m = self._manifest
        keep = {m.arena_file(), m.index_file}
        for sub in ("arena", "index"):
            for f in (self.path / sub).iterdir():
                rel = f"{sub}/{f.name}"
                if rel not in keep and (f.suffix in (".blob", ".lmix") or ".tmp-" in f.name):
                    f.unlink(missing_ok=True)
        for f in self.path.glob("MANIFEST.tmp-*"):
            f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ following the log

    def _replay_locked(self, upto: int, *, writer: bool) -> bool:
        """Applies log records (applied, upto]. A writer (holding the store lock) appends
        the arena blobs that are missing; a reader stops before such a record and returns
        False."""
        assert self._wal is not None
        while self._applied < upto:
            try:
                batch = self._wal.read(self._applied, _READ_BATCH, 16 << 20)
            except ConcurrencyError as e:
                raise _Reload() from e
            if not batch:
                raise CorruptFileError(f"{self.path}: log record {self._applied + 1} is unreadable")
            for lsn, rtype, payload in batch:
                if lsn > upto:
                    return True
                blob = None
                if rtype in (rec.PUT, rec.DELETE):
                    blob = self._blob_at.pop(lsn, None)
                    if blob is None and lsn > self._arena_lsn:
                        if not writer:
                            return False
                        blob = self._append_blobs(lsn, [(rtype, payload)])[lsn]
                self._apply(lsn, rtype, payload, blob)
        return True

    def _append_blobs(
        self, first: int, records: Sequence[tuple[int, bytes]]
    ) -> dict[int, tuple[int, int]]:
        """The arena blobs of a run of just-logged records, with one write."""
        keys, lsns, flags, payloads = [], [], [], []
        for i, (rtype, payload) in enumerate(records):
            blob = rec.blob_key(rtype, payload)
            if blob is None:
                continue
            keys.append(blob[0])
            flags.append(blob[1])
            lsns.append(first + i)
            payloads.append(payload)
        if not lsns:
            return {}
        try:
            try:
                offsets = self._arena.append_batch(keys, lsns, flags, payloads)
            except ConcurrencyError:  # a dead writer's torn blob: cut it, then append
                self._repair_arena_locked()
                offsets = self._arena.append_batch(keys, lsns, flags, payloads)
        except StorageError as e:  # its class kept: a full disk stays a StorageFullError
            raise type(e)(
                f"{e}. The log holds the write (LSNs {lsns[0]}..{lsns[-1]}) but the arena "
                "could not take it: free some disk space; the store applies it on its next "
                "write or open, so the write may appear later."
            ) from e
        self._arena_lsn = lsns[-1]
        extra = int(self._arena.overhead)
        return {
            lsn: (int(off), len(p) + extra)
            for lsn, off, p in zip(lsns, offsets, payloads, strict=True)
        }

    def _apply(self, lsn: int, rtype: int, payload: bytes, blob: tuple[int, int] | None) -> None:
        if rtype == rec.PUT:
            id = rec.put_id(payload)
            if blob is not None:
                self._handles[id] = blob
            if self._index is not None and lsn > self._index_lsn:
                vec = rec.put_vector(payload)
                self._index.remove(id, missing_ok=True)
                if vec is not None:
                    self._index.add(np.asarray([id], dtype=np.int64), vec.reshape(1, -1))
        elif rtype == rec.DELETE:
            id = rec.delete_id(payload)
            if blob is not None:
                self._handles.pop(id, None)
            if self._index is not None and lsn > self._index_lsn:
                self._index.remove(id, missing_ok=True)
        # Records of higher-layer types (>= FIRST_USER_TYPE) are theirs to apply: the layers
        # above pull them with Store.changes() (no callbacks run under the store's locks).
        self._applied = lsn

    def _take_scan(self, scan: dict[str, Any]) -> None:
        if not len(scan["lsns"]):
            return
        for lsn, off, length in zip(
            scan["lsns"].tolist(), scan["offsets"].tolist(), scan["lengths"].tolist(), strict=False
        ):
            self._blob_at[lsn] = (off, length)
        if len(scan["lsns"]):
            self._arena_lsn = max(self._arena_lsn, int(scan["lsns"][-1]))

    def _manifest_changed(self) -> bool:
        """Re-reads MANIFEST if another process replaced it; True if the views must be
        rebuilt (a new arena generation, or a checkpoint past what this process applied)."""
        mpath = self._manifest_path
        sig = signature(mpath)
        if sig == self._manifest_sig:
            return False
        m = read_manifest(mpath, self._key)
        old = self._manifest
        self._manifest, self._manifest_sig = m, sig
        return m.generation != old.generation or self._applied < m.checkpoint_lsn

    def _catch_up_locked(self, *, repair: bool = False, reading: bool = False) -> None:
        """Writer side (store lock held): apply what others wrote; with ``repair`` (or when
        the log moved), also cut torn tails left by a writer that died. ``reading``: for a
        read, so a full disk leaves the view behind instead of failing the read."""
        assert self._wal is not None
        try:
            if self._manifest_changed():
                raise _Reload()
            if self._wal.refresh() == self._applied and not repair:
                return  # nothing new (a torn tail makes the append raise: repair=True)
            self._take_drained()
            self._note_wal_repair(self._wal.recover())
            self._repair_arena_locked()
            if reading:
                if self._replay_for_reading_locked(self._wal.last_lsn):
                    self._attach_locked()
                return
            self._replay_locked(self._wal.last_lsn, writer=True)
            self._attach_locked()
        except (_Reload, ConcurrencyError):
            self._load_locked()

    def _repair_arena_locked(self) -> None:
        """Cuts a torn blob left by a writer that died. Blobs past the end of the log mean
        this process's view of the log is stale (never that the blobs are orphans: only a
        fresh scan at load may decide that), so they trigger a reload instead."""
        assert self._wal is not None
        last = self._wal.last_lsn
        scan = self._arena.refresh(last)
        self._take_scan(scan)
        if scan["stop"] == "beyond":
            raise _Reload()
        _, repair = self._arena.recover(last)
        if repair["any"]:
            self._note("arena", repair)

    def _checkpoint_locked(self, compact: bool | None) -> dict[str, Any]:
        assert self._wal is not None
        m = self._manifest
        last = self._applied
        self._wal.sync()
        self._arena.sync()
        end = int(self._arena.end)
        live = 64 + sum(length + BLOB_OVERHEAD for _, length in self._handles.values())
        if compact is None:
            # Compaction copies only the live bytes, so doing it when garbage outweighs them
            # costs at most one copy per byte written; the 256 KiB floor keeps small arenas
            # from being rewritten for a few forgotten memories. (At 1 MiB, a store with
            # forgetting swelled past one without it between compactions: every tier move
            # rewrites an item, and a year's store holds only ~300 KB live.)
            compact = end - live > (1 << 18) and live < end // 2
        arena, handles, gen = self._arena, self._handles, m.generation
        if compact:
            gen += 1
            ids = np.fromiter(handles.keys(), dtype=np.int64, count=len(handles))
            offs = np.fromiter(
                (h[0] for h in handles.values()), dtype=np.uint64, count=len(handles)
            )
            lens = [h[1] for h in handles.values()]
            order = np.argsort(offs, kind="stable")
            new_file = self.path / f"arena/gen-{gen:06d}.blob"
            placed = arena.copy_to(str(new_file), gen, offs[order])
            crash_point("checkpoint:after-arena")
            arena = _core.BlobArena(str(new_file), gen, self._native_key)
            arena.refresh(last)
            handles = {int(ids[j]): (int(placed[i]), lens[j]) for i, j in enumerate(order.tolist())}
        index_file = m.index_file
        if self._index is not None:
            index_file = f"index/int8-{last:016x}.lmix"
            self._index.save(self.path / index_file, key=self._native_key)
            crash_point("checkpoint:after-index")
        new = replace(
            m,
            generation=gen,
            checkpoint_lsn=last,
            index_file=index_file,
            arena_end=int(arena.end),
        )
        write_manifest(self.path / "MANIFEST", new, self._key)
        crash_point("checkpoint:after-manifest")
        self._manifest, self._manifest_sig = new, signature(self.path / "MANIFEST")
        self._arena, self._handles = arena, handles
        self._arena_lsn = max(int(arena.last_lsn), last)
        self._wal.rotate()  # so that the whole log the checkpoint covers can go
        # A marker record: every other writer's next append finds the log moved and
        # re-reads the manifest before it writes.
        self._append_locked([(rec.CHECKPOINT, struct.pack("<Q", gen))])
        self._remove_unreferenced_locked()
        keep_from = last + 1
        for needed in self._retainers:
            # A view above (the catalog) has not applied these yet: keep them in the log.
            keep_from = min(keep_from, int(needed()) + 1)
        dropped = int(self._wal.truncate_before(keep_from))
        crash_point("checkpoint:after-truncate")
        self._log_bytes = int(self._wal.stats()["bytes"])
        return {
            "checkpoint_lsn": last,
            "compacted": bool(compact),
            "generation": gen,
            "arena_bytes_before": end,
            "arena_bytes": int(arena.end),
            "segments_dropped": dropped,
        }


def _live_handles(scan: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """id -> (offset, length) of the newest blob of each key that is not a tombstone."""
    keys = scan["keys"]
    if len(keys) == 0:
        return {}
    rev = keys[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    last = len(keys) - 1 - first_in_rev
    last = last[(scan["flags"][last] & rec.TOMBSTONE) == 0]
    return dict(
        zip(
            keys[last].tolist(),
            zip(scan["offsets"][last].tolist(), scan["lengths"][last].tolist(), strict=False),
            strict=False,
        )
    )
