"""The catalog: a SQLite view of the store for everything that is not a vector.

One row per memory (metadata and lifecycle fields), an FTS5 index for the keyword channel,
the entities each memory mentions, and the LSN of the last log record applied. Like every
view it can be rebuilt from the log (or, past a checkpoint, from the store's items), so it
runs with ``synchronous=NORMAL``: a crash may lose its last transactions, never the
memories — the next open replays them.

A forgotten memory is out of every index (FTS5, entities, cold codes, the time and session
indexes), and its row keeps only what the sweep, ``list(tier=...)`` and the counts read: its
text, entities, speaker, model and provenance stay in the store's item until the purge
(``full_row`` completes the row from it), and ``restore`` writes the memory again in full,
which derives every index entry anew. Most memories of a long-used store end up forgotten
(half of those a simulated year holds: bench/lifecycle.py); a second copy of their text and
metadata here nearly doubled what each cost.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apsw
import sqlite_vec  # type: ignore[import-untyped]

from localmem import entities as ents
from localmem import memmeta
from localmem.errors import CorruptFileError, StorageError
from localmem.store import records as rec

SCHEMA_VERSION = 6  # 6: slim rows for forgotten memories, two indexes fewer
# unicode61 folds case and diacritics and splits on punctuation; porter stems ("moved",
# "moving" -> "move") so the keyword channel matches inflections.
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
LIVE = "tier != 'forgotten'"  # forgotten memories are out of every index

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    text TEXT,  -- NULL when forgotten: the store's item keeps it until the purge
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    session TEXT,
    key TEXT,
    event_time REAL NOT NULL,
    created_time REAL NOT NULL,
    importance REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    entities TEXT NOT NULL DEFAULT '[]',
    model TEXT,
    lsn INTEGER NOT NULL,
    speaker TEXT,
    tier TEXT NOT NULL DEFAULT 'hot',
    stability REAL NOT NULL DEFAULT 1.0,
    t_last REAL NOT NULL DEFAULT 0.0,
    recalls INTEGER NOT NULL DEFAULT 0,
    forgotten_at REAL,
    superseded_by INTEGER,  -- a newer fact that contradicts this one
    merged_into INTEGER,    -- the memory this near-duplicate was merged into
    sources TEXT NOT NULL DEFAULT '[]'  -- provenance of the duplicates merged into this one
);
CREATE INDEX IF NOT EXISTS memories_tier ON memories(tier, id);
-- Forgotten memories are out of every index; the queries these serve say LIVE too.
CREATE INDEX IF NOT EXISTS memories_session ON memories(session, id) WHERE {LIVE};
CREATE INDEX IF NOT EXISTS memories_time ON memories(event_time) WHERE {LIVE};
CREATE INDEX IF NOT EXISTS memories_speaker ON memories(speaker) WHERE speaker IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='', contentless_delete=1, tokenize='{FTS_TOKENIZER}'
);
-- No index on id: a memory's entries are deleted by (name, id), the names read from its row.
CREATE TABLE IF NOT EXISTS entities (
    name TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (name, id)
) WITHOUT ROWID;
"""

COLUMNS = (
    "id, text, kind, source, session, key, event_time, created_time, importance, pinned, "
    "tags, entities, model, lsn, speaker, tier, stability, t_last, recalls, forgotten_at, "
    "superseded_by, merged_into, sources"
)
_TABLES = ("memories", "memories_fts", "entities", "cold_codes")

_WORD = re.compile(r"\w+", re.UNICODE)
UNREADABLE_KEPT = 1000  # the newest unreadable items the catalog names (state "unreadable")
log = logging.getLogger("localmem.catalog")


class Catalog:
    """The SQLite catalog of one store (``<store>/catalog.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = apsw.Connection(str(self.path))
            self.db.set_busy_timeout(30_000)
            # sqlite-vec: the cold tier's compact binary codes (vec0 table, Hamming KNN).
            self.db.enable_load_extension(True)
            self.db.load_extension(sqlite_vec.loadable_path())
            self.db.enable_load_extension(False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self.db:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v) WITHOUT ROWID"
                )
                v = self._state("schema")
                if v is not None and v != SCHEMA_VERSION:
                    # Another layout: the catalog is a view, so drop it; the next sync
                    # rebuilds it from the log (or from the store's items).
                    for t in _TABLES:
                        self.db.execute(f"DROP TABLE IF EXISTS {t}")
                    self.db.execute(
                        "DELETE FROM state WHERE k IN ('applied_lsn', 'schema', 'cold_bits')"
                    )
                self.db.execute(_SCHEMA)
                self._set_state("schema", SCHEMA_VERSION)
        except (apsw.NotADBError, apsw.CorruptError) as e:
            raise CorruptFileError(
                f"{self.path} is damaged or not a SQLite database ({e}); delete it and reopen: the "
                "catalog is rebuilt from the store"
            ) from e
        except apsw.Error as e:
            raise StorageError(f"cannot open the catalog {self.path}: {e}") from e
        self._lock = threading.RLock()
        self._unread: set[int] = set()  # see _load_unread

    def close(self) -> None:
        self.db.close()

    def vacuum(self) -> dict[str, int]:
        """Rewrites the database without its free pages and half-empty pages (what deletes
        and demotions leave behind) and truncates its WAL file; returns the bytes before and
        after. Takes a while on a large catalog: an explicit step, never automatic."""
        with self._lock:
            before = self.file_bytes()
            try:
                # FTS5 keeps one segment b-tree per batch of writes until its automerge
                # gets to them; merged into one, its pages are full before VACUUM packs them.
                self.db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")
                self.db.execute("VACUUM")
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except apsw.Error as e:
                raise StorageError(f"cannot vacuum the catalog {self.path}: {e}") from e
            return {"before": before, "after": self.file_bytes()}

    def file_bytes(self) -> int:
        """The database file and its WAL file, in bytes."""
        return sum(
            f.stat().st_size
            for f in (self.path, self.path.with_name(self.path.name + "-wal"))
            if f.exists()
        )

    # ------------------------------------------------------------------ state

    def _state(self, k: str) -> Any:
        row = self.db.execute("SELECT v FROM state WHERE k=?", (k,)).fetchone()
        return None if row is None else row[0]

    def _set_state(self, k: str, v: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO state(k, v) VALUES (?, ?)", (k, v))

    def state(self, k: str) -> Any:
        with self._lock:
            return self._state(k)

    def _state_json(self, k: str, kind: type) -> Any:
        """State ``k`` as the JSON ``kind`` (list, dict) it holds; empty if unset or not one
        (the catalog is a view: damage there costs a rebuild, never an exception here)."""
        try:
            got = json.loads(self._state(k) or "null")
        except ValueError:
            return kind()
        return got if isinstance(got, kind) else kind()

    def state_json(self, k: str, kind: type) -> Any:
        with self._lock:
            return self._state_json(k, kind)

    def set_state(self, k: str, v: Any) -> None:
        with self._lock, self.db:
            self._set_state(k, v)

    @property
    def applied_lsn(self) -> int:
        return int(self.state("applied_lsn") or 0)

    # ------------------------------------------------------------------ applying the log

    def apply(self, records: Iterable[tuple[int, int, bytes]], *, upto: int) -> int:
        """Applies log records past this catalog's LSN in one transaction; returns how many.
        Safe to run from two processes at once: the second skips what the first applied."""
        n = 0
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._load_unread()
                done = int(self._state("applied_lsn") or 0)
                for lsn, rtype, payload in records:
                    if lsn <= done:
                        continue
                    self._apply_one(lsn, rtype, payload)
                    n += 1
                if upto > done:
                    self._set_state("applied_lsn", upto)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return n

    def rebuild(self, items: Iterable[tuple[int, bytes]], *, lsn: int) -> int:
        """Replaces every row with ``items`` (``(lsn, PUT payload)`` of each live item): for
        when the log no longer reaches back to this catalog's LSN."""
        n = 0
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM memories")
                self.db.execute("DELETE FROM state WHERE k='unreadable'")
                self._unread = set()
                self.db.execute("DELETE FROM memories_fts")
                self.db.execute("DELETE FROM entities")
                self.db.execute("DROP TABLE IF EXISTS cold_codes")
                self.db.execute("DELETE FROM state WHERE k='cold_bits'")
                for item_lsn, payload in items:
                    self._apply_one(item_lsn, rec.PUT, payload)
                    n += 1
                self._set_state("applied_lsn", lsn)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return n

    def _apply_one(self, lsn: int, rtype: int, payload: bytes) -> None:
        if rtype == rec.PUT:
            try:
                item = rec.decode_put(payload)
            except CorruptFileError as e:
                self._note_unreadable(rec.put_id(payload) if len(payload) >= 8 else -1, lsn, e)
                return
            if item.meta.get("type") != "memory":
                return  # an item some other layer stored
            self._readable(item.id)
            self._delete(item.id)
            row, code = _row(lsn, item)
            tier = row[15]
            if tier == "forgotten":
                row = _slim(row)  # restorable until the purge, in no index (module doc)
            self.db.execute(f"INSERT INTO memories({COLUMNS}) VALUES ({','.join('?' * 23)})", row)
            if tier == "forgotten":
                return
            self.db.execute(
                "INSERT INTO memories_fts(rowid, text) VALUES (?, ?)", (item.id, item.text)
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO entities(name, id) VALUES (?, ?)",
                [(e, item.id) for e in _entity_keys(row[11])],
            )
            if tier == "cold" and isinstance(code, str):
                self._insert_cold(item.id, bytes.fromhex(code))
        elif rtype == rec.DELETE:
            id = rec.delete_id(payload)
            self._readable(id)
            self._delete(id)

    def note_unreadable(self, id: int, lsn: int, error: Exception) -> None:
        """An item whose record is intact (its checksum holds) but whose content this version
        cannot decode: left out of the catalog, with a warning, rather than making every
        other memory unreachable. The store keeps its bytes."""
        with self._lock, self.db:
            self._load_unread()
            self._note_unreadable(id, lsn, error)

    def _note_unreadable(self, id: int, lsn: int, error: Exception) -> None:
        if id >= 0:
            self._delete(id)  # its earlier version is not what the store holds now
        log.warning("%s: memory %d (log record %d) cannot be read: %s", self.path, id, lsn, error)
        seen = [x for x in self._unreadable() if x["id"] != id][-(UNREADABLE_KEPT - 1) :]
        seen.append({"id": id, "lsn": lsn, "error": str(error)[:200]})
        self._set_state("unreadable", json.dumps(seen))
        self._unread = {int(x["id"]) for x in seen}

    def _load_unread(self) -> None:
        """The ids of the unreadable list, read once per transaction: every applied record
        asks whether its id is among them (almost never), and a set answers that for free."""
        self._unread = {int(x["id"]) for x in self._unreadable()}

    def _readable(self, id: int) -> None:
        """A later write or delete of ``id`` was applied: it is no longer left out."""
        if id in self._unread:
            self._unread.discard(id)
            seen = [x for x in self._unreadable() if x["id"] != id]
            self._set_state("unreadable", json.dumps(seen))

    def _unreadable(self) -> list[dict[str, Any]]:
        return [
            x for x in self._state_json("unreadable", list) if isinstance(x, dict) and "id" in x
        ]

    def unreadable(self) -> list[dict[str, Any]]:
        """The items left out because they cannot be decoded (newest last; the newest
        ``UNREADABLE_KEPT``). ``Memory.open`` tries them again: an upgrade may read them."""
        with self._lock:
            return self._unreadable()

    def readmit(self, lsn: int, payload: bytes | None, *, id: int) -> None:
        """An item that was left out: applies its PUT ``payload`` (it reads now), or with
        None takes ``id`` off the list (it is gone from the store)."""
        with self._lock, self.db:
            self._load_unread()
            if payload is None:
                self._readable(id)
            else:
                self._apply_one(lsn, rec.PUT, payload)

    def _delete(self, id: int) -> None:
        row = self.db.execute("SELECT tier, entities FROM memories WHERE id=?", (id,)).fetchone()
        if row is None:
            return
        self.db.execute("DELETE FROM memories WHERE id=?", (id,))
        if row[0] == "forgotten":
            return  # in no index
        self.db.execute("DELETE FROM memories_fts WHERE rowid=?", (id,))
        self.db.executemany(
            "DELETE FROM entities WHERE name=? AND id=?",
            [(e, id) for e in _entity_keys(str(row[1]))],
        )
        if self._state("cold_bits") is not None:
            self.db.execute("DELETE FROM cold_codes WHERE id=?", (id,))

    def _insert_cold(self, id: int, code: bytes) -> None:
        bits = 8 * len(code)
        have = self._state("cold_bits")
        if have is None:
            self.db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS cold_codes "
                # Chunks of 128 codes (6 KiB at 384 bits), not vec0's default 1,024: the
                # cold tier starts small and a chunk is allocated whole.
                f"USING vec0(id INTEGER PRIMARY KEY, code bit[{bits}], chunk_size=128)"
            )
            self._set_state("cold_bits", bits)
        elif int(have) != bits:
            return  # a code of another model's width: that memory re-embeds on promotion
        self.db.execute("INSERT INTO cold_codes(id, code) VALUES (?, vec_bit(?))", (id, code))

    def cold_search(self, code: bytes, k: int) -> list[tuple[int, int]]:
        """Cold memories nearest to a binary code: (id, Hamming distance), nearest first."""
        with self._lock:
            if self._state("cold_bits") is None or int(self._state("cold_bits")) != 8 * len(code):
                return []
            return [
                (int(i), int(d))
                for i, d in self.db.execute(
                    "SELECT id, distance FROM cold_codes WHERE code MATCH vec_bit(?) AND k = ?",
                    (code, k),
                )
            ]

    # ------------------------------------------------------------------ reading

    def rows(self, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """id -> row (in COLUMNS order) for the ids that exist."""
        out: dict[int, tuple[Any, ...]] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                q = f"SELECT {COLUMNS} FROM memories WHERE id IN ({','.join('?' * len(chunk))})"
                for row in self.db.execute(q, chunk):
                    out[int(row[0])] = row
        return out

    def select(
        self,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        order: str = "id",
        limit: int = -1,
        offset: int = 0,
    ) -> list[tuple[Any, ...]]:
        q = f"SELECT {COLUMNS} FROM memories"
        if where:
            q += f" WHERE {where}"
        q += f" ORDER BY {order} LIMIT ? OFFSET ?"
        with self._lock:
            return list(self.db.execute(q, (*params, limit, offset)))

    def count(self, where: str = "", params: Sequence[Any] = ()) -> int:
        q = "SELECT count(*) FROM memories" + (f" WHERE {where}" if where else "")
        with self._lock:
            row = self.db.execute(q, params).fetchone()
        return int(row[0]) if row else 0

    def keyword(
        self, terms: Sequence[str], limit: int, *, where: str = "", params: Sequence[Any] = ()
    ) -> list[tuple[int, float]]:
        """BM25 over the FTS5 index: (id, score) best first, score > 0 (higher is better).
        ``where`` filters on the memories' columns (e.g. ``"m.kind = ?"``)."""
        words = [w for t in terms for w in _WORD.findall(t)]
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
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
            return [(int(r[0]), -float(r[1])) for r in self.db.execute(q, (match, *params, limit))]

    def ids_where(self, where: str, params: Sequence[Any]) -> list[int]:
        with self._lock:
            return [
                int(r[0])
                for r in self.db.execute(f"SELECT id FROM memories m WHERE {where}", params)
            ]

    def session_neighbours(self, id: int, session: str, width: int) -> list[int]:
        """Ids of the ``width`` memories before and after ``id`` in its session."""
        with self._lock:
            before = self.db.execute(
                f"SELECT id FROM memories WHERE session=? AND id<? AND {LIVE} "
                "ORDER BY id DESC LIMIT ?",
                (session, id, width),
            ).fetchall()
            after = self.db.execute(
                f"SELECT id FROM memories WHERE session=? AND id>? AND {LIVE} ORDER BY id LIMIT ?",
                (session, id, width),
            ).fetchall()
        return [int(r[0]) for r in before + after]  # type: ignore[arg-type]

    def with_entities(self, names: Sequence[str], limit: int) -> dict[int, int]:
        """id -> how many of ``names`` each memory mentions."""
        if not names:
            return {}
        with self._lock:
            q = (
                "SELECT id, count(*) FROM entities WHERE name IN "
                f"({','.join('?' * len(names))}) GROUP BY id LIMIT ?"
            )
            return {int(i): int(c) for i, c in self.db.execute(q, (*names, limit))}

    def in_time(self, lo: float, hi: float, limit: int) -> list[int]:
        with self._lock:
            return [
                int(r[0])
                for r in self.db.execute(
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
                for r in self.db.execute(
                    "SELECT DISTINCT speaker FROM memories WHERE speaker IS NOT NULL"
                )
            ]

    def after(
        self, cursor: int, limit: int, columns: str = "id", where: str = ""
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows with id > ``cursor``, in id order: the resumable scans of
        the upkeep (sweep, consolidation)."""
        cond = f" AND {where}" if where else ""
        with self._lock:
            return list(
                self.db.execute(
                    f"SELECT {columns} FROM memories WHERE id > ?{cond} ORDER BY id LIMIT ?",
                    (cursor, limit),
                )
            )

    def ended_sessions(self, before: float, min_turns: int, limit: int) -> list[tuple[str, float]]:
        """(session, time of its last turn) of the sessions with at least ``min_turns``
        live turns whose last turn is at or before ``before`` and later than their newest
        summary (key ``summary:<session>``, dated at the last turn it covers; none yet, or
        the conversation went on since), oldest first. Two passes over the table: the
        summaries are written rarely and looked for once per step."""
        with self._lock:
            return [
                (str(s), float(t))
                for s, t in self.db.execute(
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
                for r in self.db.execute(
                    "SELECT id FROM memories WHERE tier IN ('hot', 'warm') "
                    "ORDER BY random() LIMIT ?",
                    (n,),
                )
            ]

    def max_id(self) -> int:
        with self._lock:
            r = self.db.execute("SELECT max(id) FROM memories").fetchone()
        return int(r[0] or 0) if r else 0


def _entity_keys(names_json: str) -> list[str]:
    """The entities table's keys for a row's entities column (names matched lower case)."""
    return list(dict.fromkeys(str(e).lower() for e in json.loads(names_json)))


def _row(lsn: int, item: rec.Item) -> tuple[tuple[Any, ...], Any]:
    """A memory item's full catalog row (COLUMNS order) and its cold code (hex or None)."""
    m = memmeta.unpack(item.meta, item.text)
    names = [str(e) for e in m["entities"]]
    row = (
        item.id,
        item.text,
        m["kind"],
        m["source"],
        m["session"],
        m["key"],
        float(m["when"]),
        float(m["created"]),
        float(m["importance"]),
        int(bool(m["pinned"])),
        json.dumps(m["tags"], ensure_ascii=False),
        json.dumps(names, ensure_ascii=False),
        m.get("model"),
        lsn,
        ents.speaker(item.text),
        str(m["tier"]),
        float(m["stability"]),
        float(m["t_last"]),
        int(m["recalls"]),
        m["forgotten_at"],
        m["superseded_by"],
        m["merged_into"],
        json.dumps(m["sources"], ensure_ascii=False),
    )
    return row, m["code"]


# What a forgotten memory's row drops (COLUMNS positions -> the value kept instead).
_SLIM = {1: None, 11: "[]", 12: None, 14: None, 22: "[]"}  # text entities model speaker sources


def _slim(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_SLIM.get(i, v) for i, v in enumerate(row))


def full_row(row: Sequence[Any], item: rec.Item) -> tuple[Any, ...]:
    """``row`` (as the catalog returns it) in full: a forgotten memory's slim row completed
    from its store item; any other row as it is."""
    if row[15] != "forgotten":
        return tuple(row)
    full, _ = _row(int(row[13]), item)
    return full
