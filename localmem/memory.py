"""``Memory``: what users of the package touch — remember, recall, forget.

A memory is one store item (text, metadata, embedding) written through the log; the catalog
(SQLite: metadata, FTS5, entities) and the INT8 index are views of that log. Every call first
brings the catalog up to the log, so a memory written by another process (the MCP server,
the TUI) is visible on the next call.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from localmem import consolidate, memmeta, reconcile, summaries, tiers
from localmem import lifecycle as lc
from localmem.catalog import Catalog, full_row, item_row
from localmem.embed import Embedder, OnnxEmbedder
from localmem.errors import (
    CorruptFileError,
    InvalidArgumentError,
    LogTruncatedError,
    ModelMismatchError,
    StorageError,
    UnknownIdError,
)
from localmem.paths import default_store_path
from localmem.store import Store
from localmem.store import records as rec
from localmem.validate import KINDS, check_id, check_item, check_text, to_timestamp

if TYPE_CHECKING:
    from localmem.llm.engine import Engine

log = logging.getLogger("localmem")

Progress = Callable[[int, int | None], object]  # (done, total or None)


@dataclass(frozen=True)
class MemoryItem:
    """One memory, as the catalog holds it."""

    id: int
    text: str
    kind: str
    source: str
    session: str | None
    when: datetime
    created: datetime
    importance: float
    pinned: bool = False
    tags: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    key: str | None = None
    model: str | None = None
    tier: str = "hot"
    stability: float = 1.0  # days
    last_used: datetime | None = None  # the last reinforcement (creation at first)
    recalls: int = 0
    superseded_by: int | None = None  # a newer memory that contradicts this one
    merged_into: int | None = None  # set on a near-duplicate folded into another memory
    sources: tuple[dict[str, Any], ...] = ()  # provenance of duplicates merged into this one

    def retention(self, now: datetime | float | None = None) -> float:
        """R in [0, 1]: how much of this memory is left (Ebbinghaus; lifecycle.py)."""
        t_last = self.last_used.timestamp() if self.last_used else self.created.timestamp()
        return lc.retention(to_timestamp(now), t_last, self.stability, pinned=self.pinned)

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> MemoryItem:
        (id, text, kind, source, session, key, et, ct, imp, pinned, tags, names, model) = r[:13]
        tier, stability, t_last, recalls = r[15:19]
        superseded_by, merged_into, sources = r[20:23]
        return cls(
            id=int(id),
            text=text,
            kind=kind,
            source=source,
            session=session,
            when=datetime.fromtimestamp(et, timezone.utc),
            created=datetime.fromtimestamp(ct, timezone.utc),
            importance=float(imp),
            pinned=bool(pinned),
            tags=tuple(json.loads(tags)),
            entities=tuple(json.loads(names)),
            key=key,
            model=model,
            tier=tier,
            stability=float(stability),
            last_used=datetime.fromtimestamp(t_last, timezone.utc),
            recalls=int(recalls),
            superseded_by=superseded_by,
            merged_into=merged_into,
            sources=tuple(json.loads(sources)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields a script or a tool caller needs, JSON-ready."""
        return {
            "id": self.id, "text": self.text, "kind": self.kind,
            "when": self.when.isoformat(), "created": self.created.isoformat(),
            "tags": list(self.tags), "tier": self.tier, "pinned": self.pinned,
            "retention": round(self.retention(), 4),
            **({"superseded_by": self.superseded_by} if self.superseded_by else {}),
        }  # fmt: skip


@dataclass(frozen=True)
class Hit:
    """A recalled memory: the fused ``score`` and, in ``why``, each channel's part."""

    memory: MemoryItem
    score: float
    why: dict[str, float] = field(default_factory=dict)
    retention: float = 1.0  # the score is the channels' sum times lifecycle.rank_weight(R)
    cosine: float | None = None  # the query's cosine with it (None: found by another channel)

    def explain(self) -> str:
        parts = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(self.why.items(), key=lambda kv: -kv[1])
        )
        return f"score {self.score:.3f} ({parts})"

    def as_dict(self) -> dict[str, Any]:
        """The memory's fields with the score and each channel's part, JSON-ready."""
        return {
            **self.memory.as_dict(),
            "score": round(self.score, 4),
            "why": {k: round(v, 3) for k, v in self.why.items()},
        }


F = TypeVar("F", bound=Callable[..., Any])


def _heals(method: F) -> F:
    """A call that meets a damaged catalog (SQLite has no checksums of its own: a bad page
    is an error on read) rebuilds it from the store and runs again; if it fails again, the
    error says what fixes it."""

    @functools.wraps(method)
    def call(self: Memory, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except reconcile.DAMAGE as e:
            self._heal(e)
        try:
            return method(self, *args, **kwargs)
        except reconcile.DAMAGE as e:
            raise CorruptFileError(
                f"the catalog of {self.path} is damaged and a rebuild did not help ({e}): "
                "run `localmem repair`, and check the disk"
            ) from e

    return call  # type: ignore[return-value]


_ITEM_KEYS = frozenset(
    ("text", "when", "kind", "tags", "importance", "source", "session", "key", "pinned")
)


class Memory:
    """A memory store: ``Memory.open(path)`` (default: ``$LOCALMEM_STORE`` or the user data
    directory). Thread-safe; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        embedder: Embedder,
        *,
        forgetting: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._catalog, self._embedder = store, catalog, embedder
        self._forgetting, self._clock = forgetting, clock
        self._ids = threading.Lock()
        self._closed = False
        self._upkeep_lock = threading.Lock()
        self._catalog_lsn = catalog.applied_lsn  # what the log must keep for the catalog
        self._last_upkeep = time.monotonic()
        self._heal_lock = threading.Lock()
        catalog.source = reconcile.item_source(store)
        from localmem.retrieval import Retriever

        self._retriever = Retriever(self)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        model: str | None = None,
        sync: str = "batch",
        reembed: bool = False,
        progress: Progress | None = None,
        forgetting: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> Memory:
        """Opens (creating it if needed) the store at ``path``.

        ``model``: a registry name or the path of an ONNX sentence-embedding model
        (default: the embedded all-MiniLM-L6-v2); or pass a ready ``embedder``. A store
        remembers which model embedded its memories: opening it with another one raises
        ModelMismatchError unless ``reembed=True``, which re-embeds every memory (with
        ``progress``) — vectors of two models never mix.

        ``forgetting=False`` turns the automatic upkeep off (no demotion, no purge, no
        merging unless ``consolidate()`` is called); ``clock`` is the time source (unix
        seconds) for creation times and retention, for simulations and tests.
        """
        if embedder is not None and model is not None:
            raise InvalidArgumentError("pass either model= or embedder=, not both")
        emb: Embedder = embedder if embedder is not None else OnnxEmbedder(model)
        p = Path(path).expanduser() if path is not None else default_store_path()
        store = Store.open(p, dim=emb.dim, metric="cos", sync=sync)  # type: ignore[arg-type]
        try:
            catalog = reconcile.open_catalog(p / "catalog.sqlite")
        except BaseException:
            store.close()
            raise
        mem = cls(store, catalog, emb, forgetting=forgetting, clock=clock)
        # The retention point is a cached number: a checkpoint asks for it under the store's
        # lock, and reading the catalog there would invert the lock order of _sync.
        store.retain(lambda: mem._catalog_lsn)
        try:
            try:
                mem._reconcile()
                mem._retry_unreadable()
            except reconcile.DAMAGE as e:
                mem._heal(e)
            mem._check_model(reembed, progress)
        except BaseException:
            mem.close()
            raise
        if forgetting:
            mem._upkeep(sweep_only=True)  # demotions due since the store was last open
        return mem

    #: Automatic upkeep: at most one bounded step this often (seconds), after a write or a
    #: recall; consolidate() runs a step on demand.
    UPKEEP_INTERVAL = 300.0
    UPKEEP_LIMIT = 500

    def _upkeep(self, *, sweep_only: bool = False) -> None:
        """A bounded upkeep step that must never fail the call that triggered it."""
        if not self._upkeep_lock.acquire(blocking=False):
            return
        try:
            self._last_upkeep = time.monotonic()
            now = self._clock()
            tiers.sweep(self, now, 2 * self.UPKEEP_LIMIT)
            if not sweep_only:
                consolidate.step(self, now, self.UPKEEP_LIMIT)
        except Exception as e:
            log.warning("%s: automatic upkeep failed, will retry: %s", self.path, e)
        finally:
            self._upkeep_lock.release()

    def _maybe_upkeep(self) -> None:
        if self._forgetting and time.monotonic() - self._last_upkeep >= self.UPKEEP_INTERVAL:
            self._upkeep()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._store.close()
        self._catalog.close()

    @property
    def path(self) -> Path:
        return Path(self._store.path)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def store(self) -> Store:
        return self._store

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def _now(self, now: datetime | float | str | None) -> float:
        return self._clock() if now is None else to_timestamp(now, "now")

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this Memory is closed")

    def _sync(self) -> None:
        """Brings the catalog up to the log (records this or another process wrote)."""
        self._store.refresh()
        last = self._store.last_lsn
        done = self._catalog.applied_lsn
        self._catalog_lsn = done
        if done == last:
            return
        try:
            if done > last:  # the log was cut under it (a recovery in another process)
                self._rebuild_catalog(f"it is ahead of the log ({done:,} > {last:,})")
                return
            # Read from the store, then apply under the catalog's lock: never both locks
            # at once (a checkpoint holds the store's and asks for _catalog_lsn).
            changes = self._store.changes(done)
            while batch := list(itertools.islice(changes, 4096)):
                self._catalog.apply(batch, upto=batch[-1][0])
                self._catalog_lsn = batch[-1][0]
            self._catalog.apply([], upto=last)
        except LogTruncatedError:
            self._rebuild_catalog()
        except reconcile.DAMAGE as e:
            self._heal(e)
        self._catalog_lsn = self._catalog.applied_lsn

    def _reconcile(self) -> None:
        """At open: the catalog caught up with the log, and rebuilt if it cannot be: ahead
        of the log (a recovery cut it since), or listing other memories than the store
        holds (damage while closed, a lost file)."""
        why = reconcile.ahead_of_log(self._store, self._catalog)
        if why is None:
            self._sync()
            why = reconcile.listing_mismatch(self._store, self._catalog)
        if why is not None:
            self._rebuild_catalog(why)

    def _heal(self, error: BaseException) -> None:
        """A read of the catalog failed on damage: a new catalog, rebuilt from the store."""
        log.warning("%s: the catalog is damaged (%s): rebuilding it from the store",
                    self.path, error)  # fmt: skip
        self._replace_catalog()

    def _replace_catalog(self, progress: Progress | None = None) -> int:
        """The catalog's files moved aside and a new one rebuilt from the store."""
        with self._heal_lock:
            path = self._catalog.path
            self._catalog.close()
            self._catalog = reconcile.fresh_catalog(path)
            self._catalog.source = reconcile.item_source(self._store)
            return self._rebuild_catalog(progress=progress)

    def _rebuild_catalog(self, why: str = "", progress: Progress | None = None) -> int:
        if why:
            log.warning("%s: the catalog disagrees with the log (%s): rebuilding it from the "
                        "store", self.path, why)  # fmt: skip
        n = reconcile.rebuild(self._store, self._catalog, progress)
        self._catalog_lsn = self._catalog.applied_lsn
        return n

    def repair(self, progress: Progress | None = None) -> dict[str, Any]:
        """Rebuilds the catalog from the log whatever state it is in (``localmem repair``):
        the old file is moved aside (``catalog.sqlite.corrupt-<time>``), a new one is
        filled from the store's items with ``progress(done, total)``. Returns how many
        memories it lists and what was moved aside."""
        self._check_open()
        read = self._replace_catalog(progress)
        self._retry_unreadable()
        self._check_model(False, None)
        path = self._catalog.path
        moved = sorted(str(f) for f in path.parent.glob(path.name + "*.corrupt-*"))
        return {"items": read, "memories": len(self), "moved_aside": moved}

    def _retry_unreadable(self) -> None:
        """Items left out of the catalog because they could not be decoded: readmitted if
        they read now (this version is newer than the one that failed), dropped from the
        list if gone."""
        for u in self._catalog.unreadable():
            id = int(u["id"])
            try:
                it = self._store.get(id)
            except UnknownIdError:
                self._catalog.readmit(int(u["lsn"]), None, id=id)
                continue
            except CorruptFileError:
                continue
            payload = rec.encode_put(id, it.text, it.meta, None, None)
            self._catalog.readmit(int(u["lsn"]), payload, id=id)

    def _check_model(self, reembed: bool, progress: Progress | None) -> None:
        stored = self._catalog.state("model")
        if stored is None:  # a rebuilt catalog: the items say which model embedded them
            with self._catalog._lock:
                row = self._catalog.db.execute(
                    "SELECT model FROM memories WHERE model IS NOT NULL "
                    "AND tier != 'forgotten' LIMIT 1"
                ).fetchone()
            stored = row[0] if row else None
        mine = self._embedder.model_id
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
        self._reembed(progress)
        self._catalog.set_state("model", mine)

    def _reembed(self, progress: Progress | None, ids: Sequence[int] | None = None) -> None:
        """Every memory (or those in ``ids``) again with the current model, each in its own
        tier's form (a cold one gets a new sign code; a forgotten one has no vector and is
        left as it is: restore() embeds it with the model of the day)."""
        rows = self._catalog.select() if ids is None else list(self._catalog.rows(ids).values())
        total = len(rows)
        model = self._embedder.model_id
        for start in range(0, total, 256):
            chunk = rows[start : start + 256]
            live = [r for r in chunk if r[15] != "forgotten"]
            vecs = dict(
                zip(
                    [int(r[0]) for r in live],
                    self._embedder.embed([r[1] for r in live]),
                    strict=True,
                )
            )
            items: list[tuple[int, str, dict[str, Any], Any, bool]] = []
            for r in live:
                id = int(r[0])
                try:
                    it = self._store.get(id)
                except CorruptFileError as e:  # intact, undecodable here: left as it is
                    log.warning("reembed: memory %d left as it is, it cannot be read: %s", id, e)
                    continue
                meta = memmeta.pack(dict(it.meta, model=model))
                tier = r[15]
                if tier == "cold":
                    meta["code"] = tiers.binary_code(vecs[id]).hex()
                    items.append((id, it.text, meta, None, False))
                else:
                    items.append((id, it.text, meta, vecs[id], tier == "warm"))
            self._store.put_many(items)
            if progress is not None:
                progress(start + len(chunk), total)
        self._sync()

    def _new_ids(self, n: int) -> list[int]:
        """Fresh ids, unique across processes: the counter lives in the catalog and is
        advanced in an IMMEDIATE transaction; it never falls below the store's largest id."""
        with self._ids, self._catalog._txn():
            cat = self._catalog
            counter = cat._state("next_id")
            if counter is None:
                # A rebuilt catalog lost the counter, and a purged id may have been the
                # largest. Every id ever issued had its own PUT, so none is above the log's
                # last LSN: start past it.
                counter = self._store.last_lsn + 1
            nxt = max(int(counter), cat.max_id() + 1)
            cat._set_state("next_id", nxt + n)
        return list(range(nxt, nxt + n))

    # ------------------------------------------------------------------ writing

    def remember(
        self,
        text: str,
        *,
        when: datetime | float | str | None = None,
        kind: str = "note",
        tags: Iterable[str] = (),
        importance: float = 0.5,
        source: str = "api",
        session: str | None = None,
        key: str | None = None,
        pinned: bool = False,
    ) -> MemoryItem:
        """Stores one memory and returns it once durable. ``when``: the event time (a
        datetime, unix seconds or ISO string; default now); ``kind``: episodic, fact,
        preference or note; ``importance`` in [0, 1]; ``key``: your own id for it, which
        also makes the call idempotent: the same key and text again returns the memory the
        first call stored (a retry after an error never duplicates)."""
        return self.remember_many(
            [
                dict(
                    text=text, when=when, kind=kind, tags=tags, importance=importance,
                    source=source, session=session, key=key, pinned=pinned,
                )
            ]
        )[0]  # fmt: skip

    def remember_many(
        self,
        items: Iterable[dict[str, Any]],
        *,
        progress: Progress | None = None,
        batch: int = 8192,
    ) -> list[MemoryItem]:
        """Stores many memories: dicts with ``remember``'s keyword names (``text`` required).
        Embeds in batches and returns the memories in order. Each batch is durable before
        the next starts; an invalid item raises before its batch is written (earlier batches
        stay). ``progress(done, total)`` (total None for an iterator) is called as the
        embedding advances and when each batch is stored. Large batches embed fastest (texts
        of similar length are grouped across the whole batch)."""
        self._check_open()
        if isinstance(items, dict):
            raise InvalidArgumentError("remember_many takes an iterable of dicts, not one dict")
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        out: list[MemoryItem] = []
        chunk: list[tuple[str, dict[str, Any]]] = []
        for i, d in enumerate(items):
            if not isinstance(d, dict):
                raise InvalidArgumentError(f"item {i} is a {type(d).__name__}, not a dict")
            extra = set(d) - _ITEM_KEYS
            if extra:
                raise InvalidArgumentError(
                    f"item {i} has unknown keys {sorted(extra)}; allowed: {sorted(_ITEM_KEYS)}"
                )
            if "text" not in d:
                raise InvalidArgumentError(f"item {i} has no 'text'")
            try:
                chunk.append(check_item(**d))
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"item {i}: {e}") from None
            if len(chunk) == batch:
                out += self._write(chunk, self._embed_progress(progress, len(out), total))
                chunk = []
                if progress is not None:
                    progress(len(out), total)
        if chunk:
            out += self._write(chunk, self._embed_progress(progress, len(out), total))
            if progress is not None:
                progress(len(out), total)
        self._maybe_upkeep()
        return out

    @staticmethod
    def _embed_progress(
        progress: Progress | None, base: int, total: int | None
    ) -> Callable[[int, int], object] | None:
        if progress is None:
            return None

        def report(done: int, n: int) -> None:
            if done < n:  # the batch's end is reported once it is stored
                progress(base + done, total)

        return report

    def _write(
        self,
        chunk: list[tuple[str, dict[str, Any]]],
        progress: Callable[[int, int], object] | None = None,
    ) -> list[MemoryItem]:
        self._check_open()
        # A memory with a key is written once: a retry (the same key and text, after an
        # error that left the caller unsure) gets the memory its first try stored.
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
                    out[i] = self._item(row)
                    continue
            todo.append(i)
        if todo:
            vecs = self._embedder.embed([chunk[i][0] for i in todo], progress=progress)
            ids = self._new_ids(len(todo))
            now = self._clock()
            model = self._embedder.model_id
            items = []
            for id, i, v in zip(ids, todo, vecs, strict=True):
                text, meta = chunk[i]
                meta["created"] = now
                meta["t_last"] = now
                if meta["when"] is None:
                    meta["when"] = now
                meta["model"] = model
                items.append((id, text, memmeta.pack(meta), v))
            self._store.put_many(items)  # durable: from here on the memories exist
            out.update(zip(todo, self._stored(items), strict=True))
        for i, (text, meta) in enumerate(chunk):
            if i not in out:
                out[i] = out[first[(meta["key"], text)]]
        return [out[i] for i in range(len(chunk))]

    def _stored(self, items: list[tuple[int, str, dict[str, Any], Any]]) -> list[MemoryItem]:
        """The memories just written to the log, as the catalog lists them; when the
        catalog cannot take them now (a full disk), as the log holds them: the write
        happened, and the catalog catches up on a later call."""
        ids = [id for id, *_ in items]
        try:
            self._sync()
            rows = self._catalog.rows(ids)
            if len(rows) == len(ids):
                return [MemoryItem.from_row(rows[i]) for i in ids]
        except StorageError as e:
            log.warning("%s: %d memories are in the log, not yet in the catalog: %s",
                        self.path, len(ids), e)  # fmt: skip
        lsn = self._store.last_lsn
        return [
            MemoryItem.from_row(item_row(lsn, rec.Item(id, text, meta, None))[0])
            for id, text, meta, _ in items
        ]

    @_heals
    def forget(self, id: int, *, purge: bool = False) -> None:
        """Takes memory ``id`` out of every index. Its text stays for a grace period
        (``restore(id)`` brings it back) and is then purged; ``purge=True`` deletes it now."""
        self._check_open()
        self._sync()
        if not self._catalog.rows([self._check_id(id)]):
            if purge and any(u["id"] == id for u in self._catalog.unreadable()):
                self._store.delete(id)  # an item left out as unreadable: deleting it is fine
                self._sync()
                return
            raise UnknownIdError(f"no memory with id {id}")
        if purge:
            self._store.delete(id)
        else:
            tiers.rewrite(self, {id: ("forgotten", {})}, self._clock())
        self._sync()

    @_heals
    def restore(self, id: int) -> MemoryItem:
        """Undoes a demotion or a forget (until the purge): the memory is hot again."""
        self._check_open()
        self._sync()
        tiers.restore(self, self._check_id(id), self._clock())
        return self.get(id)

    @_heals
    def update(
        self, id: int, *, text: str | None = None, tags: Iterable[str] | None = None
    ) -> MemoryItem:
        """Corrects memory ``id``: new ``text`` (embedded again, back in the hot tier) and/or
        new ``tags``; its kind, times, provenance and lifecycle state stay."""
        self._check_open()
        id = self._check_id(id)
        if text is None and tags is None:
            raise InvalidArgumentError("give text=, tags= or both")
        checked, meta_new = check_item(
            self.get(id).text if text is None else text, tags=() if tags is None else tags
        )
        self._sync()
        item = self._store.get(id)
        updates = {} if tags is None else {"tags": meta_new["tags"]}
        if text is not None and checked != item.text:
            tiers.retext(self, id, checked, dict(item.meta, **updates))
        else:  # the same text: rewritten where it is, in its own tier's form
            tiers.rewrite(self, {id: (item.meta.get("tier", "hot"), updates)}, self._clock())
        self._sync()
        return self.get(id)

    @_heals
    def pin(self, id: int, pinned: bool = True) -> MemoryItem:
        """Pins memory ``id`` (it never fades; a demoted one comes back to hot) or, with
        ``pinned=False``, lets it fade again from now on. A forgotten memory must be
        restored first."""
        self._check_open()
        self._sync()
        m = self.get(self._check_id(id))
        if m.tier == "forgotten":
            raise InvalidArgumentError(f"memory {id} is forgotten: restore({id}) it first")
        if m.pinned != bool(pinned):
            now = self._clock()
            tiers.rewrite(
                self,
                {m.id: ("hot" if pinned else m.tier, {"pinned": bool(pinned), "t_last": now})},
                now,
            )
            self._sync()
        return self.get(m.id)

    @_heals
    def reinforce(self, ids: Iterable[int], *, now: datetime | float | str | None = None) -> int:
        """Marks recalled memories as used (the assistant does this for what it put in the
        prompt): their stability grows, their forgetting clock restarts, and a demoted one
        comes back to hot. Returns how many were reinforced."""
        self._check_open()
        ids = [self._check_id(i) for i in ids]
        self._sync()
        return tiers.reinforce(self, ids, self._now(now))

    @_heals
    def consolidate(
        self,
        *,
        now: datetime | float | str | None = None,
        limit: int = 10_000,
        llm: Engine | None = None,
        sessions: int = 4,
        cancel: threading.Event | None = None,
    ) -> dict[str, int]:
        """One bounded step of upkeep (at most ``limit`` memories looked at by each part; the
        next call goes on where it stopped): demotes faded memories, purges the forgotten past
        their grace period, folds near-duplicates together (keeping every source) and marks
        facts a newer one contradicts as superseded. With a chat engine ``llm``, also writes
        the summary of up to ``sessions`` conversations that have ended (``summaries``; a few
        seconds each with the embedded model; ``cancel`` stops them). Returns what it did, by
        kind."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**31:
            raise InvalidArgumentError("limit must be a positive int")
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 0:
            raise InvalidArgumentError("sessions must be an int >= 0")
        self._sync()
        t = self._now(now)
        # One upkeep at a time in this process: an automatic step another thread's call
        # started finishes first (it is bounded), and none starts meanwhile.
        with self._upkeep_lock:
            counts = tiers.sweep(self, t, limit)
            counts.update(consolidate.step(self, t, limit))
            if llm is not None and sessions:
                counts["summarized"] = summaries.step(self, llm, t, sessions, cancel=cancel)
        return counts

    @_heals
    def compact(self) -> dict[str, Any]:
        """Gives back the bytes that forgetting freed: brings the catalog up to the log,
        checkpoints the store with compaction (live blobs copied into a new arena, the log
        dropped) and vacuums the catalog. Runs in time proportional to the store's size;
        returns the store's checkpoint figures and the catalog's bytes before and after."""
        self._check_open()
        self._sync()
        out = self._store.checkpoint(compact=True)
        out["catalog"] = self._catalog.vacuum()
        return out

    # ------------------------------------------------------------------ reading

    _check_id = staticmethod(check_id)

    @_heals
    def get(self, id: int) -> MemoryItem:
        """Memory ``id``; UnknownIdError if there is none."""
        self._check_open()
        self._sync()
        rows = self._catalog.rows([self._check_id(id)])
        if not rows:
            raise UnknownIdError(f"no memory with id {id}")
        return self._item(rows[int(id)])

    def _item(self, row: Sequence[Any]) -> MemoryItem:
        """A catalog row as a MemoryItem; a forgotten memory's text and provenance come from
        its store item (the catalog keeps a slim row for it)."""
        if row[15] == "forgotten":
            try:
                row = full_row(row, self._store.get(int(row[0])))
            except UnknownIdError:  # purged by another process since the catalog read
                raise UnknownIdError(f"no memory with id {row[0]}") from None
        return MemoryItem.from_row(row)

    @_heals
    def list(
        self,
        *,
        kind: str | None = None,
        session: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = True,
        tier: str | None = None,
    ) -> list[MemoryItem]:
        """Memories, newest event first (or oldest), filtered by kind, session, tag or tier
        (forgotten memories only when ``tier="forgotten"`` is asked for)."""
        self._check_open()
        if kind is not None and kind not in KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 0 <= limit <= 2**31
            or isinstance(offset, bool)
            or not isinstance(offset, int)
            or not 0 <= offset <= 2**62
        ):
            raise InvalidArgumentError("limit must be an int in [0, 2**31], offset in [0, 2**62]")
        if tier is not None and tier not in lc.TIERS:
            raise InvalidArgumentError(f"tier must be one of {', '.join(lc.TIERS)}; got {tier!r}")
        self._sync()
        where, params = ["tier=?" if tier else "tier != 'forgotten'"], [tier] if tier else []
        if kind is not None:
            where.append("kind=?")
            params.append(kind)
        if session is not None:
            where.append("session=?")
            params.append(session)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value=?)")
            params.append(tag)
        order = "event_time DESC, id DESC" if newest_first else "event_time, id"
        rows = self._catalog.select(
            " AND ".join(where), params, order=order, limit=limit, offset=offset
        )
        return [self._item(r) for r in rows]

    @_heals
    def __len__(self) -> int:
        """Memories not forgotten."""
        self._check_open()
        self._sync()
        return self._catalog.count("tier != 'forgotten'")

    @_heals
    def recall(
        self,
        query: str,
        k: int = 5,
        *,
        now: datetime | float | str | None = None,
        kind: str | None = None,
        session: str | None = None,
        floor: bool = True,
        reinforce: bool = False,
    ) -> builtins.list[Hit]:
        """The memories that best answer ``query``, best first (at most ``k``; fewer, or
        none, when nothing is relevant — pass ``floor=False`` to always get ``k``). ``now``:
        the time relative expressions ("last May") and retention resolve against (default:
        now). ``reinforce=True`` counts the hits as used (see ``reinforce``); a cold hit is
        promoted either way."""
        self._check_open()
        query = check_text(query, "query")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise InvalidArgumentError(f"k must be an int in [1, 1000], got {k!r}")
        if kind is not None and kind not in KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if session is not None and not isinstance(session, str):
            raise InvalidArgumentError(f"session must be a str, got {type(session).__name__}")
        t_now = self._now(now)
        self._sync()
        hits = self._retriever.recall(query, k, now=t_now, kind=kind, session=session, floor=floor)
        used = [h.memory.id for h in hits] if reinforce else []
        cold = [h.memory.id for h in hits if h.memory.tier == "cold" and not reinforce]
        try:
            if used:
                tiers.reinforce(self, used, t_now)
            if cold:  # a cold memory that answers a question is worth its vector again,
                # and its forgetting clock restarts (stability grows only when used)
                rows = self._catalog.rows(cold)
                tiers.rewrite(
                    self,
                    {i: ("warm", {"t_last": max(t_now, float(rows[i][17]))}) for i in rows},
                    t_now,
                )
                self._sync()
        except Exception as e:  # the answer stands even if the bookkeeping failed
            log.warning("recall: could not reinforce/promote %s: %s", used or cold, e)
        self._maybe_upkeep()
        return hits

    @_heals
    def stats(self) -> dict[str, Any]:
        """Counts by kind, the model, and the store's own figures."""
        self._check_open()
        self._sync()
        db = self._catalog.db
        with self._catalog._lock:
            kinds = dict(
                db.execute(
                    "SELECT kind, count(*) FROM memories WHERE tier != 'forgotten' GROUP BY kind"
                )
            )
            by_tier = dict(db.execute("SELECT tier, count(*) FROM memories GROUP BY tier"))
        return {
            "path": str(self.path),
            "memories": sum(kinds.values()),
            "by_kind": kinds,
            "by_tier": by_tier,
            "model": self._embedder.model_id,
            "store": self._store.stats(),
            # Intact records this version cannot decode, left out (Catalog.note_unreadable).
            "unreadable": self._catalog.unreadable(),
        }
