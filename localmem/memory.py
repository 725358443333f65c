"""``Memory``: what users of the package touch — remember, recall, forget.

A thin facade: it checks what callers pass and hands the work to the layer that owns it —
the record layer (``localmem.memstore``: the store, its catalog and the embedder, kept in
step), recall (``localmem.recall``) and the lifecycle (``localmem.lifecycle``: tiers and the
forgetting sweep, consolidation, session summaries).
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localmem.catalog import Catalog
from localmem.embed import Embedder, open_embedder
from localmem.errors import InvalidArgumentError, LocalmemError
from localmem.items import Hit, MemoryItem, Progress
from localmem.lifecycle import consolidate, summaries, tiers
from localmem.lifecycle.upkeep import Upkeep
from localmem.memstore import MemoryStore, heals, imports
from localmem.paths import check_store_dir, store_path
from localmem.recall import ranker as rankers
from localmem.recall.retrieval import Retriever
from localmem.store import Store, swap, unlock
from localmem.store.crypt import StoreKey
from localmem.sync import background, setup, syncer
from localmem.sync.background import BackgroundSync
from localmem.text import validate as v

if TYPE_CHECKING:
    from localmem.llm.engine import Engine

log = logging.getLogger("localmem")

When = datetime | float | str | None


class Memory:
    """A memory store: ``Memory.open(path)`` (default: ``$LOCALMEM_STORE`` or the user data
    directory). Thread-safe; use as a context manager or call :meth:`close`."""

    #: The longest text one memory holds (characters); an import splits longer notes.
    MAX_TEXT_CHARS = v.MAX_TEXT_CHARS
    #: Automatic upkeep: at most one bounded step this often (seconds), after a write or a
    #: recall; consolidate() runs a step on demand.
    UPKEEP_INTERVAL = 300.0
    UPKEEP_LIMIT = 500

    def __init__(
        self,
        records: MemoryStore,
        *,
        forgetting: bool = True,
        key: StoreKey | None = None,
        ranker: rankers.Ranker | str | os.PathLike[str] | None = None,
    ) -> None:
        self.records = records
        self._key = key  # an encrypted store's key: the sync state is sealed with it
        self._closed = False
        self._upkeep = Upkeep(records, automatic=forgetting)
        self._retriever = Retriever(records, ranker=rankers.configured(ranker))  # see ``open``

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
        key: str | None = None,
        ranker: rankers.Ranker | str | os.PathLike[str] | None = None,
        create: bool = True,
    ) -> Memory:
        """Opens (creating it if needed) the store at ``path``: a new or empty directory, or
        one a store is in. A directory holding other files is refused (InvalidArgumentError),
        and with ``create=False`` (for reading) a path with no store (StoreNotFoundError).

        ``key``: the passphrase of an encrypted store. Without one, an encrypted store opens
        with the key the OS keyring holds for it (``localmem key unlock``), else with
        ``$LOCALMEM_PASSPHRASE``, or raises EncryptionKeyError saying how to unlock it. A
        new store opened with a passphrase is created encrypted: every byte of its memories
        and vectors is sealed on disk.

        ``model``: a registry name or the path of an ONNX sentence-embedding model
        (default: the embedded all-MiniLM-L6-v2); or pass a ready ``embedder``. A store
        remembers which model embedded its memories: opening it with another one raises
        ModelMismatchError unless ``reembed=True``, which re-embeds every memory (with
        ``progress``) — vectors of two models never mix.

        ``forgetting=False`` turns the automatic upkeep off (no demotion, no purge, no
        merging unless ``consolidate()`` is called); ``clock`` is the time source (unix
        seconds) for creation times and retention, for simulations and tests.

        ``ranker``: the re-ranking model recall orders its top candidates with — the path of
        a ranker JSON (``bench/recall_quality.py --train`` writes one), a ranker object (its
        ``score(features)``), or ``"off"`` for the fused order alone (default:
        ``$LOCALMEM_RANKER``, else the one shipped).
        """
        if embedder is not None and model is not None:
            raise InvalidArgumentError("pass either model= or embedder=, not both")
        p = store_path(path)
        swap.finish_switch(p)  # an `encrypt` cut between its renames: the store is back first
        check_store_dir(p, create=create)
        rk = rankers.configured(ranker)  # a bad ranker file fails before the store opens
        store_key = unlock.store_key(p, key)  # before the model loads: a locked store fails fast
        emb: Embedder = embedder if embedder is not None else open_embedder(model)
        records = MemoryStore.open(
            p, emb, sync=sync, reembed=reembed, progress=progress, clock=clock, key=store_key
        )
        setup.attach(records, store_key)
        records.sync_attach = lambda: setup.attach(records, store_key)
        mem = cls(
            records,
            forgetting=forgetting,
            key=store_key,
            ranker=rk if rk is not None else rankers.OFF,
        )
        if syncer.behind(records, store_key):  # restored from a backup: its later changes
            try:  # come back before it writes anything new
                mem.sync()
            except LocalmemError as e:
                log.warning("%s: sync could not catch up at open: %s", p, e)
        if forgetting:
            mem._upkeep.automatic(cls.UPKEEP_LIMIT, sweep_only=True)  # due since it was last open
        return mem

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
        self.records.close()

    @property
    def path(self) -> Path:
        return self.records.path

    @property
    def retriever(self) -> Retriever:
        """The recall pipeline (its ``weights``, ``ranker`` and ``trace`` hook)."""
        return self._retriever

    @property
    def embedder(self) -> Embedder:
        return self.records.embedder

    @property
    def store(self) -> Store:
        return self.records.store

    @property
    def catalog(self) -> Catalog:
        return self.records.catalog

    def _open(self) -> MemoryStore:
        if self._closed:
            raise InvalidArgumentError("this Memory is closed")
        return self.records

    def _synced(self) -> MemoryStore:
        """The record layer, its catalog brought up to the log (another process's writes)."""
        self._open().sync()
        return self.records

    def repair(self, progress: Progress | None = None) -> dict[str, Any]:
        """Rebuilds the catalog from the log whatever state it is in (``localmem repair``):
        the old file is moved aside (``catalog.sqlite.corrupt-<time>``), a new one is
        filled from the store's items with ``progress(done, total)``. Returns how many
        memories it lists and what was moved aside."""
        return self._open().repair(progress)

    # ------------------------------------------------------------------ writing

    def remember(
        self,
        text: str,
        *,
        when: When = None,
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
        item: dict[str, Any] = dict(text=text, when=when, kind=kind, tags=tags,
                                    importance=importance, source=source, session=session,
                                    key=key, pinned=pinned)  # fmt: skip
        v.check_item(**item)  # its own message: not "item 0: ..." as from remember_many
        return self.remember_many([item])[0]

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
        if isinstance(items, dict):
            raise InvalidArgumentError("remember_many takes an iterable of dicts, not one dict")
        out = self._open().write_many(items, progress=progress, batch=batch)
        self._upkeep.when_due(self.UPKEEP_INTERVAL, self.UPKEEP_LIMIT)
        return out

    @heals
    def forget(self, id: int, *, purge: bool = False) -> None:
        """Takes memory ``id`` out of every index. Its text stays for a grace period
        (``restore(id)`` brings it back) and is then purged; ``purge=True`` deletes it now."""
        records = self._open()
        tiers.forget(records, v.check_id(id), purge=purge)

    @heals
    def restore(self, id: int) -> MemoryItem:
        """Undoes a demotion or a forget (until the purge): the memory is hot again."""
        records = self._synced()
        tiers.restore(records, v.check_id(id), records.clock())
        return self.get(id)

    @heals
    def update(
        self, id: int, *, text: str | None = None, tags: Iterable[str] | None = None
    ) -> MemoryItem:
        """Corrects memory ``id``: new ``text`` (embedded again, back in the hot tier) and/or
        new ``tags``; its kind, times, provenance and lifecycle state stay, and the old text
        is kept in its history (``sources``): ``undo_edit(id)`` brings it back."""
        records = self._open()
        id = v.check_id(id)
        if text is None and tags is None:
            raise InvalidArgumentError("give text=, tags= or both")
        checked, meta = v.check_item(
            self.get(id).text if text is None else text, tags=() if tags is None else tags
        )
        records.update(
            id, None if text is None else checked, None if tags is None else meta["tags"]
        )
        return self.get(id)

    @heals
    def undo_edit(self, id: int) -> MemoryItem:
        """Memory ``id`` back to its text before the last ``update`` (InvalidArgumentError
        when it was never edited, or its text changed since: a duplicate merged into it)."""
        try:
            self._open().undo_edit(v.check_id(id))
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"memory {id}: {e}") from None
        return self.get(id)

    @heals
    def pin(self, id: int, pinned: bool = True) -> MemoryItem:
        """Pins memory ``id`` (it never fades; a demoted one comes back to hot) or, with
        ``pinned=False``, lets it fade again from now on. A forgotten memory must be
        restored first."""
        m = self.get(v.check_id(id))
        if m.tier == "forgotten":
            raise InvalidArgumentError(f"memory {id} is forgotten: restore({id}) it first")
        tiers.pin(self._open(), m.id, m.tier, m.pinned, bool(pinned))
        return self.get(m.id)

    @heals
    def reinforce(self, ids: Iterable[int], *, now: When = None) -> int:
        """Marks recalled memories as used (the assistant does this for what it put in the
        prompt): their stability grows, their forgetting clock restarts, and a demoted one
        comes back to hot. Returns how many were reinforced."""
        ids = [v.check_id(i) for i in ids]
        records = self._synced()
        return tiers.reinforce(records, ids, records.now(now))

    @heals
    def consolidate(
        self,
        *,
        now: When = None,
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
        v.check_count(limit, "limit", 1, 2**31)
        v.check_count(sessions, "sessions", 0, 2**31)
        records = self._synced()
        return self._upkeep.step(records.now(now), limit, llm, sessions, cancel)

    @heals
    def pending_summaries(self, *, limit: int = 100_000, now: When = None) -> int:
        """How many conversations (at most ``limit``) have ended without a summary of their
        last turn: what ``summarize_ended`` (or ``consolidate(llm=...)``) would write."""
        v.check_count(limit, "limit", 1, 2**31)
        records = self._synced()
        return len(summaries.pending(records, records.now(now), limit))

    @heals
    def summarize_ended(
        self,
        llm: Engine,
        *,
        limit: int = 4,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Writes the summaries of up to ``limit`` ended conversations, oldest first, with
        ``progress(done, total)`` after each; returns how many it stored."""
        v.check_count(limit, "limit", 0, 2**31)
        self._synced()
        return self._upkeep.summarize_ended(llm, limit, cancel, progress)

    @heals
    def summarize_session(
        self, llm: Engine, session: str, *, now: When = None
    ) -> MemoryItem | None:
        """Writes the summary of conversation ``session`` now, whether or not it has ended,
        in place of its earlier summaries (forgotten, so restorable). None when it has too
        few turns or the model said nothing the user's words support."""
        session = v.check_label(session, "session")
        records = self._synced()
        return summaries.summarize_session(records, llm, session, records.now(now))

    @heals
    def compact(self) -> dict[str, Any]:
        """Gives back the bytes that forgetting freed: brings the catalog up to the log,
        checkpoints the store with compaction (live blobs copied into a new arena, the log
        dropped) and vacuums the catalog. Runs in time proportional to the store's size;
        returns the store's checkpoint figures and the catalog's bytes before and after."""
        return self._synced().compact()

    def export_records(self) -> tuple[int, Iterator[tuple[int, str, dict[str, Any]]]]:
        """How many items the store holds, and (id, text, metadata with every key) of each
        memory, in id order — forgotten ones too, until their purge; an item that cannot be
        decoded here is left out with a warning."""
        ids = self._open().store_ids()
        return len(ids), self.records.memories(ids)

    def import_records(
        self,
        items: Iterable[tuple[Any, Any, Any]],
        progress: Progress | None = None,
        *,
        merge: bool = False,
    ) -> int:
        """Imports exported memories (id, text, metadata) as they are — ids, times, tiers
        and provenance kept — and embeds them with this store's model. Untrusted input:
        every record passes ``remember``'s checks and the lifecycle state's, or nothing is
        imported; ids the store already holds, or given twice, are refused.

        ``merge=True`` imports into a store with memories of its own: new ids (links
        between the imported kept), a conversation turn the store already holds skipped,
        then each imported memory folded as consolidation folds: into a near-duplicate the
        store holds (the stronger state of the two kept, the import's copy forgotten with
        ``merged_into``), or superseding or superseded by a statement it contradicts.
        Returns how many memories the export held."""
        records = self._open()
        n, written = imports.import_records(records, items, progress, merge=merge)
        if merge and written:
            # Each imported memory against the store's (whatever the ids: a syncing device
            # has met ids of other devices' ranges): duplicates folded, contradictions marked.
            consolidate.fold(records, sorted(written), records.clock())
        return n

    # ------------------------------------------------------------------ sync

    def sync_init(self, folder: str | os.PathLike[str]) -> str:
        """Sets up sync between this person's devices through ``folder`` (kept in step by
        Syncthing, Dropbox, a share, ...), with this store as the first device; returns
        the join code each other device needs (``sync_join``). Give the code by hand:
        it is the key that seals everything in the folder."""
        code = setup.init(self._open(), self._key, folder)
        self.sync()
        return code

    def sync_join(self, folder: str | os.PathLike[str], code: str) -> dict[str, Any]:
        """Joins the sync folder another device set up, with its join ``code``; this
        store's own memories get ids unique across the devices and are synced too. Runs a
        first sync and returns what it did."""
        setup.join(self._open(), self._key, folder, code)
        return self.sync()

    def sync(self, folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """One sync step: exports this device's changes, then imports the other devices'
        (``localmem.sync.syncer``); returns counts (``imported``, ``exported``, ``waiting``:
        devices whose next segment is not readable yet, and why). ``folder``: the sync
        folder's new place, if it moved. ``{"busy": True}`` when another process of this
        store is syncing."""
        return syncer.step(self._open(), self._key, folder=folder)

    def background_sync(
        self,
        every: float | None = None,
        on_step: Callable[[dict[str, Any]], object] | None = None,
    ) -> BackgroundSync | None:
        """Keeps this store in step from a thread of its own: ``sync()`` now, then every
        ``every`` seconds (default: ``$LOCALMEM_SYNC_INTERVAL``, else 60; 0: never), each
        report (or ``{"error": ...}``) passed to ``on_step``. None when the store does not
        sync. Call ``.stop()`` on what it returns before closing the store."""
        every = background.interval() if every is None else float(every)
        st = self.sync_status()
        if every <= 0 or st is None or "error" in st:
            return None
        return BackgroundSync(self.sync, every, on_step)

    def sync_status(self) -> dict[str, Any] | None:
        """Devices seen, the last import from each, segments waiting, conflicts resolved;
        None if this store does not sync (``{"error": ...}`` if its state is damaged)."""
        return setup.status(self._open(), self._key)

    def sync_code(self) -> str:
        """The join code of this store's sync folder (to add another device)."""
        return setup.code(self._open(), self._key)

    # ------------------------------------------------------------------ reading

    @heals
    def get(self, id: int) -> MemoryItem:
        """Memory ``id``; UnknownIdError if there is none."""
        return self._open().get(v.check_id(id))

    @heals
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
        since: When = None,
        until: When = None,
        source: str | None = None,
    ) -> builtins.list[MemoryItem]:
        """Memories, newest event first (or oldest), filtered by kind, session, tag, tier
        (forgotten memories only when ``tier="forgotten"`` is asked for), ``source`` (what
        wrote them: ``chat``, ``api``, ``import``, ...) and the time they happened
        (``since`` <= when <= ``until``: datetimes, unix seconds or ISO strings)."""
        v.check_filters(kind=kind, tier=tier)
        if source is not None:
            source = v.check_label(source, "source")
        v.check_page(limit, offset)
        lo = None if since is None else v.to_timestamp(since, "since")
        hi = None if until is None else v.to_timestamp(until, "until")
        records = self._synced()
        rows = records.catalog.page(
            kind=kind, session=session, tag=tag, tier=tier, since=lo, until=hi,
            newest_first=newest_first, limit=limit, offset=offset, source=source,
        )  # fmt: skip
        return [records.item(r) for r in rows]

    @heals
    def __len__(self) -> int:
        """Memories not forgotten."""
        return self._synced().catalog.live_count()

    @heals
    def recall(
        self,
        query: str,
        k: int = 5,
        *,
        now: When = None,
        kind: str | None = None,
        session: str | None = None,
        floor: bool = True,
        reinforce: bool = False,
        include_replies: bool = False,
    ) -> builtins.list[Hit]:
        """The memories that best answer ``query``, best first (at most ``k``; fewer, or
        none, when nothing is relevant — pass ``floor=False`` to always get ``k``). ``now``:
        the time relative expressions ("last May") and retention resolve against (default:
        now). ``reinforce=True`` counts the hits as used (see ``reinforce``); a cold hit is
        promoted either way. The assistant's own replies (``MemoryItem.is_reply``) are
        context of their conversation, not knowledge: left out unless ``include_replies``."""
        records = self._open()
        query = v.check_text(query, "query")
        v.check_count(k, "k", 1, 1000)
        v.check_filters(kind=kind, session=session)
        t_now = records.now(now)
        records.sync()
        hits = self._retriever.recall(
            query, k, now=t_now, kind=kind, session=session, floor=floor, replies=include_replies
        )
        used = [h.memory.id for h in hits] if reinforce else []
        cold = [h.memory.id for h in hits if h.memory.tier == "cold" and not reinforce]
        try:
            if used:
                tiers.reinforce(records, used, t_now)
            if cold:
                tiers.promote_cold(records, cold, t_now)
        except Exception as e:  # the answer stands even if the bookkeeping failed
            log.warning("recall: could not reinforce/promote %s: %s", used or cold, e)
        self._upkeep.when_due(self.UPKEEP_INTERVAL, self.UPKEEP_LIMIT)
        return hits

    @heals
    def stats(self) -> dict[str, Any]:
        """Counts by kind and tier, the model, the bytes the store takes on disk (every
        file), the store's own figures, and its sync (``sync_status``: None if it does not
        sync)."""
        return dict(self._open().stats(), sync=self.sync_status())
