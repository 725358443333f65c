"""``MemoryStore``: the record layer under ``Memory`` — one log store, its catalog and the
embedder, kept in step.

A memory is one store item (text, metadata, embedding) written through the log; the catalog
(SQLite: metadata, FTS5, entities) and the INT8 index are views of that log. ``sync()``
brings the catalog up to the log, so a memory written by another process (the MCP server,
the TUI) is visible on the next call. Everything that writes a memory goes through here:
new memories (``write``), a memory in another tier's form (``rewrite``), new text
(``retext``), another model's vectors (``reembed``), and whatever else writes (records an
export file holds, ``imports``; another device's changes, ``localmem.sync``) through
``put_many`` or the store itself.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from localmem.catalog import Catalog, Row, full_row, item_row, memmeta
from localmem.embed import Embedder
from localmem.errors import (
    CorruptFileError,
    LogTruncatedError,
    ModelMismatchError,
    StorageError,
    UnknownIdError,
)
from localmem.items import MemoryItem, Progress
from localmem.memstore import edits, forms, reconcile
from localmem.store import Store, keyfile, syncfolder
from localmem.store import records as rec
from localmem.store.crypt import StoreKey
from localmem.text.validate import check_item_dict, to_timestamp

log = logging.getLogger("localmem")

F = TypeVar("F", bound=Callable[..., Any])
#: (puts, the items they replace: None for a new one) -> the puts to write.
Stamp = Callable[[list[tuple[Any, ...]], Mapping[int, "rec.Item | None"]], list[tuple[Any, ...]]]


def heals(method: F) -> F:
    """For a method of an object with a ``records`` (MemoryStore): a call that meets a
    damaged catalog (SQLite has no checksums of its own: a bad page is an error on read)
    rebuilds it from the store and runs again; if it fails again, the error says what
    fixes it."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except reconcile.DAMAGE as e:
            self.records.heal(e)
        try:
            return method(self, *args, **kwargs)
        except reconcile.DAMAGE as e:
            raise CorruptFileError(
                f"the catalog of {self.records.path} is damaged and a rebuild did not help "
                f"({e}): run `localmem repair`, and check the disk"
            ) from e

    return call  # type: ignore[return-value]


class MemoryStore:
    """Store + Catalog + Embedder. Thread-safe; ``open`` makes one, ``close`` releases it."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        embedder: Embedder,
        *,
        clock: Callable[[], float] = time.time,
        catalog_key: bytes | None = None,
    ) -> None:
        self.store, self._catalog, self.embedder = store, catalog, embedder
        # An encrypted store's catalog key, for every catalog made anew (a heal, a repair).
        self.catalog_key = catalog_key
        self.clock = clock
        self._ids = threading.Lock()
        self._heal_lock = threading.Lock()
        self._catalog_lsn = catalog.applied_lsn  # what the log must keep for the catalog
        # Sync (``localmem.sync``) sets these on a device that syncs: every memory write
        # passes through ``stamper`` (its fields' clocks), and new ids come from ``id_span``.
        self.stamper: Stamp | None = None
        self.id_span: tuple[int, int] | None = None
        self.id_floor = 0  # no id below it is issued (ids this device gave before a backup)
        # Held around every read-change-write of a memory (imports from other devices too).
        self.editing = edits.EditLock(Path(store.path) / "EDIT.lock")
        self.sync_exported: list[int] | None = None  # [the LSN the last export covered]
        # Sets sync up in this process when another one made the store a device meanwhile.
        self.sync_attach: Callable[[], object] | None = None
        self._sync_state_seen: tuple[int, int, int] | None = None
        catalog.source = reconcile.item_source(store)
        # The retention point is a cached number: a checkpoint asks for it under the store's
        # lock, and reading the catalog there would invert the lock order of sync().
        store.retain(lambda: self._catalog_lsn)

    @classmethod
    def open(
        cls,
        path: Path,
        embedder: Embedder,
        *,
        sync: str = "batch",
        reembed: bool = False,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
        key: StoreKey | None = None,
    ) -> MemoryStore:
        """Opens (creating it if needed) the store at ``path`` and its catalog, brought up to
        the log (rebuilt if it cannot be), and checks the store's embedding model against
        ``embedder``'s (ModelMismatchError unless ``reembed``). ``key``: an encrypted
        store's key (``store.unlock``); the store checks it against its key file, so a
        catalog that does not open under its subkey is damage, and rebuilt."""
        store = Store.open(
            path,
            dim=embedder.dim,
            metric="cos",
            sync=sync,  # type: ignore[arg-type]
            key=key,
        )
        catalog_key = None if key is None else key.catalog_key
        try:
            catalog = reconcile.open_catalog(
                path / "catalog.sqlite", catalog_key, key_verified=catalog_key is not None
            )
        except BaseException:
            store.close()
            raise
        records = cls(store, catalog, embedder, clock=clock, catalog_key=catalog_key)
        try:
            try:
                records.reconcile()
                records.retry_unreadable()
            except reconcile.DAMAGE as e:
                records.heal(e)
            records.check_model(reembed, progress)
        except BaseException:
            records.close()
            raise
        return records

    def close(self) -> None:
        # The store last: its presence lock (localmem encrypt waits for it) covers the catalog.
        self.editing.close()
        self._catalog.close()
        self.store.close()

    @property
    def path(self) -> Path:
        return Path(self.store.path)

    @property
    def catalog(self) -> Catalog:
        """The catalog in use (a heal replaces it: never keep it across calls)."""
        return self._catalog

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def now(self, now: Any = None) -> float:
        """``now`` as unix seconds (a datetime, a number or an ISO string); None: the clock."""
        return self.clock() if now is None else to_timestamp(now, "now")

    # ------------------------------------------------------------------ the catalog

    def sync(self) -> None:
        """Brings the catalog up to the log (records this or another process wrote)."""
        self.store.refresh()
        last = self.store.last_lsn
        done = self._catalog.applied_lsn
        self._catalog_lsn = done
        if done == last:
            return
        try:
            if done > last:  # the log was cut under it (a recovery in another process)
                self.rebuild_catalog(f"it is ahead of the log ({done:,} > {last:,})")
                return
            # Read from the store, then apply under the catalog's lock: never both locks
            # at once (a checkpoint holds the store's and asks for _catalog_lsn).
            changes = self.store.changes(done)
            while batch := list(itertools.islice(changes, 4096)):
                self._catalog.apply(batch, upto=batch[-1][0])
                self._catalog_lsn = batch[-1][0]
            self._catalog.apply([], upto=last)
        except LogTruncatedError:
            self.rebuild_catalog()
        except reconcile.DAMAGE as e:
            self.heal(e)
        self._catalog_lsn = self._catalog.applied_lsn

    def reconcile(self) -> None:
        """At open: the catalog caught up with the log, and rebuilt if it cannot be: ahead
        of the log (a recovery cut it since), or listing other memories than the store
        holds (damage while closed, a lost file)."""
        why = reconcile.ahead_of_log(self.store, self._catalog)
        if why is None:
            self.sync()
            why = reconcile.listing_mismatch(self.store, self._catalog)
        if why is not None:
            self.rebuild_catalog(why)

    def heal(self, error: BaseException) -> None:
        """A read of the catalog failed on damage: a new catalog, rebuilt from the store."""
        log.warning("%s: the catalog is damaged (%s): rebuilding it from the store",
                    self.path, error)  # fmt: skip
        self.replace_catalog()

    def replace_catalog(self, progress: Progress | None = None) -> int:
        """The catalog's files moved aside and a new one rebuilt from the store."""
        with self._heal_lock:
            path = self._catalog.path
            self._catalog.close()
            self._catalog = reconcile.fresh_catalog(path, self.catalog_key)
            self._catalog.source = reconcile.item_source(self.store)
            return self.rebuild_catalog(progress=progress)

    def rebuild_catalog(self, why: str = "", progress: Progress | None = None) -> int:
        if why:
            log.warning("%s: the catalog disagrees with the log (%s): rebuilding it from the "
                        "store", self.path, why)  # fmt: skip
        n = reconcile.rebuild(self.store, self._catalog, progress)
        self._catalog_lsn = self._catalog.applied_lsn
        return n

    def repair(self, progress: Progress | None = None) -> dict[str, Any]:
        """The catalog rebuilt from the log whatever state it is in; see ``Memory.repair``."""
        read = self.replace_catalog(progress)
        self.retry_unreadable()
        self.check_model(False, None)
        path = self._catalog.path
        moved = sorted(str(f) for f in path.parent.glob(path.name + "*.corrupt-*"))
        return {"items": read, "memories": self._catalog.live_count(), "moved_aside": moved}

    def retry_unreadable(self) -> None:
        """Items left out of the catalog because they could not be decoded: readmitted if
        they read now (this version is newer than the one that failed), dropped from the
        list if gone."""
        for u in self._catalog.unreadable():
            id = int(u["id"])
            try:
                it = self.store.get(id)
            except UnknownIdError:
                self._catalog.readmit(int(u["lsn"]), None, id=id)
                continue
            except CorruptFileError:
                continue
            payload = rec.encode_put(id, it.text, it.meta, None, None)
            self._catalog.readmit(int(u["lsn"]), payload, id=id)

    def check_model(self, reembed: bool, progress: Progress | None) -> None:
        stored = self._catalog.state("model")
        if stored is None:  # a rebuilt catalog: the items say which model embedded them
            stored = self._catalog.first_model()
        mine = self.model_id
        if stored is None or self._catalog.count() == 0:
            self._catalog.set_state("model", mine)
            return
        if stored == mine:
            return
        if not reembed:
            raise ModelMismatchError(
                f"{self.path} holds vectors from the embedding model {stored!r}, not "
                f"{mine!r}: open it with that model (LOCALMEM_EMBEDDING=<path> for the CLI), "
                f"or re-embed its {self._catalog.count():,} memories with the new one "
                "(reembed=True; localmem reembed --model)"
            )
        self.reembed(progress)
        self._catalog.set_state("model", mine)

    # ------------------------------------------------------------------ reading

    def item(self, row: Row) -> MemoryItem:
        """A catalog row as a MemoryItem; a forgotten memory's text and provenance come from
        its store item (the catalog keeps a slim row for it)."""
        if row.tier == "forgotten":
            try:
                row = full_row(row, self.store.get(int(row.id)))
            except UnknownIdError:  # purged by another process since the catalog read
                raise UnknownIdError(f"no memory with id {row.id}") from None
        return MemoryItem.from_row(row)

    def get(self, id: int) -> MemoryItem:
        """Memory ``id`` as the catalog lists it now; UnknownIdError if there is none."""
        self.sync()
        rows = self._catalog.rows([id])
        if not rows:
            raise UnknownIdError(f"no memory with id {id}")
        return self.item(rows[id])

    def store_ids(self) -> list[int]:
        """The ids of every item the store holds (forgotten memories too), in order."""
        return sorted(self.store.ids())

    def memories(self, ids: Sequence[int]) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(id, text, metadata with every key) of the memories ``ids`` name; an item that
        cannot be decoded here, or is gone, is skipped (with a warning)."""
        for id in ids:
            try:
                it = self.store.get(id)
            except UnknownIdError:  # deleted since the listing
                continue
            except CorruptFileError as e:  # intact but undecodable: the rest still reads
                log.warning("export: memory %d left out, it cannot be read: %s", id, e)
                continue
            if it.meta.get("type") == "memory":
                yield id, it.text, memmeta.unpack(it.meta, it.text)

    def stats(self) -> dict[str, Any]:
        """``Memory.stats``."""
        self.sync()
        kinds = self.catalog.counts_by_kind()
        return {
            "path": str(self.path),
            "memories": sum(kinds.values()),
            "by_kind": kinds,
            "by_tier": self.catalog.counts_by_tier(),
            "model": self.model_id,
            "bytes": sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()),
            "store": self.store.stats(),
            # None, or the cipher and what holds the key (a passphrase, the OS keyring)
            "encryption": keyfile.describe(self.path),
            # Intact records this version cannot decode, left out (Catalog.note_unreadable).
            "unreadable": self.catalog.unreadable(),
        }

    def compact(self) -> dict[str, Any]:
        """The store checkpointed with compaction and the catalog vacuumed: their figures."""
        out = self.store.checkpoint(compact=True)
        out["catalog"] = self._catalog.vacuum()
        return out

    # ------------------------------------------------------------------ writing

    def new_ids(self, n: int) -> list[int]:
        """Fresh ids, unique across processes (``Catalog.next_ids``). A rebuilt catalog lost
        the counter, and a purged id may have been the largest; every id ever issued had its
        own PUT, so none is above the log's last LSN: it starts past it."""
        self._sync_set_up()
        span = self.id_span
        if span is not None:  # a synced device's own range: its ids are unique everywhere
            with self._ids:
                return self._catalog.next_ids(
                    n, first=lambda: self._first_id(span), span=span, floor=self.id_floor
                )
        with self._ids:
            return self._catalog.next_ids(n, first=lambda: self.store.last_lsn + 1)

    def _first_id(self, span: tuple[int, int]) -> int:
        """Where a synced device's id counter starts again when its catalog lost it: past
        its ids stored and purged (slot 0 keeps the unsynced rule: past the log)."""
        lo, hi = span
        past = [i + 1 for i in self.store.ids() if lo <= i < hi]
        return max([lo, self.id_floor, self.store.last_lsn + 1 if lo <= 1 else 0, *past])

    def put_many(self, puts: list[tuple[Any, ...]], olds: Mapping[int, rec.Item | None]) -> int:
        """Every write of memories goes here: ``puts`` as ``Store.put_many`` takes them, and
        the items they replace (None or absent: new), which a syncing device's ``stamper``
        compares them with."""
        self._sync_set_up()
        if self.stamper is not None:
            puts = self.stamper(puts, olds)
        return self.store.put_many(puts)

    def _sync_set_up(self) -> None:
        """A store another process made a device of a sync folder (``localmem sync join``)
        while this one had it open: from now on this process's writes are stamped too."""
        if self.stamper is not None or self.sync_attach is None:
            return
        try:
            st = (self.path / syncfolder.STATE_FILE).stat()
        except FileNotFoundError:
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._sync_state_seen:  # tried once per version of the file
            self._sync_state_seen = seen
            self.sync_attach()

    def write(
        self,
        chunk: list[tuple[str, dict[str, Any]]],
        progress: Callable[[int, int], object] | None = None,
    ) -> list[MemoryItem]:
        """New memories from checked ``(text, meta)`` pairs (``validate.check_item``), durable
        when this returns, in order. A memory with a key is written once: a retry (the same
        key and text, after an error that left the caller unsure) gets the memory its first
        try stored."""
        out: dict[int, MemoryItem] = {}
        first: dict[tuple[str, str], int] = {}
        todo: list[int] = []
        for i, (text, meta) in enumerate(chunk):
            k = meta.get("key")
            if k is not None:
                if (k, text) in first:
                    continue
                first[(k, text)] = i
                row = self._catalog.keyed(k, text)
                if row is not None:
                    out[i] = self.item(row)
                    continue
            todo.append(i)
        if todo:
            vecs = self.embedder.embed([chunk[i][0] for i in todo], progress=progress)
            ids = self.new_ids(len(todo))
            now = self.clock()
            model = self.model_id
            items = []
            for id, i, v in zip(ids, todo, vecs, strict=True):
                text, meta = chunk[i]
                meta["created"] = now
                meta["t_last"] = now
                if meta["when"] is None:
                    meta["when"] = now
                meta["model"] = model
                items.append((id, text, memmeta.pack(meta), v))
            self.put_many(items, {})  # durable: from here on the memories exist
            out.update(zip(todo, self._stored(items), strict=True))
        for i, (text, meta) in enumerate(chunk):
            if i not in out:
                out[i] = out[first[(meta["key"], text)]]
        return [out[i] for i in range(len(chunk))]

    def write_many(
        self, items: Iterable[dict[str, Any]], *, progress: Progress | None, batch: int
    ) -> list[MemoryItem]:
        """``Memory.remember_many``: each item checked (``validate.check_item_dict``), written
        ``batch`` at a time with ``write``; ``progress(done, total)`` as the embedding
        advances and when each batch is stored."""
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        out: list[MemoryItem] = []
        chunk: list[tuple[str, dict[str, Any]]] = []
        for i, d in enumerate(items):
            chunk.append(check_item_dict(i, d))
            if len(chunk) == batch:
                out += self.write(chunk, _embed_progress(progress, len(out), total))
                chunk = []
                if progress is not None:
                    progress(len(out), total)
        if chunk:
            out += self.write(chunk, _embed_progress(progress, len(out), total))
            if progress is not None:
                progress(len(out), total)
        return out

    def _stored(self, items: list[tuple[int, str, dict[str, Any], Any]]) -> list[MemoryItem]:
        """The memories just written to the log, as the catalog lists them; when the
        catalog cannot take them now (a full disk), as the log holds them: the write
        happened, and the catalog catches up on a later call."""
        ids = [id for id, *_ in items]
        try:
            self.sync()
            rows = self._catalog.rows(ids)
            if len(rows) == len(ids):
                return [MemoryItem.from_row(rows[i]) for i in ids]
        except StorageError as e:
            log.warning("%s: %d memories are in the log, not yet in the catalog: %s",
                        self.path, len(ids), e)  # fmt: skip
        lsn = self.store.last_lsn
        return [
            MemoryItem.from_row(item_row(lsn, rec.Item(id, text, meta, None))[0])
            for id, text, meta, _ in items
        ]

    def rewrite(self, changes: dict[int, tuple[str, dict[str, Any]]], now: float) -> int:
        """Writes each memory again in ``tier`` with ``meta`` updates: {id: (tier, updates)}.
        One put_many; vectors a tier needs and the item lost are re-embedded in one batch.
        Memories gone or unreadable here are left as they are; returns how many were
        written."""
        if not changes:
            return 0
        with self.editing:
            return self._rewrite(changes, now)

    def _rewrite(self, changes: dict[int, tuple[str, dict[str, Any]]], now: float) -> int:
        items = {}
        for id in changes:
            try:
                items[id] = self.store.get(id)
            except UnknownIdError:
                continue
            except CorruptFileError as e:  # intact, undecodable here: left as it is
                log.warning("memory %d left as it is, it cannot be read: %s", id, e)
                continue
        need = [
            id
            for id, (tier, _) in changes.items()
            if id in items and forms.needs_vector(items[id], tier)
        ]
        fresh = dict(zip(need, self.embedder.embed([items[i].text for i in need]), strict=True))
        out = []
        for id, (tier, updates) in changes.items():
            if id not in items:
                continue
            it = items[id]
            meta = dict(it.meta, **updates)
            if id in fresh:
                meta["model"] = self.model_id
            out.append(forms.in_tier(it, meta, tier, fresh.get(id, it.vector), now))
        self.put_many(out, dict(items))
        return len(out)

    def update(self, id: int, text: str | None, tags: list[str] | None) -> None:
        """Memory ``id`` with new (checked) ``text`` and/or ``tags``: new text is embedded
        again, in the hot tier (``retext``), the old one kept in its ``sources`` as an
        ``{"edited": time, "text": ...}`` entry (``undo_edit``); the same text is rewritten
        where it is, in its own tier's form."""
        self.sync()
        with self.editing:
            item = self.store.get(id)
            updates: dict[str, Any] = {} if tags is None else {"tags": tags}
            if text is not None and text != item.text:
                kept = edits.with_version(item.meta, item.text, text, self.clock())
                self.retext(id, text, dict(item.meta, **updates, sources=kept))
            else:
                self.rewrite({id: (item.meta.get("tier", "hot"), updates)}, self.clock())
        self.sync()

    def undo_edit(self, id: int) -> None:
        """Memory ``id`` back to the text it had before its last ``update`` (that version
        leaves its history); InvalidArgumentError when there is none to go back to."""
        self.sync()
        with self.editing:
            item = self.store.get(id)
            text, kept = edits.last_version(item.meta, item.text)
            self.retext(id, text, dict(item.meta, sources=kept))
        self.sync()

    def retext(self, id: int, text: str, meta: dict[str, Any]) -> None:
        """Writes memory ``id`` with new ``text``: what was derived from the old text (cold
        code, entities) dropped, embedded again, in the hot tier, forgotten no more."""
        meta = dict(meta, tier="hot", model=self.model_id)
        for key in ("code", "forgotten_at", "entities", "faded"):
            meta.pop(key, None)
        put = (id, text, memmeta.pack(meta), self.embedder.embed([text])[0])
        with self.editing:
            old = self.store.get(id) if self.stamper is not None else None
            self.put_many([put], {id: old})

    def reembed(self, progress: Progress | None, ids: Sequence[int] | None = None) -> None:
        """Every memory (or those in ``ids``) again with the current model, each in its own
        tier's form (a cold one gets a new sign code; a forgotten one has no vector and is
        left as it is: restore() embeds it with the model of the day)."""
        cat = self._catalog
        rows = cat.all_rows() if ids is None else list(cat.rows(ids).values())
        total = len(rows)
        model = self.model_id
        for start in range(0, total, 256):
            chunk = rows[start : start + 256]
            live = [r for r in chunk if r.tier != "forgotten"]
            vecs = dict(
                zip(
                    [int(r.id) for r in live],
                    self.embedder.embed([str(r.text) for r in live]),
                    strict=True,
                )
            )
            with self.editing:
                self._reembedded(live, vecs, model)
            if progress is not None:
                progress(start + len(chunk), total)
        self.sync()

    def _reembedded(self, live: list[Row], vecs: dict[int, Any], model: str) -> None:
        items, olds = [], {}
        for r in live:
            id = int(r.id)
            try:
                it = self.store.get(id)
            except CorruptFileError as e:  # intact, undecodable here: left as it is
                log.warning("reembed: memory %d left as it is, it cannot be read: %s", id, e)
                continue
            except UnknownIdError:  # gone since the listing
                continue
            if it.text != r.text:  # changed since the listing: embedded with its new text
                continue
            meta = dict(it.meta, model=model)
            olds[id] = it
            items.append(forms.in_tier(it, meta, r.tier, vecs[id], self.clock()))
        self.put_many(items, olds)

    def drop_locally(self, id: int) -> bool:
        """Deletes item ``id`` as this device's own business (a memory that faded here, the
        old copy of a renumbered one): sync does not send it as a purge (``LOCAL_DROP``)."""
        if self.stamper is not None or self.id_span is not None:
            self.store.log(edits.LOCAL_DROP, edits.local_drop(id))
        return self.store.delete(id)


def _embed_progress(
    progress: Progress | None, base: int, total: int | None
) -> Callable[[int, int], object] | None:
    if progress is None:
        return None

    def report(done: int, n: int) -> None:
        if done < n:  # the batch's end is reported once it is stored
            progress(base + done, total)

    return report
