"""The catalog's queries: every read the layers above ask of it, by name, so that SQL stays
in this package. Each returns verified rows (``Row``) or plain ids and figures."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

import apsw

from localmem.catalog.rows import COLUMNS, Row

LIVE = "tier != 'forgotten'"  # forgotten memories are out of every index
READ = COLUMNS + ", crc"  # what a read selects: the row and its checksum
_WORD = re.compile(r"\w+", re.UNICODE)


def _filters(kind: str | None, session: str | None, prefix: str = "") -> tuple[str, list[Any]]:
    conds, params = [], []
    if kind is not None:
        conds.append(f"{prefix}kind = ?")
        params.append(kind)
    if session is not None:
        conds.append(f"{prefix}session = ?")
        params.append(session)
    return " AND ".join(conds), params


class CatalogReads:
    """The read half of ``Catalog`` (which owns the connection, the lock and the repair of
    a row that fails its checksum)."""

    _db: apsw.Connection
    _lock: threading.RLock

    def _verified(self, rows: list[tuple[Any, ...]]) -> list[Row]:
        raise NotImplementedError

    def _select(
        self,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        order: str = "id",
        limit: int = -1,
        offset: int = 0,
    ) -> list[Row]:
        q = f"SELECT {READ} FROM memories"
        if where:
            q += f" WHERE {where}"
        q += f" ORDER BY {order} LIMIT ? OFFSET ?"
        with self._lock:
            return self._verified(list(self._db.execute(q, (*params, limit, offset))))

    def rows(self, ids: Sequence[int]) -> dict[int, Row]:
        """id -> row for the ids that exist; every row verified (``Catalog._verified``)."""
        out: dict[int, Row] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                q = f"SELECT {READ} FROM memories WHERE id IN ({','.join('?' * len(chunk))})"
                for row in self._verified(list(self._db.execute(q, chunk))):
                    out[int(row.id)] = row
        return out

    def all_rows(self) -> list[Row]:
        """Every row, forgotten ones too, in id order."""
        return self._select()

    def page(
        self,
        *,
        kind: str | None = None,
        session: str | None = None,
        tag: str | None = None,
        tier: str | None = None,
        since: float | None = None,
        until: float | None = None,
        newest_first: bool = True,
        limit: int = -1,
        offset: int = 0,
        source: str | None = None,
    ) -> list[Row]:
        """Memories by event time (ties by id), filtered; forgotten ones only when ``tier``
        asks for them. ``since`` <= event time <= ``until``."""
        where: list[str] = ["tier=?" if tier else LIVE]
        params: list[Any] = [tier] if tier else []
        more, more_params = _filters(kind, session)
        if more:
            where.append(more)
            params += more_params
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value=?)")
            params.append(tag)
        if since is not None:
            where.append("event_time >= ?")
            params.append(since)
        if until is not None:
            where.append("event_time <= ?")
            params.append(until)
        order = "event_time DESC, id DESC" if newest_first else "event_time, id"
        return self._select(" AND ".join(where), params, order=order, limit=limit, offset=offset)

    def keyed(self, key: str, text: str) -> Row | None:
        """A live memory with this ``key`` and this very text (what a retried ``remember``
        finds of its first try)."""
        rows = self._select(f"key = ? AND text = ? AND {LIVE}", (key, text), limit=1)
        return rows[0] if rows else None

    def session_turns(self, session: str) -> list[Row]:
        """The live turns (episodic memories) of a session, in order."""
        return self._select(
            f"session = ? AND kind = 'episodic' AND {LIVE}", (session,), order="event_time, id"
        )

    def others_keyed(self, session: str, key: str, but: int) -> list[Row]:
        """The live memories of ``session`` with ``key``, but memory ``but``."""
        return self._select(f"session = ? AND key = ? AND id != ? AND {LIVE}", (session, key, but))

    def count(self) -> int:
        """Rows, forgotten ones too."""
        return self._scalar("SELECT count(*) FROM memories")

    def live_count(self) -> int:
        """Memories not forgotten."""
        return self._scalar(f"SELECT count(*) FROM memories WHERE {LIVE}")

    def _scalar(self, q: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            row = self._db.execute(q, params).fetchone()
        return int(row[0] or 0) if row else 0

    def counts_by_kind(self) -> dict[str, int]:
        """Live memories by kind."""
        with self._lock:
            q = f"SELECT kind, count(*) FROM memories WHERE {LIVE} GROUP BY kind"
            return {str(k): int(n) for k, n in self._db.execute(q)}

    def counts_by_tier(self) -> dict[str, int]:
        with self._lock:
            q = "SELECT tier, count(*) FROM memories GROUP BY tier"
            return {str(k): int(n) for k, n in self._db.execute(q)}

    def first_model(self) -> str | None:
        """The embedding model some live memory names (a rebuilt catalog lost its state)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT model FROM memories WHERE model IS NOT NULL AND {LIVE} LIMIT 1"
            ).fetchone()
        return str(row[0]) if row else None

    def all_ids(self) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT id FROM memories")]

    def ids_matching(self, *, kind: str | None, session: str | None) -> list[int] | None:
        """Ids of the live memories of ``kind`` and/or ``session``; None without a filter."""
        where, params = _filters(kind, session)
        if not where:
            return None
        with self._lock:
            q = f"SELECT id FROM memories WHERE {where} AND {LIVE}"
            return [int(r[0]) for r in self._db.execute(q, params)]

    def keyword(
        self,
        terms: Sequence[str],
        limit: int,
        *,
        kind: str | None = None,
        session: str | None = None,
        without_tag: str | None = None,
    ) -> list[tuple[int, float]]:
        """BM25 over the FTS5 index: (id, score) best first, score > 0 (higher is better),
        of the memories of ``kind`` and/or ``session`` if given, not tagged ``without_tag``."""
        words = [w for t in terms for w in _WORD.findall(t)]
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
        where, params = _filters(kind, session, "m.")
        if without_tag is not None:
            # LIKE first: json_each only for the rows it cannot rule out.
            where += (" AND " if where else "") + (
                "NOT (m.tags LIKE ? AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?))"
            )
            params += ["%" + json.dumps(without_tag, ensure_ascii=False) + "%", without_tag]
        if where:
            q = (
                "SELECT f.rowid, bm25(memories_fts) AS s FROM memories_fts f "
                f"JOIN memories m ON m.id = f.rowid WHERE memories_fts MATCH ? AND {where} "
                "ORDER BY s LIMIT ?"
            )
        else:
            q = (
                "SELECT rowid, bm25(memories_fts) AS s FROM memories_fts "
                "WHERE memories_fts MATCH ? ORDER BY s LIMIT ?"
            )
        with self._lock:
            return [(int(r[0]), -float(r[1])) for r in self._db.execute(q, (match, *params, limit))]

    def session_neighbours(self, id: int, session: str, width: int) -> list[int]:
        """Ids of the ``width`` memories before and after ``id`` in its session."""
        with self._lock:
            before = self._db.execute(
                f"SELECT id FROM memories WHERE session=? AND id<? AND {LIVE} "
                "ORDER BY id DESC LIMIT ?",
                (session, id, width),
            ).fetchall()
            after = self._db.execute(
                f"SELECT id FROM memories WHERE session=? AND id>? AND {LIVE} ORDER BY id LIMIT ?",
                (session, id, width),
            ).fetchall()
        return [int(r[0]) for r in before + after]  # type: ignore[arg-type]

    def session_neighbours_many(
        self, wanted: Sequence[tuple[int, str]], width: int
    ) -> dict[int, list[int]]:
        """``session_neighbours`` for many (id, session) pairs in one statement: a row per
        pair, each neighbour an index seek (one execute instead of 2 per id: at 100k
        memories the per-statement cost was most of a re-ranked recall's extra time)."""
        if not wanted or width < 1:
            return {i: [] for i, _ in wanted}
        cols = []
        for k in range(width):
            cols.append(
                f"(SELECT id FROM memories WHERE session=t.s AND id<t.a AND {LIVE} "
                f"ORDER BY id DESC LIMIT 1 OFFSET {k})"
            )
            cols.append(
                f"(SELECT id FROM memories WHERE session=t.s AND id>t.a AND {LIVE} "
                f"ORDER BY id LIMIT 1 OFFSET {k})"
            )
        out: dict[int, list[int]] = {}
        for start in range(0, len(wanted), 200):  # well under SQLite's bound-variable limit
            chunk = wanted[start : start + 200]
            values = ",".join("(?,?)" for _ in chunk)
            q = f"WITH t(a, s) AS (VALUES {values}) SELECT t.a, {', '.join(cols)} FROM t"
            args = [x for i, sess in chunk for x in (i, sess)]
            with self._lock:
                rows = self._db.execute(q, args).fetchall()
            for a, *nb in rows:
                before = [int(x) for x in nb[0::2] if x is not None]
                after = [int(x) for x in nb[1::2] if x is not None]
                out[int(a)] = before + after  # type: ignore[arg-type]
        return out

    def with_entities(self, names: Sequence[str], limit: int) -> dict[int, int]:
        """id -> how many of ``names`` each memory mentions."""
        if not names:
            return {}
        with self._lock:
            q = (
                "SELECT id, count(*) FROM entities WHERE name IN "
                f"({','.join('?' * len(names))}) GROUP BY id LIMIT ?"
            )
            return {int(i): int(c) for i, c in self._db.execute(q, (*names, limit))}

    def in_time(self, lo: float, hi: float, limit: int) -> list[int]:
        with self._lock:
            return [
                int(r[0])
                for r in self._db.execute(
                    "SELECT id FROM memories WHERE event_time >= ? AND event_time < ? "
                    f"AND {LIVE} LIMIT ?",
                    (lo, hi, limit),
                )
            ]

    def speakers(self) -> list[str]:
        """The distinct speakers ("Name:" prefixes) of the memories."""
        with self._lock:
            return [
                str(r[0])
                for r in self._db.execute(
                    "SELECT DISTINCT speaker FROM memories WHERE speaker IS NOT NULL"
                )
            ]

    def lifecycle_after(
        self, cursor: int, limit: int
    ) -> list[tuple[int, str, float, float, int, float | None]]:
        """(id, tier, stability, t_last, pinned, forgotten_at) of up to ``limit`` memories
        with id > ``cursor``, in id order: the forgetting sweep's resumable scan."""
        with self._lock:
            return [
                (int(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4]), r[5])
                for r in self._db.execute(
                    "SELECT id, tier, stability, t_last, pinned, forgotten_at FROM memories "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (cursor, limit),
                )
            ]

    def unmerged_after(self, cursor: int, limit: int) -> list[int]:
        """Ids of up to ``limit`` hot or warm memories not merged into another, with id >
        ``cursor``, in id order: consolidation's resumable scan."""
        with self._lock:
            return [
                int(r[0])
                for r in self._db.execute(
                    "SELECT id FROM memories WHERE id > ? AND tier IN ('hot', 'warm') "
                    "AND merged_into IS NULL ORDER BY id LIMIT ?",
                    (cursor, limit),
                )
            ]

    def ended_sessions(self, before: float, min_turns: int, limit: int) -> list[tuple[str, float]]:
        """(session, time of its last turn) of the sessions with at least ``min_turns``
        live turns whose last turn is at or before ``before`` and later than their newest
        summary (key ``summary:<session>``, dated at the last turn it covers; none yet, or
        the conversation went on since), oldest first. Two passes over the table: the
        summaries are written rarely and looked for once per step."""
        with self._lock:
            return [
                (str(s), float(t))
                for s, t in self._db.execute(
                    "SELECT e.session, e.t FROM ("
                    "  SELECT session, max(event_time) AS t, count(*) AS n FROM memories"
                    f"  WHERE kind = 'episodic' AND session IS NOT NULL AND {LIVE}"
                    "  GROUP BY session"
                    ") e LEFT JOIN ("
                    "  SELECT session, max(event_time) AS st FROM memories"
                    "  WHERE key = 'summary:' || session GROUP BY session"
                    ") d ON d.session = e.session "
                    "WHERE e.n >= ? AND e.t <= ? AND (d.st IS NULL OR d.st < e.t) "
                    "ORDER BY e.t, e.session LIMIT ?",
                    (min_turns, before, limit),
                )
            ]

    def sample_ids(self, n: int) -> list[int]:
        """Up to ``n`` ids drawn at random."""
        with self._lock:
            return [
                int(r[0])
                for r in self._db.execute(
                    "SELECT id FROM memories WHERE tier IN ('hot', 'warm') "
                    "ORDER BY random() LIMIT ?",
                    (n,),
                )
            ]

    def tagged(self, tag: str, since_lsn: int = 0) -> tuple[list[int], list[int]]:
        """The memories written after log position ``since_lsn`` (0: all), as the ids of
        those tagged ``tag`` and (only when ``since_lsn`` is given) of the others."""
        has = "EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)"
        like = "%" + json.dumps(tag, ensure_ascii=False) + "%"  # a wider net: json_each is exact
        with self._lock:
            if since_lsn <= 0:  # LIKE first: a cheap scan, json_each only on its matches
                q = f"SELECT id FROM memories WHERE tags LIKE ? AND {has}"
                return [int(r[0]) for r in self._db.execute(q, (like, tag))], []
            q = f"SELECT id, {has} FROM memories WHERE lsn > ?"
            on: list[int] = []
            off: list[int] = []
            for id, yes in self._db.execute(q, (tag, since_lsn)):
                (on if yes else off).append(int(id))
            return on, off

    def max_id(self, lo: int = 0, hi: int = 2**63 - 1) -> int:
        """The largest id listed in [lo, hi) (0 if none)."""
        return self._scalar("SELECT max(id) FROM memories WHERE id >= ? AND id < ?", (lo, hi))
