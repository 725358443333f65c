"""Multi-channel retrieval: keyword, semantic, temporal, entity, session context and
speaker, fused into one ranking with a relevance floor. Every hit says which channels found
it and how much each gave (``why``).

  base  = bm25 / max bm25  +  0.2 · z(cos)  +  0.4 · [inside a date the query names]
          + 0.1 · [mentions a (non-speaker) name the query names]
  score = base + 0.8 · (base(anchor) / base(best))²  for turns within ±2 of one of the
          20 best anchors in the same session  +  0.5 · [spoken by the one participant the
          query names]

z(cos) standardizes the query's cosine by its mean and spread over the store (estimated on
a sample). Plain rank fusion (RRF) loses to BM25 alone on conversational memory: scores keep
the margins ranks throw away, and the reply next to the turn that matches a question is
very often its answer. Weights come from a grid search on the LoCoMo dev split that a
leave-one-conversation-out check reproduces on every fold (bench/recall_quality.py).

Then the re-ranker (``ranker.py``, gradient-boosted trees over ``features.py``) orders the
conversation turns among the fused top 30 by what the fused sum cannot weigh: the
neighbours' and the session's evidence, the text's shape, the query's type. Held out of its
training conversation by conversation it takes dev recall@10 from 0.790 to 0.803
(bench/README.md); ``Memory.open(ranker="off")`` keeps the fused order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from localmem import forgetting as lc
from localmem.catalog import Catalog, Row
from localmem.embed import embed_queries
from localmem.items import REPLY_TAG, Hit, MemoryItem
from localmem.memstore import MemoryStore
from localmem.memstore.forms import binary_code, hamming_to_cos
from localmem.recall import features
from localmem.recall.ranker import Ranker
from localmem.text import entities as ents
from localmem.text import timeexpr
from localmem.text.terms import query_terms


@dataclass(frozen=True)
class Weights:
    # Grid-searched on the LoCoMo dev split (bench/recall_quality.py; the grid and its
    # neighbourhood are in the issue note): the keyword channel leads, the semantic z-score
    # breaks ties and finds paraphrases, and the turns around a strong hit matter a lot in
    # conversation (the answer is often the reply next to the matching turn).
    keyword: float = 1.0
    semantic: float = 0.2
    session: float = 0.8  # neighbours (±width turns) of the top hits: session · strength²
    session_width: int = 2
    session_top: int = 20
    time: float = 0.4  # inside a date window the query names; counted before the anchors
    speaker: float = 0.5  # turns spoken by the one participant the query names; added last
    entity: float = 0.1
    candidates: int = 100
    rerank_top: int = 30  # the fused top-N the re-ranker (ranker.py) orders
    z_sample: int = 1024  # memories whose cosines estimate the mean and spread for z(cos)
    # The relevance floor, on absolute evidence (a z-score only ranks: in a small store the
    # best of unrelated memories still scores high). A hit is kept if its cosine reaches
    # `cos_floor`; or half that with a keyword match of at least `kw_floor` of the best; or
    # it sits next to a kept hit in its session; or it is in a time window the query names.
    cos_floor: float = 0.30
    kw_floor: float = 0.5


WEIGHTS = Weights()
# Taken off the score of a memory a newer, live one contradicts: it still shows, below (a
# fused score is ~1-3 for a good match; half a keyword match's worth moves it under its
# replacement without burying it).
SUPERSEDED = 0.5
MIN_COS_SPREAD = 0.05


def named_speakers(query: str, speakers: list[str]) -> list[str]:
    """The speakers whose name appears in the query as a word."""
    q = query.lower()
    return [s for s in speakers if re.search(r"\b" + re.escape(s.lower()) + r"\b", q)]


class Retriever:
    """Recall over one ``MemoryStore`` (it caches what it samples of the store)."""

    def __init__(
        self, records: MemoryStore, weights: Weights = WEIGHTS, ranker: Ranker | None = None
    ) -> None:
        self.records, self.w, self.ranker = records, weights, ranker
        # Called with (query, ids, features) at each re-ranking: how the ranker's training
        # data is gathered (bench/recall_quality.py), and a way to see what it saw.
        self.trace: Callable[[str, list[int], np.ndarray], object] | None = None
        self._sample: np.ndarray | None = None
        self._sample_n = 0
        self._shape_at = -1
        self._shape_cache: tuple[int, list[str]] = (0, [])
        self._replies_at = -1
        self._replies: tuple[np.ndarray, set[int]] = (np.zeros(0, np.int64), set())

    def _reply_ids(self) -> tuple[np.ndarray, set[int]] | None:
        """The ids of the assistant's replies, as an array and a set (None: there are none),
        kept up to date by looking only at the memories written since the last look. New
        objects each time, never changed after: another thread's recall may be using them."""
        cat = self.records.catalog
        at = cat.applied_lsn
        if at != self._replies_at:
            if at < self._replies_at or self._replies_at < 0:  # first look, or a new catalog
                ids = set(cat.tagged(REPLY_TAG)[0])
            else:  # the rows written since the last look (their ``lsn`` is past it)
                on, off = cat.tagged(REPLY_TAG, self._replies_at)
                ids = (self._replies[1] - set(off)) | set(on)
            self._replies = (np.fromiter(sorted(ids), np.int64), ids)
            self._replies_at = at
        return self._replies if self._replies[1] else None

    def _shape(self) -> tuple[int, list[str]]:
        """How many memories and which speakers, cached until the catalog moves."""
        cat = self.records.catalog
        at = cat.applied_lsn
        if at != self._shape_at:
            self._shape_cache = (cat.live_count(), cat.speakers())
            self._shape_at = at
        return self._shape_cache

    def _cos_stats(self, qv: np.ndarray, n: int) -> tuple[float, float]:
        """Mean and spread of the query's cosine over the store, from a random sample of
        the memories' vectors (redrawn when the store grew or shrank by a quarter)."""
        if self._sample is None or not 0.75 * self._sample_n <= n <= 1.25 * self._sample_n:
            # From the index's codes: reading the vectors from the arena would fault most
            # of it into memory (random reads, each pulling in a readahead window).
            ids = self.records.catalog.sample_ids(self.w.z_sample)
            self._sample = self.records.store.index_vectors(ids)[1]
            self._sample_n = n
        if len(self._sample) < 2:
            return 0.0, 1.0
        sims = self._sample @ qv
        # A floor on the spread: in a store of near-identical texts the z-score would blow
        # tiny cosine differences up past every other channel (MiniLM on real chat: 0.06-0.16).
        return float(sims.mean()), max(float(sims.std()), MIN_COS_SPREAD)

    def recall(
        self,
        query: str,
        k: int,
        *,
        now: float,
        kind: str | None = None,
        session: str | None = None,
        floor: bool = True,
        replies: bool = True,
    ) -> list[Hit]:
        """The ``k`` best hits (``replies=False``: the assistant's replies left out; they
        still count as channel evidence, e.g. as a session's neighbours)."""
        w = self.w
        cat, store = self.records.catalog, self.records.store
        n, speakers = self._shape()
        if n == 0:
            return []
        qv = embed_queries(self.records.embedder, [query])[0]
        why: dict[int, dict[str, float]] = {}

        # A kind or session filter narrows every channel (filtering the fused candidates
        # afterwards would miss whatever other kinds or sessions crowded out); so does
        # leaving the replies out: in a chat's store they repeat the user's words, and would
        # fill the channels' candidates.
        allow = cat.ids_matching(kind=kind, session=session)
        known = None if replies else self._reply_ids()
        deny, denied = (None, set()) if known is None else known
        if allow is not None and deny is not None:
            allow = sorted(set(allow) - denied)
        if allow is not None and not allow:
            return []
        # Semantic channel: the INT8 index.
        if allow is None:
            sem = dict(store.search(qv, min(w.candidates, n), deny=deny))
        else:
            sem = dict(store.search(qv, min(w.candidates, len(allow)), allow=allow))
        sem_rank = {i: r for r, i in enumerate(sem)}
        # Keyword channel: FTS5 BM25. Speakers' names stay out of it: every turn starts
        # with one, so such a term matches half the store (the costliest FTS5 term at 100k
        # memories) and says nothing the speaker channel does not say better.
        named = named_speakers(query, speakers)
        low = {s.lower() for s in speakers}
        terms = query_terms(query)
        terms = [t for t in terms if t not in low] or terms
        kw = dict(
            cat.keyword(terms, w.candidates, kind=kind, session=session,
                        without_tag=None if deny is None else REPLY_TAG)
        )  # fmt: skip
        kw_rank = {i: r for r, i in enumerate(kw)}
        # Temporal channel, candidates: the memories inside a window the query names (a
        # bounded number: the window boosts keyword and semantic candidates too).
        try:
            windows = timeexpr.find(query, datetime.fromtimestamp(now)) if w.time else []
        except (ValueError, OverflowError, OSError):
            windows = []  # a "now" at the edge of the calendar: no relative dates
        in_window = {i for win in windows for i in cat.in_time(win.start, win.end, w.candidates)}
        # Cold tier: sign codes by Hamming distance (sqlite-vec), as an estimated cosine.
        # (Replies fade fast, so the cold tier holds many: twice the candidates, then
        # filtered.)
        code = binary_code(qv)
        cold_k = w.candidates if deny is None else 2 * w.candidates
        cold = {i: hamming_to_cos(d, 8 * len(code)) for i, d in cat.cold_search(code, cold_k)}
        if deny is not None:
            in_window -= denied
            cold = {i: c for i, c in cold.items() if i not in denied}
            cold = dict(list(cold.items())[: w.candidates])
        cand = set(sem) | set(kw) | in_window | set(cold)
        sem.update({i: c for i, c in cold.items() if i not in sem})
        # Cosine of the other candidates from the index's codes, for one scale.
        ids, vecs = store.index_vectors(sorted(cand - set(sem)))
        sem.update(zip(ids.tolist(), (vecs @ qv).tolist(), strict=True))
        cos = dict(sem)
        mu, sd = self._cos_stats(qv, n)
        kmax = max(kw.values()) if kw else 1.0
        score: dict[int, float] = {}
        for id in cand:
            parts = why.setdefault(id, {})
            s = 0.0
            if id in kw:
                parts["keyword"] = w.keyword * kw[id] / kmax
                s += parts["keyword"]
            if id in sem:
                parts["semantic"] = w.semantic * (sem[id] - mu) / sd
                s += parts["semantic"]
            score[id] = s

        rows = cat.rows(list(cand))
        # Entity channel: names in the query -> memories that mention them.
        # (Speakers are the speaker channel's: as entities they match half a conversation.)
        names = [k for k in ents.keys(ents.extract(query)) if k not in low]
        if names and w.entity:
            hits = cat.with_entities(names, 10 * w.candidates)
            for id, c in hits.items():
                if id not in score:
                    continue  # a boost among candidates: alone it would flood with a speaker
                b = w.entity * min(c, 2) / 2
                why[id]["entity"] = b
                score[id] += b
        # Temporal channel: a window named in the query boosts the candidates inside it.
        for id in cand:
            row = rows.get(id)
            if row is not None and any(win.contains(row.event_time) for win in windows):
                why[id]["time"] = w.time
                score[id] += w.time

        def relevant(id: int) -> bool:
            c = cos.get(id, 0.0)
            parts = why.get(id, {})
            if c >= w.cos_floor:
                return True
            keyword_or_time = parts.get("keyword", 0.0) >= w.kw_floor * w.keyword or (
                "time" in parts
            )
            return c >= w.cos_floor / 2 and keyword_or_time

        anchors: set[int] = set()
        near = _Neighbours(cat, w.session_width)
        # Session context: turns next to a strong hit in the same conversation.
        if w.session:
            top = sorted(score.items(), key=lambda kv: -kv[1])[: w.session_top]
            near.prefetch(
                [(i, sn) for i, _ in top if i in rows and (sn := rows[i].session) is not None]
            )
            best = top[0][1] if top else 0.0
            boost: dict[int, float] = {}
            for id, s in top:
                row = rows.get(id)
                if row is None or row.session is None or s <= 0 or best <= 0:
                    continue
                kept = relevant(id)
                b = w.session * (s / best) ** 2
                for nb in near.around(id, row.session):
                    if kept:
                        anchors.add(nb)
                    boost[nb] = max(boost.get(nb, 0.0), b)
            rows.update(cat.rows([i for i in boost if i not in rows]))
            for nb, b in boost.items():
                if nb not in score:
                    score[nb] = 0.0
                    why[nb] = {}
                why[nb]["session"] = b
                score[nb] += b

        # Speaker: the question names exactly one participant -> the turns they spoke.
        # Added after the neighbours, so that it re-orders but does not choose anchors.
        if len(named) == 1 and w.speaker:
            for id in score:
                row = rows.get(id)
                if row is not None and row.speaker == named[0]:
                    why[id]["speaker"] = w.speaker
                    score[id] += w.speaker

        ranker = self.ranker  # read once: another thread may swap it
        if ranker is not None and w.rerank_top > 1:
            self._rerank(ranker, query, qv, score, why, rows, near, kw, kmax, cos, (mu, sd),
                         kw_rank, sem_rank)  # fmt: skip

        # Retention: a faded memory must be more relevant to outrank a fresh one. And a
        # memory a newer, still live one contradicts ranks below. (Both scale a positive
        # score down and a negative one further down.)
        retention: dict[int, float] = {}
        rows.update(cat.rows([i for i in score if i not in rows]))
        newer = cat.rows(
            [int(r.superseded_by) for r in rows.values() if r.superseded_by is not None]
        )
        for id in score:
            row = rows.get(id)
            if row is None or row.tier == "forgotten":
                score[id] = float("-inf")  # never returned (a safety net: no index has it)
                continue
            r = lc.retention(now, row.t_last, row.stability, pinned=bool(row.pinned))
            retention[id] = r
            factor = lc.rank_weight(r)
            score[id] = score[id] * factor if score[id] > 0 else score[id] / factor
            sup = row.superseded_by
            if sup is not None and sup in newer and newer[sup].tier != "forgotten":
                score[id] -= SUPERSEDED
                why[id]["superseded_by"] = float(sup)

        ranked = sorted(score.items(), key=lambda kv: -kv[1])
        out: list[Hit] = []
        for id, s in ranked:
            if s == float("-inf"):
                break
            if floor and not (relevant(id) or id in anchors):
                continue
            row = rows.get(id)
            if row is None:
                continue
            item = MemoryItem.from_row(row)
            if kind is not None and item.kind != kind:
                continue
            if session is not None and item.session != session:
                continue
            if not replies and item.is_reply:
                continue
            out.append(
                Hit(
                    memory=item,
                    score=float(s),
                    why=dict(why.get(id, {})),
                    retention=retention.get(id, 1.0),
                    cosine=cos.get(id),
                )
            )
            if len(out) == k:
                break
        return out

    def _rerank(
        self,
        ranker: Ranker,
        query: str,
        qv: np.ndarray,
        score: dict[int, float],
        why: dict[int, dict[str, float]],
        rows: dict[int, Row],
        near: _Neighbours,
        kw: dict[int, float],
        kmax: float,
        cos: dict[int, float],
        stats: tuple[float, float],
        kw_rank: dict[int, int],
        sem_rank: dict[int, int],
    ) -> None:
        """Re-orders the conversation turns of the fused top-N by the ranker: their fused
        scores are handed out again in the ranker's order, so the scale (and what retention
        and supersession take off it) stays the fused one. ``why["rerank"]`` keeps the
        ranker's own score."""
        cat, store = self.records.catalog, self.records.store
        top = [i for i, _ in sorted(score.items(), key=lambda kv: -kv[1])[: self.w.rerank_top]]
        # Only turns of a conversation (a session) are re-ranked, among their own places: the
        # ranker learned from conversations, and on facts told outside one (no neighbours, no
        # session, evidence from the semantic channel alone) it was seen to prefer names and
        # long texts over the meaning ("Which foods should I avoid?" -> "My manager is Priya
        # Raman"). Those keep their fused place.
        turns = [(i, s) for i in top if i in rows and (s := rows[i].session) is not None]
        if len(turns) < 2:
            return
        top = [i for i, _ in turns]
        before: dict[int, list[int]] = {}
        after: dict[int, list[int]] = {}
        near.prefetch(turns)
        for i, sess in turns:
            nb = near.around(i, sess)
            before[i] = sorted((x for x in nb if x < i), reverse=True)
            after[i] = sorted(x for x in nb if x > i)
        # The turn before each: whether it asks a question is a feature (its text is needed).
        extra = {x for i in top for x in before[i][:1]} - rows.keys()
        rows.update(cat.rows(sorted(extra)))
        # Cosines of the neighbours the fused stage did not score (a copy: the relevance floor
        # keeps judging by what the channels found).
        cos = dict(cos)
        near_ids = {x for i in top for x in before[i] + after[i]}  # holds ``extra`` too
        need = sorted((score.keys() | near_ids) - cos.keys())
        ids, vecs = store.index_vectors(need)
        cos.update(zip(ids.tolist(), (vecs @ qv).tolist(), strict=True))
        mu, sd = stats
        ev = features.Evidence(
            keyword={i: v / kmax for i, v in kw.items()},
            z={i: (c - mu) / sd for i, c in cos.items()},
            why=why,
            fused=score,
            rows=rows,
            before=before,
            after=after,
            keyword_rank=kw_rank,
            semantic_rank=sem_rank,
            weights={"entity": self.w.entity, "session": self.w.session},
        )
        x = features.matrix(query, top, ev)
        if self.trace is not None:
            self.trace(query, top, x)
        r = ranker.score(x)
        values = sorted((score[i] for i in top), reverse=True)
        for j, v in zip(np.argsort(-r, kind="stable"), values, strict=True):
            i = top[int(j)]
            score[i] = v
            why[i]["rerank"] = float(r[j])


class _Neighbours:
    """The session neighbours of a memory (±width), each looked up once per recall."""

    def __init__(self, catalog: Catalog, width: int) -> None:
        self._cat, self._width = catalog, width
        self._seen: dict[int, list[int]] = {}

    def prefetch(self, wanted: list[tuple[int, str]]) -> None:
        todo = [(i, s) for i, s in wanted if i not in self._seen]
        if todo:
            self._seen.update(self._cat.session_neighbours_many(todo, self._width))

    def around(self, id: int, session: str) -> list[int]:
        if id not in self._seen:
            self._seen[id] = self._cat.session_neighbours(id, session, self._width)
        return self._seen[id]
