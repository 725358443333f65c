"""Moving memories between tiers, reinforcing them, and the forgetting sweep.

Every move is one PUT of the memory with its new form (``MemoryStore.rewrite``; the forms
are in ``localmem.memstore.forms``) — the log stays the truth and the item stays complete
(text, metadata with the lifecycle state, vector in its tier's form):

    hot        fp32 vector in the arena + INT8 code in the index
    warm       INT8 code only (scale + dim bytes: a quarter of the vector's bytes)
    cold       a binary code (1 bit per dimension) in the catalog's sqlite-vec table; text
               kept and still found by keyword and by Hamming distance, at lower fidelity
    forgotten  out of every index (a slim catalog row for the sweep and the counts); text
               kept in the item for ``purge_after_days`` so that ``Memory.restore`` can
               bring it back, then the item is deleted

Promotion (a recall marked used, a cold hit, a restore) re-embeds the text when the tier
lost the vector: the text is what a memory is; the vector is derived from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from localmem import forgetting as lc
from localmem.catalog import Row
from localmem.errors import CorruptFileError, UnknownIdError
from localmem.memstore import MemoryStore

RANK = {t: i for i, t in enumerate(lc.TIERS)}


def forget(records: MemoryStore, id: int, *, purge: bool = False) -> None:
    """Memory ``id`` out of every index (the forgotten tier: restorable until the purge), or
    deleted now with ``purge``. An item left out of the catalog as unreadable can be purged."""
    records.sync()
    if not records.catalog.rows([id]):
        if purge and any(u["id"] == id for u in records.catalog.unreadable()):
            records.store.delete(id)  # an item left out as unreadable: deleting it is fine
            records.sync()
            return
        raise UnknownIdError(f"no memory with id {id}")
    if purge:
        records.store.delete(id)
    else:
        records.rewrite({id: ("forgotten", {"faded": False})}, records.clock())
    records.sync()


def pin(records: MemoryStore, id: int, tier: str, was: bool, pinned: bool) -> None:
    """Pinned: back to hot, never fading; unpinned: fading again from now on, in ``tier``."""
    if was != pinned:
        now = records.clock()
        to = "hot" if pinned else tier
        records.rewrite({id: (to, {"pinned": pinned, "t_last": now})}, now)
        records.sync()


def promote_cold(records: MemoryStore, ids: Iterable[int], now: float) -> None:
    """Cold memories that answered a question: worth their vector again (warm), and their
    forgetting clock restarts (stability grows only when they are used)."""
    rows = records.catalog.rows(list(ids))
    records.rewrite(
        {i: ("warm", {"t_last": max(now, float(r.t_last))}) for i, r in rows.items()}, now
    )
    records.sync()


def reinforce(records: MemoryStore, ids: Iterable[int], now: float) -> int:
    """Recalls the caller used: stability grows (more when nearly forgotten), the clock of
    each restarts, and a memory below hot comes back to hot."""
    rows = records.catalog.rows(list(dict.fromkeys(ids)))
    changes = {}
    for id, r in rows.items():
        if r.tier == "forgotten":
            continue  # restore() is the explicit way back
        s2, t2 = lc.reinforce(now, r.t_last, r.stability)
        changes[id] = ("hot", {"stability": s2, "t_last": t2, "recalls": int(r.recalls) + 1})
    n = records.rewrite(changes, now)
    records.sync()
    return n


def restore(records: MemoryStore, id: int, now: float) -> None:
    """Back to hot from any tier (until the purge); the forgetting clock restarts."""
    rows = records.catalog.rows([id])
    if not rows:
        raise UnknownIdError(
            f"no memory with id {id} (a forgotten memory is purged after "
            f"{lc.PARAMS.purge_after_days:g} days)"
        )
    r = rows[id]
    s0 = lc.initial_stability(r.kind, float(r.importance))
    records.rewrite(
        {
            id: (
                "hot",
                {"t_last": now, "stability": max(float(r.stability), s0), "merged_into": None},
            )
        },
        now,
    )
    records.sync()


def _decide(rows: Iterable[tuple[Any, ...]], now: float) -> dict[int, str]:
    """id -> the tier to demote to, or "purge", for (id, tier, S, t_last, pinned,
    forgotten_at) rows."""
    out = {}
    for id, tier, s, t_last, pinned, forgotten_at in rows:
        if tier == "forgotten":
            if not pinned and now - (forgotten_at or now) > lc.PARAMS.purge_after_days * lc.DAY:
                out[int(id)] = "purge"
            continue
        if pinned:
            continue
        target = lc.tier_for(lc.retention(now, t_last, s))
        if RANK[target] > RANK[tier]:
            out[int(id)] = target
    return out


def sweep(records: MemoryStore, now: float, limit: int) -> dict[str, int]:
    """One bounded step of the forgetting sweep: demotes the memories whose retention fell
    below their tier, purges forgotten ones past the grace period, and remembers where it
    stopped (the next call goes on from there, wrapping around)."""
    cat = records.catalog
    cursor = int(cat.state("sweep_cursor") or 0)
    rows = cat.lifecycle_after(cursor, limit)
    decide = _decide(rows, now)
    if decide:
        # Decided on a snapshot: another handle may have restored or reinforced one of
        # these meanwhile. Look again at what is current now, just before writing.
        # (The window left is one catalog read to one write; closing it entirely needs a
        # compare-and-put in the store.)
        records.sync()
        fresh = records.catalog.rows(list(decide))
        current = [_state(r) for r in fresh.values()]
        decide = {id: t for id, t in _decide(current, now).items() if decide.get(id) == t}
    by_tier: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
    purge = [id for id, t in decide.items() if t == "purge"]
    for id, t in decide.items():
        if t != "purge":
            # Forgotten by retention, not by the person: "faded" (a tier is each device's
            # own, derived from the lifecycle state; a forget is an act that syncs).
            by_tier.setdefault(t, {})[id] = (t, {"faded": True} if t == "forgotten" else {})
    counts = {t: records.rewrite(ch, now) for t, ch in by_tier.items()}
    purged = 0
    for id in purge:  # each checked once more right before it goes: a delete is final
        records.sync()
        r = records.catalog.rows([id]).get(id)
        if r is not None and _decide([_state(r)], now):
            if _faded(records, id):  # it faded here: other devices keep theirs
                records.drop_locally(id)
            else:  # the person forgot it: the purge syncs
                records.store.delete(id)
            purged += 1
    counts["purged"] = purged
    counts["scanned"] = len(rows)
    cat.set_state("sweep_cursor", int(rows[-1][0]) if len(rows) == limit else 0)
    records.sync()
    return counts


def _faded(records: MemoryStore, id: int) -> bool:
    try:
        return bool(records.store.get(id).meta.get("faded"))
    except (UnknownIdError, CorruptFileError):
        return False


def _state(r: Row) -> tuple[int, str, float, float, int, float | None]:
    """What ``_decide`` reads of a row."""
    return (int(r.id), r.tier, r.stability, r.t_last, r.pinned, r.forgotten_at)
