"""``Store``: one directory, one log, several views.

The log (``wal/``) is the truth: every mutation is one record, committed when the record is
durable under the sync mode. The views are derived from it and record how far they got:
the blob arena (``arena/``, texts + metadata + fp32 vectors, mmap'd), the INT8 index
(``index/``, saved at checkpoints) and, in the layers above, ``catalog.sqlite``. Opening a
store replays the log past each view; applying a record twice has the effect of once.

Several processes may open one store. Writes take an exclusive ``flock`` on ``LOCK``,
first catch up with whatever the others wrote, then append; every call of any process
starts by reading the log's new records, so each sees the others' committed writes.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from localmem import _core
from localmem.errors import (
    ConcurrencyError,
    InvalidArgumentError,
    LogTruncatedError,
    StorageError,
    UnknownIdError,
)
from localmem.files import fsync_dir
from localmem.paths import store_path
from localmem.store import records as rec
from localmem.store import swap
from localmem.store.crypt import StoreKey, check_key
from localmem.store.index import Int8Index
from localmem.store.lock import StoreLock
from localmem.store.manifest import Manifest
from localmem.store.records import Item
from localmem.store.views import StoreViews, _Reload

log = logging.getLogger("localmem.store")

SyncMode = Literal["always", "batch", "off"]

_RECORD_OVERHEAD = 24  # log record header


class _Pending:
    """Records one thread hands to the combiner (see Store._submit)."""

    __slots__ = ("done", "error", "last", "records")

    def __init__(self, records: Sequence[tuple[int, bytes]]) -> None:
        self.records = records
        self.last = 0
        self.error: BaseException | None = None
        self.done = False


class Store(StoreViews):
    """A durable store of items (id, text, metadata, optional vector) on one directory.

    Open with :meth:`Store.open`; use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, *, _token: object = None, **options: Any) -> None:
        if _token is not _OPEN_TOKEN:
            raise TypeError("use Store.open(path, ...) to open a store")
        self.path = path
        self._opt = options
        self._mu = threading.RLock()
        self._queue: deque[_Pending] = deque()
        self._retainers: list[Callable[[], int]] = []
        self.recovery: list[dict[str, Any]] = []  # repairs this process made, newest last
        self._closed = False
        self._key = options["key"]
        # Held while open, so `localmem encrypt` can tell that nobody else has the store.
        self._presence = swap.enter(path) if options["presence"] else None
        self._lock = StoreLock(path / "LOCK", timeout=options["lock_timeout"])
        self._writer = _core.StoreWriter(self._lock.native)
        self._pid = os.getpid()
        self._opened_by_parent = False  # set in a forked child by _mark_forked
        _OPEN_STORES.add(self)
        self._manifest_path = str(path / "MANIFEST")
        self._wal: _core.Wal | None = None
        self._arena: _core.BlobArena
        self._manifest: Manifest
        self._manifest_sig: tuple[int, int, int] | None = None
        self._handles: dict[int, tuple[int, int]] = {}
        self._blob_at: dict[int, tuple[int, int]] = {}  # lsn -> scanned blob not yet applied
        self._index: Int8Index | None = None
        self._index_lsn = 0
        self._arena_lsn = 0
        self._applied = 0
        self._log_bytes = 0
        # One automatic checkpoint at a time: every writer thread crosses the threshold at
        # once, and each queueing for its own checkpoint stalled all of them (16 threads:
        # 16 checkpoints back to back).
        self._auto_checkpoint = threading.Lock()
        try:
            with self._lock:
                self._load_locked()
        except BaseException:
            if self._presence is not None:
                self._presence.close()
            raise

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        dim: int | None = None,
        metric: Literal["cos", "ip"] = "cos",
        sync: SyncMode = "batch",
        create: bool = True,
        lock_timeout: float = 30.0,
        checkpoint_bytes: int = 64 << 20,
        segment_bytes: int = 64 << 20,
        group_commit_us: int = 0,
        key: StoreKey | None = None,
        presence: bool = True,
    ) -> Store:
        """Opens (or creates) the store at ``path`` (default: ``$LOCALMEM_STORE`` or the
        user data directory).

        ``dim``/``metric`` fix the vector space when the store is created (``dim=None``: no
        vectors); an existing store must be opened with the same values or without them.
        ``sync``: ``"batch"`` (default; group commit: a write returns once durable, and
        concurrent writes share one fdatasync), ``"always"`` (one fdatasync per write) or
        ``"off"`` (no fsync: bulk import and tests only; survives kill -9, not power loss).
        A checkpoint runs by itself whenever the log grows by ``checkpoint_bytes``.
        ``key``: the data key of an encrypted store (one with a ``KEY`` file; see
        keyfile.py, which also makes one); every file is then sealed with it.
        ``presence=False`` is for ``localmem encrypt`` alone, which holds the store's
        presence lock exclusively itself (see lock.Presence).
        """
        if sync not in ("always", "batch", "off"):
            raise InvalidArgumentError(f"sync must be 'always', 'batch' or 'off', got {sync!r}")
        if metric not in ("cos", "ip"):
            raise InvalidArgumentError(f"metric must be 'cos' or 'ip', got {metric!r}")
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise InvalidArgumentError(f"dim must be a positive int or None, got {dim!r}")
        if checkpoint_bytes < 1 << 16:
            raise InvalidArgumentError("checkpoint_bytes must be at least 64 KiB")
        p = store_path(path)
        if not p.exists():
            swap.finish_switch(p)  # a switch interrupted between its two renames
        if not p.exists():
            if not create:
                raise FileNotFoundError(f"no store at {p} (pass create=True to make one)")
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            fsync_dir(p.parent, required=False)  # its directory entry survives a power cut
        elif not p.is_dir():
            raise InvalidArgumentError(f"{p} exists and is not a directory")
        check_key(p, key)
        return cls(
            p, _token=_OPEN_TOKEN, dim=dim, metric=metric, sync=sync, create=create,
            lock_timeout=lock_timeout, checkpoint_bytes=checkpoint_bytes,
            segment_bytes=segment_bytes, group_commit_us=group_commit_us, key=key,
            presence=presence,
        )  # fmt: skip

    def refresh(self) -> None:
        """Applies what other processes committed since this process last looked. Every
        public call does this first; call it directly to pick up changes eagerly."""
        self._check_open()
        assert self._wal is not None
        with self._mu:
            try:
                if self._manifest_changed():
                    raise _Reload()
                last = self._wal.refresh()
                if last == self._applied:
                    return
                self._take_drained()
                self._take_scan(self._arena.refresh(last))
                if self._replay_locked(last, writer=False):
                    return
            except (_Reload, ConcurrencyError):
                with self._lock:
                    self._load_locked()
                return
            # A blob is missing: its writer is mid-write or died. Take the lock and finish.
            with self._lock:
                self._catch_up_locked(reading=True)

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self._check_open()
        with self._mu, self._lock:
            self._catch_up_locked()
            yield

    def _append_locked(self, records: Sequence[tuple[int, bytes]]) -> int:
        assert self._wal is not None
        for attempt in (1, 2):
            try:
                if len(records) == 1:
                    last = int(self._wal.append(*records[0]))
                else:
                    types = [t for t, _ in records]
                    last = int(self._wal.append_batch(types, [p for _, p in records]))
                break
            except ConcurrencyError:
                if attempt == 2:
                    raise
                self._catch_up_locked(repair=True)  # a dead writer's torn record
        first = last - len(records) + 1
        blobs = self._append_blobs(first, records)
        for i, (rtype, payload) in enumerate(records):
            self._apply(first + i, rtype, payload, blobs.get(first + i))
            self._log_bytes += len(payload) + _RECORD_OVERHEAD
        self._attach_locked()
        return last

    def _write(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Logs records and returns the last LSN once durable. The native path (no GIL, no
        Python lock) serves the common case; the views pick the records up from the log on
        the next call. When this process's view is stale, the Python path catches up first."""
        self._check_open()
        keys, flags, mask = [], [], []
        for rtype, payload in records:
            blob = rec.blob_key(rtype, payload)
            key, flag = blob if blob is not None else (0, 0)
            keys.append(key)
            flags.append(flag)
            mask.append(int(blob is not None))
        with _may_reach_the_log():
            lsn = int(
                self._writer.put(
                    [t for t, _ in records],
                    keys,
                    flags,
                    mask,
                    [p for _, p in records],
                    self._lock.timeout,
                )
            )
        return self._written(lsn, records)

    def _written(self, lsn: int, records: Sequence[tuple[int, bytes]]) -> int:
        """After the native write path: 0 means this process's view was stale and nothing
        was written, so the Python path catches up and writes."""
        if lsn == 0:
            return self._submit(records)
        self._log_bytes += sum(len(p) + _RECORD_OVERHEAD for _, p in records)
        self._maybe_checkpoint()
        return lsn

    def _maybe_checkpoint(self) -> None:
        """The automatic checkpoint, after a write has committed: its failure must not turn
        that write into an error (the write is durable), so it is logged and retried later."""
        if self._log_bytes <= self._opt["checkpoint_bytes"]:
            return
        if not self._auto_checkpoint.acquire(blocking=False):
            return  # another thread is checkpointing right now
        try:
            if self._log_bytes > self._opt["checkpoint_bytes"]:
                self.checkpoint()
        except Exception as e:
            log.warning("store %s: automatic checkpoint failed, will retry: %s", self.path, e)
        finally:
            self._auto_checkpoint.release()

    def _submit(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Appends records and returns the last LSN once durable. Threads that write at the
        same moment are combined: whichever holds the lock appends every queued record with
        one write; the others find their LSNs assigned when their turn comes, and all wait
        for the shared fsync. The lock is held for one write per group, not per record."""
        self._check_open()
        mine = _Pending(records)
        self._queue.append(mine)  # deque.append is atomic
        with self._mu:
            if not mine.done:
                group = []
                while self._queue:
                    group.append(self._queue.popleft())
                try:
                    with self._lock:
                        self._catch_up_locked()
                        flat = [r for p in group for r in p.records]
                        lsn = self._append_locked(flat) - len(flat)
                    for p in group:
                        lsn += len(p.records)
                        p.last = lsn
                except BaseException as e:
                    for p in group:
                        p.error = e
                finally:
                    for p in group:
                        p.done = True
        if mine.error is not None:
            raise mine.error
        return self._commit(mine.last)

    def _commit(self, lsn: int) -> int:
        assert self._wal is not None
        self._wal.commit(lsn)
        self._maybe_checkpoint()
        return lsn

    def put(
        self,
        id: int,
        text: str,
        *,
        meta: dict[str, Any] | None = None,
        vector: npt.ArrayLike | None = None,
        quantized: bool = False,
    ) -> int:
        """Stores (or replaces) item ``id``; returns its LSN once it is durable.
        ``quantized=True`` keeps the vector as its INT8 code (a quarter of the bytes; search
        scores are unchanged, ``get().vector`` returns the dequantized values)."""
        payload = self._encode_put(id, text, meta, vector, quantized)
        self._check_open()
        with _may_reach_the_log():
            lsn = int(
                self._writer.put_one(rec.PUT, rec.put_id(payload), 0, payload, self._lock.timeout)
            )
        return self._written(lsn, [(rec.PUT, payload)])

    def _encode_put(
        self, id: int, text: str, meta: dict[str, Any] | None, vector: Any, quantized: bool
    ) -> bytes:
        v = _as_vector(vector)
        if quantized and v is not None and self._manifest.metric == "cos":
            # Quantize the unit vector, as the index does: the code then comes back as is.
            norm = float(np.linalg.norm(v))
            v = v / norm if norm > 0 else v
        return rec.encode_put(id, text, meta, v, self._manifest.dim, quantized=quantized)

    def put_many(
        self,
        items: Iterable[tuple[Any, ...]],
    ) -> int:
        """Stores many items with one lock and one commit: ``(id, text)``,
        ``(id, text, meta, vector)`` or ``(id, text, meta, vector, quantized)`` tuples.
        Returns the last LSN (0 if ``items`` is empty). Each item is its own log record:
        after a crash, a prefix of them may be present."""
        payloads = []
        for item in items:
            quantized = False
            if len(item) == 2:
                id, text = item
                meta, vector = None, None
            elif len(item) == 4:
                id, text, meta, vector = item
            elif len(item) == 5:
                id, text, meta, vector, quantized = item
            else:
                raise InvalidArgumentError(
                    "items must be (id, text), (id, text, meta, vector) or "
                    f"(id, text, meta, vector, quantized), got {len(item)} fields"
                )
            payloads.append((rec.PUT, self._encode_put(id, text, meta, vector, bool(quantized))))
        if not payloads:
            return 0
        return self._write(payloads)

    def delete(self, id: int) -> bool:
        """Deletes item ``id``; returns False (and logs nothing) if it was not there."""
        payload = rec.encode_delete(id)
        with self._writing():
            if rec.check_id(id) not in self._handles:
                return False
            lsn = self._append_locked([(rec.DELETE, payload)])
        self._commit(lsn)
        return True

    def log(self, rtype: int, payload: bytes) -> int:
        """Appends a record of a type owned by a higher layer (``>= FIRST_USER_TYPE``); every
        process reads it back with ``changes()``. Returns its LSN once durable."""
        if not isinstance(rtype, int) or not rec.FIRST_USER_TYPE <= rtype < 2**32 - 1:
            raise InvalidArgumentError(
                f"record types below {rec.FIRST_USER_TYPE} belong to the store; got {rtype}"
            )
        lsn = self._write([(rtype, bytes(payload))])
        self.refresh()  # listeners of this process hear of it before log() returns
        return lsn

    def changes(
        self, after_lsn: int, *, max_records: int = 4096
    ) -> Iterator[tuple[int, int, bytes]]:
        """``(lsn, type, payload)`` of every record after ``after_lsn`` that this process has
        applied, oldest first: how the views of the layers above (the catalog) catch up from
        the log. Raises LogTruncatedError if a checkpoint already dropped some of them; the
        view must then rebuild itself from the items (``ids()`` + ``get()``)."""
        self.refresh()
        lsn = after_lsn
        while True:
            with self._mu:
                assert self._wal is not None
                end = self._applied
                if lsn >= end:
                    return
                try:
                    recs = self._wal.read(lsn, max_records)
                except ConcurrencyError as e:
                    raise LogTruncatedError(str(e)) from None
            for r in recs:
                if r[0] > end:
                    return
                yield int(r[0]), int(r[1]), r[2]
                lsn = int(r[0])
            if not recs:
                return

    def retain(self, applied_lsn: Callable[[], int]) -> None:
        """Registers a view kept by a layer above: checkpoints keep every log record after
        ``applied_lsn()`` so that the view can catch up from the log (see ``changes``)."""
        with self._mu:
            self._retainers.append(applied_lsn)

    def index_vectors(
        self, ids: Iterable[int]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The INT8 index's reconstruction (codes x scale) of these items' vectors, for those
        that have one: ``(ids, vectors)``. A cheap batch read: no arena access, no decoding."""
        self.refresh()
        with self._mu:
            if self._index is None:
                raise InvalidArgumentError("this store holds no vectors (created without dim)")
            have = np.fromiter((i for i in ids if i in self._index), dtype=np.int64)
            if len(have) == 0:
                return have, np.zeros((0, self._index.dim), dtype=np.float32)
            codes, scales = self._index.get_codes(have)
        return have, codes.astype(np.float32) * scales[:, None]

    # ------------------------------------------------------------------ reading

    def get(self, id: int) -> Item:
        """The item ``id``; raises UnknownIdError if the store does not hold it."""
        id = rec.check_id(id)
        self.refresh()
        with self._mu:
            handle = self._handles.get(id)
            arena = self._arena
        if handle is None:
            raise UnknownIdError(f"the store holds no item with id {id}")
        return rec.decode_put(arena.view(*handle, verify=True).data)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            return False
        self.refresh()
        with self._mu:
            return int(id) in self._handles

    def __len__(self) -> int:
        self.refresh()
        with self._mu:
            return len(self._handles)

    def ids(self) -> list[int]:
        self.refresh()
        with self._mu:
            return sorted(self._handles)

    def search(self, query: npt.ArrayLike, k: int = 10, **options: Any) -> list[tuple[int, float]]:
        """The ``k`` items whose vectors score highest against ``query``, best first, as
        ``(id, score)``. Options are those of :meth:`Int8Index.search` (allow, deny, ...)."""
        self.refresh()
        with self._mu:
            if self._index is None:
                raise InvalidArgumentError("this store holds no vectors (created without dim)")
            if len(self._index) == 0:
                return []
            ids, scores = self._index.search(query, k, **options)
        return [
            (int(i), float(s))
            for i, s in zip(ids.tolist(), scores.tolist(), strict=False)
            if i >= 0
        ]

    @property
    def dim(self) -> int | None:
        return self._manifest.dim

    @property
    def metric(self) -> str:
        return self._manifest.metric

    @property
    def last_lsn(self) -> int:
        return self._applied

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, *, compact: bool | None = None) -> dict[str, Any]:
        """Makes the views durable and drops the log below them. ``compact``: copy the
        live blobs into a new arena generation (default: when over half the arena is
        garbage). Crash-safe at every step: the manifest rename is the switch."""
        with self._writing():
            # The native writer must not append to an arena this checkpoint is replacing;
            # if the checkpoint fails part way (say ENOSPC after the manifest switch), the
            # views are reloaded from what is on disk, whichever side of the switch it is.
            self._writer.detach()
            try:
                result = self._checkpoint_locked(compact)
            except BaseException:
                self._load_locked()
                raise
            return result

    # ------------------------------------------------------------------ misc

    def stats(self) -> dict[str, Any]:
        self.refresh()
        assert self._wal is not None
        with self._mu:
            return {
                "path": str(self.path),
                "items": len(self._handles),
                "vectors": len(self._index) if self._index is not None else 0,
                "dim": self._manifest.dim,
                "metric": self._manifest.metric,
                "sync": self._opt["sync"],
                "last_lsn": self._applied,
                "checkpoint_lsn": self._manifest.checkpoint_lsn,
                "generation": self._manifest.generation,
                "arena_bytes": int(self._arena.end),
                "wal": dict(self._wal.stats()),
                "repairs": len(self.recovery),
            }

    def synced_sizes(self) -> dict[str, int]:
        """Bytes of each file known to be on stable storage (for power-cut simulation)."""
        assert self._wal is not None
        st = self._wal.stats()
        return {str(st["tail_segment"]): int(st["tail_synced"])}

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"the store at {self.path} is closed")
        if self._opened_by_parent:
            # A forked child shares the parent's lock description and log threads: the
            # lock would not exclude the two, and the log's flusher does not exist here.
            raise InvalidArgumentError(
                f"this Store was opened by process {self._pid}; a forked child must open the "
                "store again with Store.open(...)"
            )

    def close(self) -> None:
        """Releases the store's files. Safe to call twice."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
            if self._presence is not None:
                self._presence.close()
            self._writer.detach()
            self._wal = None
            self._index = None
            self._handles = {}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._handles)} items"
        return f"<Store {self.path} ({state})>"


_OPEN_TOKEN = object()
_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@contextmanager
def _may_reach_the_log() -> Iterator[None]:
    """Around the native write path, which appends the log before the arena: a storage
    failure after the log append leaves the record there, uncommitted, and a later open may
    apply it. The error keeps its class (a full disk stays a StorageFullError) and says so."""
    try:
        yield
    except StorageError as e:
        raise type(e)(
            f"{e}. The write may have reached the log: it may appear later "
            "(Memory.remember(key=...) makes a retry safe)"
        ) from e


def _mark_forked() -> None:
    """In a forked child, every Store inherited from the parent refuses further use (the
    check costs the hot path a bool, not a getpid call)."""
    for store in list(_OPEN_STORES):
        store._opened_by_parent = True


os.register_at_fork(after_in_child=_mark_forked)


def _as_vector(vector: npt.ArrayLike | None) -> np.ndarray | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32)
