"""What the re-ranker knows of a candidate: one row of numbers per memory, named here.

Every feature is something the fused ranking already computed or a cheap fact of the text,
so re-ranking costs no model call:

- the channels' own scores (keyword, semantic z-score, time, entity, session, speaker) and
  the fused score;
- the neighbours' evidence: the base score (keyword + 0.2 z) and z-score of the turns just
  before and after in the same session, and whether the turn before is a question (the
  answer to what a query asks is often the reply to a turn that matches it);
- the session's evidence: its best and top-3 mean base score over the candidates, and its
  rank (multi-hop questions draw on several turns of a few sessions);
- the text's shape: length, digits, quotes, capitalized words (names, titles), a question;
- the query's type (when / how long / who / what ...) and each channel's rank of the memory.

Tried and left out, as they moved the held-out recall by less than its noise (0.002): the
raw cosine, how many of the query's words the text and the turn before it hold, the distance
from the fused stage's best hit, cosine to the top hits' centroid and keyword scores of
words taken from the top hits (pseudo-relevance feedback).

Changing this list changes what a trained ranker means: ``ranker.py`` refuses a model trained
on another list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from localmem.catalog import Row

FEATURES = (
    "keyword", "semantic_z", "time", "entity", "session", "speaker", "fused",
    "prev_base", "next_base", "prev2_base", "next2_base", "prev_z", "next_z",
    "prev_is_question", "is_question", "log_length", "has_digit", "has_quote", "capitalized",
    "keyword_rank", "semantic_rank", "query_type",
    "session_best", "session_top3", "session_rank",
)  # fmt: skip
QUERY_TYPES = ("when", "how long", "how many", "who", "where", "why", "what", "which", "would",
               "did", "does", "is")  # fmt: skip
ABSENT_RANK = 1000.0  # the rank of a memory a channel did not return
SEMANTIC_SHARE = 0.2  # the base score's weight of z(cos), as in the fused score
_DIGIT = re.compile(r"\d")
_CAPITALIZED = re.compile(r"(?<![.!?] )(?<!^)\b[A-Z][a-z]+")


def query_type(query: str) -> int:
    """The index in QUERY_TYPES of the question word the query opens with (or has in its
    first words), else len(QUERY_TYPES)."""
    q = query.lower().lstrip()
    head = " " + q[:24] + " "
    for i, w in enumerate(QUERY_TYPES):
        if q.startswith(w + " ") or f" {w} " in head:
            return i
    return len(QUERY_TYPES)


@dataclass
class Evidence:
    """What the fused stage knows, by memory id."""

    keyword: Mapping[int, float]  # keyword score / the best keyword score
    z: Mapping[int, float]  # z-scored cosine (candidates and neighbours)
    why: Mapping[int, Mapping[str, float]]  # the fused stage's channel parts (weighted)
    fused: Mapping[int, float]  # every candidate's fused score
    rows: Mapping[int, Row]
    before: Mapping[int, Sequence[int]]  # the session's turns before each top id, nearest first
    after: Mapping[int, Sequence[int]]
    keyword_rank: Mapping[int, int]
    semantic_rank: Mapping[int, int]
    weights: Mapping[str, float]  # channel weights, to turn why-parts back into signals


def matrix(query: str, ids: Sequence[int], ev: Evidence) -> npt.NDArray[np.float64]:
    """One row of FEATURES for each id, in order."""
    w = ev.weights

    kw, z = ev.keyword, ev.z

    def base(i: int) -> float:
        return kw.get(i, 0.0) + SEMANTIC_SHARE * z.get(i, 0.0)

    # Each session's best and top-3 mean base score over the candidates, and its rank.
    best: dict[str, float] = {}
    top: dict[str, list[float]] = {}
    for i in ev.fused:
        row = ev.rows.get(i)
        if row is None or row.session is None:
            continue
        v, s = base(i), row.session
        t = top.get(s)
        if t is None:
            best[s], top[s] = v, [v]
            continue
        best[s] = max(best[s], v)
        if len(t) < 3:
            t.append(v)
        elif v > min(t):
            t[t.index(min(t))] = v
    top3 = {s: sum(v) / len(v) for s, v in top.items()}
    rank = {s: r for r, s in enumerate(sorted(top3, key=lambda s: -top3[s]))}
    qt = float(query_type(query))
    out = []
    for i in ids:
        parts = ev.why.get(i, {})
        row = ev.rows.get(i)
        text = _spoken(row.text if row is not None else None)
        b, a = ev.before.get(i, ()), ev.after.get(i, ())
        prev = ev.rows.get(b[0]) if b else None
        sess = row.session if row is not None else None
        own = base(i)
        out.append((
            kw.get(i, 0.0),
            z.get(i, 0.0),
            float("time" in parts),
            parts.get("entity", 0.0) / (w.get("entity") or 1.0),
            parts.get("session", 0.0) / (w.get("session") or 1.0),
            float("speaker" in parts),
            ev.fused.get(i, 0.0),
            base(b[0]) if b else 0.0,
            base(a[0]) if a else 0.0,
            base(b[1]) if len(b) > 1 else 0.0,
            base(a[1]) if len(a) > 1 else 0.0,
            z.get(b[0], 0.0) if b else 0.0,
            z.get(a[0], 0.0) if a else 0.0,
            float(prev is not None and _spoken(prev.text).rstrip().endswith("?")),
            float(text.rstrip().endswith("?")),
            math.log(len(text) + 1),
            float(_DIGIT.search(text) is not None),
            float('"' in text),
            float(len(_CAPITALIZED.findall(text))),
            math.log1p(ev.keyword_rank.get(i, ABSENT_RANK)),
            math.log1p(ev.semantic_rank.get(i, ABSENT_RANK)),
            qt,
            best.get(sess, own) if sess is not None else own,
            top3.get(sess, own) if sess is not None else own,
            math.log1p(rank.get(sess, len(rank))) if sess is not None else math.log1p(len(rank)),
        ))  # fmt: skip
    return np.array(out, dtype=np.float64).reshape(len(ids), len(FEATURES))


def _spoken(text: str | None) -> str:
    """The text without a leading "Speaker: " (a chat turn's speaker is its own feature)."""
    if not text:
        return ""
    head, sep, rest = text.partition(": ")
    return rest if sep and 0 < len(head) <= 40 and "\n" not in head else text
