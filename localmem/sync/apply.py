"""Importing another device's changes: each merged into the memory this store holds.

For each change: a purged id is deleted and remembered as a tombstone (later writes to it
are dropped); otherwise the change's state is merged with the local memory's
(``merge.merge``) and, when that adds anything, the memory is written once with the merged
values, stamps and lifecycle state. What the merge gives passes ``remember``'s checks
(``validate.check_record``) or the change is refused and counted: the folder is untrusted.

Tiers are this device's own (derived, never synced): a memory keeps its tier when only its
metadata changed; a new, re-texted or restored one comes in hot, with the vector the change
carries when it was made from the same text by the same model, else embedded here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from localmem.catalog import memmeta
from localmem.errors import CorruptFileError, InvalidArgumentError, UnknownIdError
from localmem.memstore import MemoryStore
from localmem.store import records as rec
from localmem.sync import stamps
from localmem.sync.codec import Change
from localmem.sync.merge import LWW_FIELDS, Synced, merge
from localmem.text.validate import check_record

log = logging.getLogger("localmem")

BATCH = 2048


@dataclass
class Applied:
    written: int = 0
    purged: int = 0
    conflicts: int = 0
    rejected: int = 0
    embedded: int = 0  # vectors made here (a change without a usable one)
    newest: int = 0  # the largest clock seen


def combine(changes: Iterable[Change]) -> list[Change]:
    """One change per id (a list may carry one memory twice): states merged, keeping the
    vector that goes with the winning text."""
    out: dict[int, Change] = {}
    for c in changes:
        got = out.get(c.id)
        if got is None:
            out[c.id] = c
            continue
        s = merge(got.state, c.state)
        text = s.fields.get("text")
        pick = c if text is not None and c.state.fields.get("text") == text else got
        out[c.id] = Change(c.id, s, pick.vector, pick.model)
    return list(out.values())


def apply(records: MemoryStore, changes: list[Change], tombstones: set[int]) -> Applied:
    """Merges ``changes`` into the store (see the module doc); adds purged ids to
    ``tombstones``. Safe to run twice on the same changes."""
    done = Applied()
    for c in changes:
        for st, _ in c.state.fields.values():
            done.newest = max(done.newest, st[0])
    todo = combine(changes)
    for i in range(0, len(todo), BATCH):
        _batch(records, todo[i : i + BATCH], tombstones, done)
    records.sync()
    return done


def _batch(
    records: MemoryStore, changes: list[Change], tombstones: set[int], done: Applied
) -> None:
    # Vectors the batch will need are made first, with no lock held (an embedding takes
    # seconds); then the memories are read, merged and written under the edit lock, so a
    # change made meanwhile on this device (the chat, the MCP server) is merged, not lost.
    bare = [c for c in changes if not _usable(records, c)]  # those may need a vector here
    made = _vectors(records, _plan(records, bare, set(tombstones), done, 0)) if bare else {}
    with records.editing:
        plan = _plan(records, changes, tombstones, done, 1)
        made.update(_vectors(records, [p for p in plan if p[0][1] not in made]))  # changed since
        puts = [(*put[:3], made[put[1]], False) if needs else put for put, needs in plan]
        records.store.put_many(puts)  # not through the stamper: not this device's writes
    done.written += len(puts)


def _vectors(records: MemoryStore, plan: list[tuple[tuple[Any, ...], bool]]) -> dict[str, Any]:
    """text -> vector, made here, for the memories of ``plan`` that need one."""
    texts = sorted({put[1] for put, needs in plan if needs})
    if not texts:
        return {}
    return {t: np.asarray(v, dtype=np.float32)
            for t, v in zip(texts, records.embedder.embed(texts), strict=True)}  # fmt: skip


def _plan(
    records: MemoryStore, changes: list[Change], tombstones: set[int], done: Applied, count: int
) -> list[tuple[tuple[Any, ...], bool]]:
    """The store entries that merge ``changes`` in, each with whether it still needs a
    vector made here (purges done at once); ``count``: 0 for a dry run (nothing deleted or
    counted), 1 for the one that writes."""
    store = records.store
    puts: list[tuple[tuple[Any, ...], bool]] = []
    for c in changes:
        if c.id in tombstones:
            continue
        if c.state.purged is not None:
            if count:
                done.purged += store.delete(c.id)
                tombstones.add(c.id)
            continue
        try:
            local: rec.Item | None = store.get(c.id) if c.id in store else None
        except UnknownIdError:  # deleted since (another process)
            local = None
        except CorruptFileError as e:  # intact, undecodable here: left as it is
            log.warning("sync: memory %d left as it is, it cannot be read: %s", c.id, e)
            done.rejected += count
            continue
        if local is not None and local.meta.get("type") != "memory":
            done.rejected += count
            continue
        mine = stamps.state(local) if local is not None else Synced()
        merged = merge(mine, c.state) if local is not None else c.state
        if not merged.alive:  # a change with no text for a memory never seen: not sent so
            done.rejected += count
            continue
        if local is not None and merged == mine:
            continue
        try:
            puts.append(_put(records, c, local, merged))
        except InvalidArgumentError as e:
            log.warning("sync: a change to memory %d refused: %s", c.id, e)
            done.rejected += count
            continue
        if local is not None and count:
            done.conflicts += _conflicts(mine, c.state)
    if count:
        done.embedded += sum(needs for _, needs in puts)
    return puts


def _put(
    records: MemoryStore, c: Change, local: rec.Item | None, s: Synced
) -> tuple[tuple[Any, ...], bool]:
    """The store entry of memory ``c.id`` in merged state ``s``, and whether it needs a
    vector made here (a hot one the change carries none usable for: ``_batch`` embeds)."""
    vals = {k: s.value(k) for k in LWW_FIELDS}
    text = vals.pop("text")
    forgotten = bool(vals.pop("forgotten"))
    given = dict(vals, stability=s.stability, t_last=s.t_last, recalls=s.total_recalls)
    _, text, meta = check_record(c.id, text, given)
    base = dict(local.meta) if local is not None else {}
    for k in (*LWW_FIELDS, "entities", "code", "forgotten_at"):
        base.pop(k, None)  # what the merge says, including a field set back to none
    meta = dict(base, **meta)
    meta["sync"] = stamps.sync_meta(s, 0)
    was = local.meta.get("tier", "hot") if local is not None else None
    faded = was == "forgotten" and bool(local and local.meta.get("faded"))
    if forgotten:
        meta["tier"] = "forgotten"
        meta.pop("model", None)
        meta.pop("faded", None)  # forgotten by the person now, on some device
        at = local.meta.get("forgotten_at") if was == "forgotten" and not faded and local else None
        # the forget's own time: every device purges it after the same grace period
        meta["forgotten_at"] = at if at is not None else (s.fields["forgotten"][0][0] >> 16) / 1e3
        return (c.id, text, memmeta.pack(meta), None, False), False
    used = local is not None and (
        s.t_last > stamps.t_last(local.meta) or s.stability > local.meta.get("stability", 1.0)
    )
    if local is not None and (was != "forgotten" or (faded and not used)) and local.text == text:
        meta["tier"] = was  # the same form as before: only the metadata changed
        for k in ("code", "forgotten_at"):  # a cold memory's code; when it faded
            if local.meta.get(k) is not None:
                meta[k] = local.meta[k]
        return (c.id, text, memmeta.pack(meta), local.vector, was == "warm"), False
    # new here, new text, restored, or faded here and used on another device: hot
    meta["tier"] = "hot"
    meta.pop("faded", None)
    meta["model"] = records.model_id
    fits = _usable(records, c) and c.state.fields.get("text") == s.fields.get("text")
    return (c.id, text, memmeta.pack(meta), c.vector if fits else None, False), not fits


def _usable(records: MemoryStore, c: Change) -> bool:
    """Whether the change's vector can serve here (one, of this store's model and size)."""
    return (c.vector is not None and c.model == records.model_id
            and c.vector.shape == (records.embedder.dim,))  # fmt: skip


def _conflicts(mine: Synced, theirs: Synced) -> int:
    """Fields the other device wrote that lose to a later write here (two devices changed
    the same thing; the clock settled it): counted for ``sync status``."""
    n = 0
    for k, (st, v) in theirs.fields.items():
        got = mine.fields.get(k)
        if got is not None and st[0] > 0 and st < got[0] and got[1] != v:
            n += 1
    return n
