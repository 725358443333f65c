"""Consolidation: fold near-duplicates into one memory, and let a newer fact supersede an
older one it contradicts. No LLM: the INT8 index finds each new memory's nearest older
neighbours, and the words they do and do not share decide.

- **Duplicate** (two memories of the same kind, not chat turns — those are moments, not
  statements): cosine ≥ ``SAME`` (a restatement), or ≥ ``ELABORATES`` when one text's
  content words are a subset of the other's ("I work at Google" / "I work at Google as an
  engineer"). The more informative text survives under the older id; the other becomes a
  forgotten memory with ``merged_into`` (restorable), and the survivor keeps its provenance
  in ``sources`` and the stronger lifecycle state of the two.
- **Contradiction**: two facts or preferences with cosine ≥ ``SAME_SUBJECT`` about the
  same subject (the first name each mentions), sharing a content word besides that name
  (what about it: "lives") and each saying something the other does not ("Caroline lives
  in Lisbon" / "Caroline lives in Porto now"). Both stay; the older gets ``superseded_by``
  and ranks below (``retrieval``), and its hit's ``why`` names the newer one.
- Session summaries (``summaries``) take part in neither; the assistant's replies never
  merge with, nor supersede, what the user said (a reply may be the model's invention).

Thresholds were set on MiniLM pairs (see tests/test_consolidate.py): restatements score
0.93-1.0, elaborations 0.80-0.90, same-subject contradictions 0.75-0.86, different facts
about one person ≤ 0.5.
"""

from __future__ import annotations

from localmem.catalog import Row
from localmem.errors import CorruptFileError
from localmem.items import REPLY_TAG
from localmem.lifecycle import summaries
from localmem.memstore import MemoryStore
from localmem.text.terms import content_words

SAME = 0.95
ELABORATES = 0.80
SAME_SUBJECT = 0.70
NEIGHBOURS = 5
STATEMENTS = ("fact", "preference")


def step(records: MemoryStore, now: float, limit: int) -> dict[str, int]:
    """Looks at up to ``limit`` memories added since the last step."""
    cat = records.catalog
    cursor = int(cat.state("consolidate_cursor") or 0)
    new = cat.unmerged_after(cursor, limit)
    counts = fold(records, new, now, older_only=True)
    if new:
        cat.set_state("consolidate_cursor", new[-1])
    return counts


def fold(
    records: MemoryStore, ids: list[int], now: float, *, older_only: bool = False
) -> dict[str, int]:
    """Folds each of ``ids`` into a near-duplicate the store holds, or marks the older of
    two contradicting statements superseded. ``older_only``: compared with smaller ids
    alone (the step's resumable scan); else with any memory but those of ``ids`` after it
    (an import merged into a store: its memories meet the store's, whatever their ids)."""
    cat, store = records.catalog, records.store
    later = {id: i for i, id in enumerate(ids)}
    merged = superseded = 0
    for n, id in enumerate(ids):
        rows = cat.rows([id])
        if not rows or rows[id].tier not in ("hot", "warm") or rows[id].merged_into is not None:
            continue  # merged or forgotten by an earlier step of this loop
        try:
            v = store.get(id).vector
        except CorruptFileError:  # intact, undecodable here (Catalog.note_unreadable)
            continue
        if v is None:
            continue
        near_ids = store.search(v, NEIGHBOURS + 1)
        if older_only:
            older = [(j, c) for j, c in near_ids if j < id]
        else:
            older = [(j, c) for j, c in near_ids if j != id and later.get(j, -1) < n]
        me = rows[id]
        if _is_summary(me):
            continue
        m, s = _consider(records, me, older, cat.rows([j for j, _ in older]), now, older_only)
        merged, superseded = merged + m, superseded + s
    records.sync()
    return {"merged": merged, "superseded": superseded}


def _consider(
    records: MemoryStore,
    me: Row,
    older: list[tuple[int, float]],
    near: dict[int, Row],
    now: float,
    me_newer: bool,
) -> tuple[int, int]:
    """Memory ``me`` against its nearest ``older`` ones, nearest first: folded into the
    first near-duplicate, or superseding the first statement it contradicts (``me_newer``:
    ``me`` is the newer of the two; else the one that happened later is)."""
    id = int(me.id)
    mine = content_words(str(me.text))
    for j, cos in older:
        other = near.get(j)
        if (
            other is None
            or other.tier == "forgotten"
            or other.merged_into is not None
            or _is_summary(other)
        ):
            continue
        # A model's reply is not the user's word: it never folds a user's statement into
        # itself, nor supersedes one (the reply may be the model's invention).
        if _is_reply(me) != _is_reply(other):
            continue
        theirs = content_words(str(other.text))
        # Turns of conversation are events, not statements: "Thanks, sounds great!" said
        # in two sessions is two moments, and merging would tear a session's context.
        mergeable = me.kind == other.kind and me.kind != "episodic"
        if mergeable and (
            cos >= SAME or (cos >= ELABORATES and (mine <= theirs or theirs <= mine))
        ):
            return int(_merge(records, keep=j, drop=id, rows={j: other, id: me}, now=now)), 0
        if (
            cos >= SAME_SUBJECT
            and me.kind in STATEMENTS
            and other.kind in STATEMENTS
            and (subject := _subject(me)) is not None
            and subject == _subject(other)  # about the same someone (named first)
            and (mine & theirs) - set(subject.split())  # ... and the same thing about
            # them ("lives"), not just their name
            and mine - theirs
            and theirs - mine
        ):
            old, new = (other, me) if me_newer or me.event_time >= other.event_time else (me, other)
            if old.superseded_by is not None:
                continue
            records.rewrite({int(old.id): (old.tier, {"superseded_by": int(new.id)})}, now)
            return 0, 1
    return 0, 0


def _is_summary(row: Row) -> bool:
    """A session summary (``summaries``) restates its conversation: written hours or days
    after it under a new id, it would pass for the newer of two statements, and merged, its
    link to its turns would be lost. It neither merges nor supersedes, nor is superseded."""
    return summaries.TAG in row.tag_list


def _is_reply(row: Row) -> bool:
    return REPLY_TAG in row.tag_list


def _subject(row: Row) -> str | None:
    """The first name a statement mentions: usually what it is about ("Chloe grew up in
    Krakow" is about Chloe, not Krakow)."""
    names = row.entity_list
    return str(names[0]).lower() if names else None


def _merge(records: MemoryStore, *, keep: int, drop: int, rows: dict[int, Row], now: float) -> bool:
    """Folds ``drop`` into ``keep`` (the older id): the longer text, both provenances, the
    stronger lifecycle state. ``drop`` is forgotten (restorable), never deleted. False if
    ``keep`` cannot be read here (left as they are)."""
    k, d = rows[keep], rows[drop]
    try:
        item = records.store.get(keep)
    except CorruptFileError:
        return False
    meta = dict(item.meta)
    sources = list(meta.get("sources", []))
    for r in (k, d) if not any("id" in s for s in sources) else (d,):  # edits are no ids
        sources.append(
            {
                "id": int(r.id),
                "text": r.text,
                "source": r.source,
                "session": r.session,
                "created": r.created_time,
            }
        )
    meta.update(
        sources=sources,
        importance=max(float(k.importance), float(d.importance)),
        pinned=bool(k.pinned) or bool(d.pinned),
        stability=max(float(k.stability), float(d.stability)),
        t_last=max(float(k.t_last), float(d.t_last)),
        recalls=int(k.recalls) + int(d.recalls),
    )
    text = str(d.text if len(str(d.text)) > len(str(k.text)) else k.text)
    if text != item.text:  # the more informative statement becomes the memory's text
        records.retext(keep, text, meta)
    else:
        meta.pop("tier", None)
        records.rewrite({keep: ("hot", meta)}, now)
    records.rewrite({drop: ("forgotten", {"merged_into": keep})}, now)
    return True
