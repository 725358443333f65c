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
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import sqlite_vec  # type: ignore[import-untyped]

from localmem.catalog.cipher import apply_key, check_key, key_problem
from localmem.catalog.cipher import encrypt_catalog as encrypt_catalog
from localmem.catalog.reads import LIVE, READ, CatalogReads
from localmem.catalog.rows import (
    CatalogDamageError,
    Row,
    entity_keys,
    item_row,
    row_check,
    slim,
)
from localmem.errors import (
    CorruptFileError,
    EncryptionKeyError,
    StorageError,
    StorageFullError,
    StoreLockedError,
)
from localmem.files import private_files
from localmem.store import records as rec
from localmem.store.checksum import crc32c

SCHEMA_VERSION = 7  # 6: slim rows for forgotten memories; 7: a checksum per row
# unicode61 folds case and diacritics and splits on punctuation; porter stems ("moved",
# "moving" -> "move") so the keyword channel matches inflections.
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

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
    sources TEXT NOT NULL DEFAULT '[]',  -- provenance of the duplicates merged into this one
    crc INTEGER NOT NULL  -- CRC32C of the other columns (_row_check): verified on every read
);
CREATE INDEX IF NOT EXISTS memories_tier ON memories(tier, id);
-- Forgotten memories are out of every index; the queries these serve say LIVE too.
CREATE INDEX IF NOT EXISTS memories_session ON memories(session, id) WHERE {LIVE};
CREATE INDEX IF NOT EXISTS memories_time ON memories(event_time) WHERE {LIVE};
CREATE INDEX IF NOT EXISTS memories_speaker ON memories(speaker) WHERE speaker IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_key ON memories(key) WHERE key IS NOT NULL;
-- What changed since a log position (recall's list of the assistant's replies).
CREATE INDEX IF NOT EXISTS memories_lsn ON memories(lsn);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='', contentless_delete=1, tokenize='{FTS_TOKENIZER}'
);
-- No index on id: a memory's entries are deleted by (name, id), the names read from its row.
CREATE TABLE IF NOT EXISTS entities (
    name TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (name, id)
) WITHOUT ROWID;
"""

_TABLES = ("memories", "memories_fts", "entities", "cold_codes")

# What SQLite raises on a damaged file: its corruption errors, and the SQL errors of a
# schema whose text was damaged (the catalog's statements themselves are fixed).
SQLITE_DAMAGE = (
    apsw.CorruptError, apsw.NotADBError, apsw.FormatError, apsw.SQLError,
    apsw.SchemaChangeError, apsw.MismatchError, apsw.RangeError, apsw.TooBigError,
)  # fmt: skip
# Raised as they are through a write: damage is for the caller to heal (a rebuild), and a
# refused value for _apply_one to leave out; any other SQLite failure is a storage error.
_PASSED_ON = (*SQLITE_DAMAGE, apsw.ConstraintError)
ENCRYPTED_CACHE_KIB = 32 << 10  # an encrypted catalog's SQLite page cache (see _open)
OPEN_TIMEOUT = 10.0  # seconds an open, a read or a write waits for another process's lock
UNREADABLE_KEPT = 1000  # the newest unreadable items the catalog names (state "unreadable")
log = logging.getLogger("localmem.catalog")


class Catalog(CatalogReads):
    """The SQLite catalog of one store (``<store>/catalog.sqlite``).

    ``key``: the 32-byte catalog key of an encrypted store (``catalog.cipher``), None for a
    plain catalog. One that is encrypted and opened without a key, or with another key, or
    plain and opened with a key, raises EncryptionKeyError and is left as it is: never
    CorruptFileError, which a caller heals by moving the file aside. ``key_verified``: the
    store vouched for ``key``, so a first page that fails its tag is damage (see
    ``cipher.key_problem``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        key_verified: bool = False,
        timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        key = None if key is None else check_key(key)
        self._lock = threading.RLock()
        self._unread: set[int] = set()  # see _load_unread
        # id -> (lsn, PUT payload) of the store's item, or None: what a damaged row is
        # rewritten from (set by MemoryStore; without it, a damaged row is an error).
        self.source: Callable[[int], tuple[int, bytes] | None] | None = None
        private_files(self.path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db = apsw.Connection(str(self.path))
            except apsw.Error as e:
                raise _storage_error(self.path, "open", e) from e
            try:
                self._open(key)
                return
            except apsw.BusyError as e:
                # Only the first statements can fail this way (before a busy handler
                # applies, or a WAL recovery by another connection): try again, bounded.
                self._db.close()
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"the catalog {self.path} stayed locked for {timeout:.0f} s ({e}): "
                        "another process holds it; try again"
                    ) from e
                time.sleep(0.02)
            except SQLITE_DAMAGE as e:
                self._db.close()
                why = None
                if isinstance(e, apsw.NotADBError):  # the first page: see cipher's doc
                    why = key_problem(self.path, key, key_verified=key_verified)
                if why is not None:
                    raise EncryptionKeyError(why) from e
                raise CorruptFileError(
                    f"{self.path} is damaged or not a SQLite database ({e}); localmem repair "
                    "rebuilds it from the store"
                ) from e
            except apsw.Error as e:
                self._db.close()
                raise _storage_error(self.path, "open", e) from e
            except BaseException:  # a SQLite that cannot encrypt (apply_key), an interrupt
                self._db.close()
                raise

    def _open(self, key: bytes | None) -> None:
        """Settings and schema. Writes nothing when the catalog is already current, so a
        store opens for reading on a full disk, and opens never contend for the write
        lock."""
        if key is not None:
            apply_key(self._db, key)  # before any statement reads the file
        self._db.set_busy_timeout(int(self.timeout * 1000))
        # Sorts, statement journals and VACUUM's copy in memory: sqlite3mc does not encrypt
        # temporary files, and a plain store's would land outside its private directory.
        self._db.execute("PRAGMA temp_store=MEMORY")
        if key is not None:
            # Every page SQLite reads anew is decrypted and authenticated: a larger page
            # cache (up to 32 MiB, grown only as pages are used) keeps the pages recall
            # touches decrypted. At 100k memories recall's p95 went 1.13x -> 1.05x plain.
            self._db.execute(f"PRAGMA cache_size=-{ENCRYPTED_CACHE_KIB}")
        # sqlite-vec: the cold tier's compact binary codes (vec0 table, Hamming KNN).
        self._db.enable_load_extension(True)
        self._db.load_extension(sqlite_vec.loadable_path())
        self._db.enable_load_extension(False)
        mode = self._db.execute("PRAGMA journal_mode").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if self._current():
            return
        with self._txn():
            if self._current():  # another process made it so meanwhile
                return
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v) WITHOUT ROWID"
            )
            if self._state("schema") is not None:
                # Another layout: the catalog is a view, so drop it; the next sync rebuilds
                # it from the log (or from the store's items).
                for t in _TABLES:
                    self._db.execute(f"DROP TABLE IF EXISTS {t}")
                self._db.execute(
                    "DELETE FROM state WHERE k IN ('applied_lsn', 'schema', 'cold_bits', "
                    "'applied_crc')"
                )
            self._db.execute(_SCHEMA)
            self._set_state("schema", SCHEMA_VERSION)

    def _current(self) -> bool:
        has_state = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='state'"
        ).fetchone()
        return bool(has_state) and self._state("schema") == SCHEMA_VERSION

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """A write transaction, with the write lock taken at its start: a deferred one that
        reads first fails at once (SQLITE_BUSY, no waiting) when another connection wrote
        in between. A full disk is a StorageFullError; a COMMIT that failed has rolled
        back. Inside another ``_txn`` of this thread, part of that one."""
        with self._lock:
            if self._db.in_transaction:  # this thread's own, further out (the lock is ours)
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except _PASSED_ON:
                raise
            except apsw.Error as e:
                raise _storage_error(self.path, "write", e) from e
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                self._rollback()
                if isinstance(e, apsw.Error) and not isinstance(e, _PASSED_ON):
                    raise _storage_error(self.path, "write", e) from e
                raise

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL at COMMIT):
        # a ROLLBACK then fails with "no transaction is active", hiding the real error.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except apsw.Error as e:
                log.warning("%s: rollback failed: %s", self.path, e)

    def close(self) -> None:
        # Under the lock: a query another thread is running (a chat app's worker as the app
        # quits) ends first, instead of the close failing with "Connection is busy".
        with self._lock:
            self._db.close()

    def vacuum(self) -> dict[str, int]:
        """Rewrites the database without its free pages and half-empty pages (what deletes
        and demotions leave behind) and truncates its WAL file; returns the bytes before and
        after. Takes a while on a large catalog: an explicit step, never automatic."""
        with self._lock:
            before = self.file_bytes()
            try:
                # FTS5 keeps one segment b-tree per batch of writes until its automerge
                # gets to them; merged into one, its pages are full before VACUUM packs them.
                self._db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
        row = self._db.execute("SELECT v FROM state WHERE k=?", (k,)).fetchone()
        return None if row is None else row[0]

    def _set_state(self, k: str, v: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO state(k, v) VALUES (?, ?)", (k, v))

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
        with self._txn():
            self._set_state(k, v)

    def next_ids(
        self,
        n: int,
        *,
        first: Callable[[], int],
        span: tuple[int, int] | None = None,
        floor: int = 0,
    ) -> list[int]:
        """``n`` fresh ids, unique across processes: the counter lives here and is advanced
        in an IMMEDIATE transaction, never below the largest id listed; ``first()`` says
        where a counter this catalog lost (a rebuild) starts again. ``span`` (lo, hi): ids
        from that range only (a synced device's own, ``localmem.sync``), with a counter of
        their own; ``floor``: none below it (ids given before a restored backup)."""
        lo, hi = span or (0, 2**63 - 1)
        name = "next_id" if span is None else f"next_id@{lo}"
        with self._txn():
            counter = self._state(name)
            if counter is None:
                counter = first()
            nxt = max(int(counter), self.max_id(lo, hi) + 1, lo, floor)
            if nxt + n > hi:
                raise StorageError(f"no ids left between {lo:,} and {hi:,}")
            self._set_state(name, nxt + n)
        return list(range(nxt, nxt + n))

    @property
    def applied_lsn(self) -> int:
        return int(self.state("applied_lsn") or 0)

    # ------------------------------------------------------------------ applying the log

    def apply(self, records: Iterable[tuple[int, int, bytes]], *, upto: int) -> int:
        """Applies log records past this catalog's LSN in one transaction; returns how many.
        Safe to run from two processes at once: the second skips what the first applied."""
        n = 0
        with self._txn():
            self._load_unread()
            done = int(self._state("applied_lsn") or 0)
            last: tuple[int, bytes] | None = None
            for lsn, rtype, payload in records:
                if lsn <= done:
                    continue
                self._apply_one(lsn, rtype, payload)
                last = (lsn, payload)
                n += 1
            if upto > done:
                self._set_state("applied_lsn", upto)
                # Which record the catalog ends on, to tell after a recovery whether the
                # log still holds that very record (``ends_on``).
                check = crc32c(last[1]) if last is not None and last[0] == upto else None
                self._set_state("applied_crc", check)
        return n

    def ends_on(self, lsn: int, payload: bytes) -> bool | None:
        """Whether the catalog's last applied record is ``payload`` (the log's record at
        ``lsn``): False when a recovery cut the log and new records took those LSNs."""
        with self._lock:
            if int(self._state("applied_lsn") or 0) != lsn:
                return None
            check = self._state("applied_crc")
        return None if check is None else int(check) == crc32c(payload)

    def rebuild(self, items: Iterable[tuple[int, bytes]], *, lsn: int) -> int:
        """Replaces every row with ``items`` (``(lsn, PUT payload)`` of each live item): for
        when the log no longer reaches back to this catalog's LSN."""
        n = 0
        with self._txn():
            self._db.execute("DELETE FROM memories")
            self._db.execute("DELETE FROM state WHERE k IN ('unreadable', 'applied_crc')")
            self._unread = set()
            self._db.execute("DELETE FROM memories_fts")
            self._db.execute("DELETE FROM entities")
            self._db.execute("DROP TABLE IF EXISTS cold_codes")
            self._db.execute("DELETE FROM state WHERE k='cold_bits'")
            for item_lsn, payload in items:
                self._apply_one(item_lsn, rec.PUT, payload)
                n += 1
            self._set_state("applied_lsn", lsn)
        return n

    def _apply_one(self, lsn: int, rtype: int, payload: bytes) -> None:
        if rtype == rec.PUT:
            id = rec.put_id(payload) if len(payload) >= 8 else -1
            try:
                item = rec.decode_put(payload)
                if item.meta.get("type") != "memory":
                    return  # an item some other layer stored
                row, code = item_row(lsn, item)
            except (CorruptFileError, ValueError, TypeError, KeyError, OverflowError) as e:
                # Intact in the log but not a memory the catalog can hold (a crafted import
                # written by an older version, say): left out and named, never a reason the
                # store cannot open: a view never makes the log unreadable.
                self._note_unreadable(id, lsn, e)
                return
            self._readable(item.id)
            self._delete(item.id)
            try:
                self._insert(row, code, item.text)
            except (apsw.ConstraintError, ValueError, TypeError) as e:  # a cold code not hex
                self._delete(item.id)
                self._note_unreadable(id, lsn, e)
        elif rtype == rec.DELETE:
            id = rec.delete_id(payload)
            self._readable(id)
            self._delete(id)

    def _insert(self, row: Row, code: Any, text: str) -> None:
        """A memory's row and its index entries (a forgotten one has none: module doc)."""
        if row.tier == "forgotten":
            row = slim(row)
        values = (*row, row_check(row))
        self._db.execute(f"INSERT INTO memories({READ}) VALUES ({','.join('?' * 24)})", values)
        if row.tier == "forgotten":
            return
        id = row.id
        self._db.execute("INSERT INTO memories_fts(rowid, text) VALUES (?, ?)", (id, text))
        self._db.executemany(
            "INSERT OR IGNORE INTO entities(name, id) VALUES (?, ?)",
            [(e, id) for e in entity_keys(row.entities)],
        )
        if row.tier == "cold" and isinstance(code, str):
            self._insert_cold(id, bytes.fromhex(code))

    def note_unreadable(self, id: int, lsn: int, error: Exception) -> None:
        """An item whose record is intact (its checksum holds) but whose content this version
        cannot decode: left out of the catalog, with a warning, rather than making every
        other memory unreachable. The store keeps its bytes."""
        with self._txn():
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
        with self._txn():
            self._load_unread()
            if payload is None:
                self._readable(id)
            else:
                self._apply_one(lsn, rec.PUT, payload)

    def _delete(self, id: int) -> None:
        row = self._db.execute("SELECT tier, entities FROM memories WHERE id=?", (id,)).fetchone()
        if row is None:
            return
        self._db.execute("DELETE FROM memories WHERE id=?", (id,))
        if row[0] == "forgotten":
            return  # in no index
        self._db.execute("DELETE FROM memories_fts WHERE rowid=?", (id,))
        self._db.executemany(
            "DELETE FROM entities WHERE name=? AND id=?",
            [(e, id) for e in entity_keys(str(row[1]))],
        )
        if self._state("cold_bits") is not None:
            self._db.execute("DELETE FROM cold_codes WHERE id=?", (id,))

    def _insert_cold(self, id: int, code: bytes) -> None:
        bits = 8 * len(code)
        have = self._state("cold_bits")
        if have is None:
            self._db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS cold_codes "
                # Chunks of 128 codes (6 KiB at 384 bits), not vec0's default 1,024: the
                # cold tier starts small and a chunk is allocated whole.
                f"USING vec0(id INTEGER PRIMARY KEY, code bit[{bits}], chunk_size=128)"
            )
            self._set_state("cold_bits", bits)
        elif int(have) != bits:
            return  # a code of another model's width: that memory re-embeds on promotion
        self._db.execute("INSERT INTO cold_codes(id, code) VALUES (?, vec_bit(?))", (id, code))

    def cold_search(self, code: bytes, k: int) -> list[tuple[int, int]]:
        """Cold memories nearest to a binary code: (id, Hamming distance), nearest first."""
        with self._lock:
            if self._state("cold_bits") is None or int(self._state("cold_bits")) != 8 * len(code):
                return []
            return [
                (int(i), int(d))
                for i, d in self._db.execute(
                    "SELECT id, distance FROM cold_codes WHERE code MATCH vec_bit(?) AND k = ?",
                    (code, k),
                )
            ]

    # ------------------------------------------------------------------ verifying reads

    def _verified(self, rows: list[tuple[Any, ...]]) -> list[Row]:
        """``rows`` with each one whose checksum fails (SQLite has none of its own: a changed
        byte would be served as the truth) replaced by the store's version of it, which is
        written back: the catalog repairs itself as it is read. A row the store no longer
        holds is dropped."""
        out = []
        for row in rows:
            if row_check(row[:23]) == row[23]:
                out.append(Row(*row[:23]))
                continue
            fixed = self._repair_row(row[0])
            if fixed is not None:
                out.append(fixed)
        return out

    def _repair_row(self, id: Any) -> Row | None:
        if self.source is None or not isinstance(id, int):
            raise CatalogDamageError(f"{self.path}: a row failed its checksum")
        log.warning("%s: the row of memory %d was damaged: served from the log and rewritten",
                    self.path, id)  # fmt: skip
        found = self.source(id)
        with self._txn():
            self._delete_row_only(id)
            if found is not None:
                self._load_unread()
                self._apply_one(found[0], rec.PUT, found[1])
            self._set_state("repaired", int(self._state("repaired") or 0) + 1)
        if found is None:
            return None
        row = self._db.execute(f"SELECT {READ} FROM memories WHERE id=?", (id,)).fetchone()
        if row is None or row_check(row[:23]) != row[23]:
            raise CatalogDamageError(f"{self.path}: memory {id}'s row cannot be rewritten")
        return Row(*row[:23])

    def _delete_row_only(self, id: int) -> None:
        """Deletes a row whose own columns cannot be trusted: its index entries are found by
        id, not by what the row says."""
        self._db.execute("DELETE FROM memories WHERE id=?", (id,))
        self._db.execute("DELETE FROM memories_fts WHERE rowid=?", (id,))
        self._db.execute("DELETE FROM entities WHERE id=?", (id,))
        if self._state("cold_bits") is not None:
            self._db.execute("DELETE FROM cold_codes WHERE id=?", (id,))


def _storage_error(path: Path, doing: str, e: apsw.Error) -> StorageError:
    """An SQLite failure as the error a caller can act on."""
    if isinstance(e, apsw.FullError):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = -1
        return StorageFullError(
            f"the disk holding {path} is full ({free:,} bytes free): cannot {doing} the "
            "catalog. Free some space and try again; nothing acknowledged was lost"
        )
    if isinstance(e, apsw.BusyError):
        return StorageError(f"the catalog {path} stayed locked by another process: {e}")
    return StorageError(f"cannot {doing} the catalog {path}: {e}")
