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
- Session summaries (``summaries``) take part in neither.

Thresholds were set on MiniLM pairs (see tests/test_consolidate.py): restatements score
0.93-1.0, elaborations 0.80-0.90, same-subject contradictions 0.75-0.86, different facts
about one person ≤ 0.5.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from localmem import summaries, tiers
from localmem.errors import CorruptFileError
from localmem.retrieval import STOPWORDS

if TYPE_CHECKING:
    from localmem.memory import Memory

SAME = 0.95
ELABORATES = 0.80
SAME_SUBJECT = 0.70
NEIGHBOURS = 5
STATEMENTS = ("fact", "preference")
_WORD = re.compile(r"\w+", re.UNICODE)


def content_words(text: str) -> set[str]:
    return {w for w in (x.lower() for x in _WORD.findall(text)) if w not in STOPWORDS}


def step(mem: Memory, now: float, limit: int) -> dict[str, int]:
    """Looks at up to ``limit`` memories added since the last step."""
    cat, store = mem.catalog, mem.store
    cursor = int(cat.state("consolidate_cursor") or 0)
    new = cat.after(cursor, limit, where="tier IN ('hot', 'warm') AND merged_into IS NULL")
    merged = superseded = 0
    for (id,) in new:
        id = int(id)
        rows = cat.rows([id])
        if not rows or rows[id][15] not in ("hot", "warm") or rows[id][21] is not None:
            continue  # merged or forgotten by an earlier step of this loop
        try:
            v = store.get(id).vector
        except CorruptFileError:  # intact, undecodable here (Catalog.note_unreadable)
            continue
        if v is None:
            continue
        older = [(j, s) for j, s in store.search(v, NEIGHBOURS + 1) if j < id]
        near = cat.rows([j for j, _ in older])
        me = rows[id]
        if _is_summary(me):
            continue
        mine = content_words(me[1])
        for j, cos in older:
            other = near.get(j)
            if (
                other is None
                or other[15] == "forgotten"
                or other[21] is not None
                or _is_summary(other)
            ):
                continue
            theirs = content_words(other[1])
            # Turns of conversation are events, not statements: "Thanks, sounds great!" said
            # in two sessions is two moments, and merging would tear a session's context.
            mergeable = me[2] == other[2] and me[2] != "episodic"
            if mergeable and (
                cos >= SAME or (cos >= ELABORATES and (mine <= theirs or theirs <= mine))
            ):
                merged += _merge(mem, keep=j, drop=id, rows={j: other, id: me}, now=now)
                break
            if (
                cos >= SAME_SUBJECT
                and me[2] in STATEMENTS
                and other[2] in STATEMENTS
                and (subject := _subject(me)) is not None
                and subject == _subject(other)  # about the same someone (named first)
                and (mine & theirs) - set(subject.split())  # ... and the same thing about
                # them ("lives"), not just their name
                and mine - theirs
                and theirs - mine
                and other[20] is None
            ):
                tiers.rewrite(mem, {j: (other[15], {"superseded_by": id})}, now)
                superseded += 1
                break
    if new:
        cat.set_state("consolidate_cursor", int(new[-1][0]))
    mem._sync()
    return {"merged": merged, "superseded": superseded}


def _is_summary(row: tuple[Any, ...]) -> bool:
    """A session summary (``summaries``) restates its conversation: written hours or days
    after it under a new id, it would pass for the newer of two statements, and merged, its
    link to its turns would be lost. It neither merges nor supersedes, nor is superseded."""
    return summaries.TAG in json.loads(row[10] or "[]")


def _subject(row: tuple[Any, ...]) -> str | None:
    """The first name a statement mentions: usually what it is about ("Chloe grew up in
    Krakow" is about Chloe, not Krakow)."""
    names = json.loads(row[11])
    return str(names[0]).lower() if names else None


def _merge(
    mem: Memory, *, keep: int, drop: int, rows: dict[int, tuple[Any, ...]], now: float
) -> bool:
    """Folds ``drop`` into ``keep`` (the older id): the longer text, both provenances, the
    stronger lifecycle state. ``drop`` is forgotten (restorable), never deleted. False if
    ``keep`` cannot be read here (left as they are)."""
    k, d = rows[keep], rows[drop]
    try:
        item = mem.store.get(keep)
    except CorruptFileError:
        return False
    meta = dict(item.meta)
    sources = list(meta.get("sources", []))
    for r in (k, d) if not sources else (d,):
        sources.append(
            {"id": int(r[0]), "text": r[1], "source": r[3], "session": r[4], "created": r[7]}
        )
    meta.update(
        sources=sources,
        importance=max(float(k[8]), float(d[8])),
        pinned=bool(k[9]) or bool(d[9]),
        stability=max(float(k[16]), float(d[16])),
        t_last=max(float(k[17]), float(d[17])),
        recalls=int(k[18]) + int(d[18]),
    )
    text = d[1] if len(d[1]) > len(k[1]) else k[1]
    if text != item.text:  # the more informative statement becomes the memory's text
        tiers.retext(mem, keep, text, meta)
    else:
        meta.pop("tier", None)
        tiers.rewrite(mem, {keep: ("hot", meta)}, now)
    tiers.rewrite(mem, {drop: ("forgotten", {"merged_into": keep})}, now)
    return True
