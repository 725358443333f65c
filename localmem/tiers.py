"""Moving memories between tiers, reinforcing them, and the forgetting sweep.

Every move is one PUT of the memory with its new form — the log stays the truth and the
item stays complete (text, metadata with the lifecycle state, vector in its tier's form):

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

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from localmem import lifecycle as lc
from localmem import memmeta
from localmem.errors import CorruptFileError, UnknownIdError

if TYPE_CHECKING:
    from localmem.memory import Memory

RANK = {t: i for i, t in enumerate(lc.TIERS)}
log = logging.getLogger("localmem.tiers")


def binary_code(v: npt.NDArray[np.float32]) -> bytes:
    """One bit per dimension: the sign (what the cold tier keeps of a vector)."""
    return np.packbits(np.asarray(v) > 0, bitorder="little").tobytes()


def hamming_to_cos(distance: int, bits: int) -> float:
    """The cosine a Hamming distance between sign codes suggests (random hyperplanes:
    angle ≈ π · distance / bits)."""
    return math.cos(math.pi * distance / max(bits, 1))


def retext(mem: Memory, id: int, text: str, meta: dict[str, Any]) -> None:
    """Writes memory ``id`` with new ``text``: what was derived from the old text (cold code,
    entities) dropped, embedded again, in the hot tier, forgotten no more."""
    meta = dict(meta, tier="hot", model=mem.embedder.model_id)
    for key in ("code", "forgotten_at", "entities"):
        meta.pop(key, None)
    mem.store.put(id, text, meta=memmeta.pack(meta), vector=mem.embedder.embed([text])[0])


def rewrite(mem: Memory, changes: dict[int, tuple[str, dict[str, Any]]], now: float) -> int:
    """Writes each memory again in ``tier`` with ``meta`` updates: {id: (tier, updates)}.
    One put_many; vectors a tier needs and the item lost are re-embedded in one batch."""
    if not changes:
        return 0
    store = mem.store
    items = {}
    for id in changes:
        try:
            items[id] = store.get(id)
        except UnknownIdError:
            continue
        except CorruptFileError as e:  # intact, undecodable here: left as it is
            log.warning("memory %d left as it is, it cannot be read: %s", id, e)
            continue
    need = [
        id
        for id, (tier, _) in changes.items()
        if id in items
        and tier != "forgotten"
        and (
            items[id].vector is None
            or (tier == "hot" and items[id].meta.get("tier", "hot") != "hot")
        )
    ]
    fresh = dict(zip(need, mem.embedder.embed([items[i].text for i in need]), strict=True))
    out: list[tuple[int, str, dict[str, Any], Any, bool]] = []
    for id, (tier, updates) in changes.items():
        if id not in items:
            continue
        it = items[id]
        meta = dict(it.meta, **updates, tier=tier)
        vec = fresh.get(id, it.vector)
        if id in fresh:
            meta["model"] = mem.embedder.model_id
        meta.pop("code", None)
        meta.pop("entities", None)
        if tier != "forgotten":
            meta.pop("forgotten_at", None)
        if tier == "hot":
            out.append((id, it.text, meta, np.array(vec, dtype=np.float32), False))
        elif tier == "warm":
            out.append((id, it.text, meta, np.array(vec, dtype=np.float32), True))
        elif tier == "cold":
            meta["code"] = binary_code(np.asarray(vec)).hex()
            out.append((id, it.text, meta, None, False))
        else:
            meta.setdefault("forgotten_at", now)
            # No vector (and no code) left to say which model made it; a restore embeds
            # the text again and names the model of the day.
            meta.pop("model", None)
            out.append((id, it.text, meta, None, False))
    store.put_many([(id, text, memmeta.pack(m), v, q) for id, text, m, v, q in out])
    return len(out)


def reinforce(mem: Memory, ids: Iterable[int], now: float) -> int:
    """Recalls the caller used: stability grows (more when nearly forgotten), the clock of
    each restarts, and a memory below hot comes back to hot."""
    rows = mem.catalog.rows(list(dict.fromkeys(ids)))
    changes = {}
    for id, r in rows.items():
        tier, s, t_last, recalls = r[15], r[16], r[17], r[18]
        if tier == "forgotten":
            continue  # restore() is the explicit way back
        s2, t2 = lc.reinforce(now, t_last, s)
        changes[id] = ("hot", {"stability": s2, "t_last": t2, "recalls": int(recalls) + 1})
    n = rewrite(mem, changes, now)
    mem._sync()
    return n


def restore(mem: Memory, id: int, now: float) -> None:
    """Back to hot from any tier (until the purge); the forgetting clock restarts."""
    rows = mem.catalog.rows([id])
    if not rows:
        raise UnknownIdError(
            f"no memory with id {id} (a forgotten memory is purged after "
            f"{lc.PARAMS.purge_after_days:g} days)"
        )
    r = rows[id]
    s0 = lc.initial_stability(r[2], float(r[8]))
    rewrite(
        mem,
        {id: ("hot", {"t_last": now, "stability": max(float(r[16]), s0), "merged_into": None})},
        now,
    )
    mem._sync()


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


def sweep(mem: Memory, now: float, limit: int) -> dict[str, int]:
    """One bounded step of the forgetting sweep: demotes the memories whose retention fell
    below their tier, purges forgotten ones past the grace period, and remembers where it
    stopped (the next call goes on from there, wrapping around)."""
    cat = mem.catalog
    cursor = int(cat.state("sweep_cursor") or 0)
    rows = cat.after(cursor, limit, "id, tier, stability, t_last, pinned, forgotten_at")
    decide = _decide(rows, now)
    if decide:
        # Decided on a snapshot: another handle may have restored or reinforced one of
        # these meanwhile. Look again at what is current now, just before writing.
        # (The window left is one catalog read to one write; closing it entirely needs a
        # compare-and-put in the store.)
        mem._sync()
        fresh = mem.catalog.rows(list(decide))
        current = [(id, r[15], r[16], r[17], r[9], r[19]) for id, r in fresh.items()]
        decide = {id: t for id, t in _decide(current, now).items() if decide.get(id) == t}
    by_tier: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
    purge = [id for id, t in decide.items() if t == "purge"]
    for id, t in decide.items():
        if t != "purge":
            by_tier.setdefault(t, {})[id] = (t, {})
    counts = {t: rewrite(mem, ch, now) for t, ch in by_tier.items()}
    purged = 0
    for id in purge:  # each checked once more right before it goes: a delete is final
        mem._sync()
        r = mem.catalog.rows([id]).get(id)
        if r is not None and _decide([(id, r[15], r[16], r[17], r[9], r[19])], now):
            mem.store.delete(id)
            purged += 1
    counts["purged"] = purged
    counts["scanned"] = len(rows)
    cat.set_state("sweep_cursor", int(rows[-1][0]) if len(rows) == limit else 0)
    mem._sync()
    return counts
