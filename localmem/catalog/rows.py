"""A catalog row, typed: one memory's columns as the ``memories`` table holds them, built from
a store item (``item_row``) and checked on every read (``row_check``)."""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from localmem.catalog import memmeta
from localmem.errors import CorruptFileError
from localmem.store import records as rec
from localmem.store.checksum import crc32c
from localmem.text import entities as ents


class Row(NamedTuple):
    """One memory's row (the ``memories`` table's columns, in their order)."""

    id: int
    text: str | None  # None when forgotten: the store's item keeps it until the purge
    kind: str
    source: str
    session: str | None
    key: str | None
    event_time: float
    created_time: float
    importance: float
    pinned: int
    tags: str  # JSON list
    entities: str  # JSON list
    model: str | None
    lsn: int
    speaker: str | None
    tier: str
    stability: float
    t_last: float
    recalls: int
    forgotten_at: float | None
    superseded_by: int | None
    merged_into: int | None
    sources: str  # JSON list of provenance entries

    @property
    def tag_list(self) -> list[str]:
        return list(json.loads(self.tags or "[]"))

    @property
    def entity_list(self) -> list[str]:
        return list(json.loads(self.entities or "[]"))


COLUMNS = ", ".join(Row._fields)


class CatalogDamageError(CorruptFileError):
    """The catalog cannot serve a read: damaged beyond a row the store can rewrite."""


def entity_keys(names_json: str) -> list[str]:
    """The entities table's keys for a row's entities column (names matched lower case)."""
    return list(dict.fromkeys(str(e).lower() for e in json.loads(names_json)))


def item_row(lsn: int, item: rec.Item) -> tuple[Row, Any]:
    """A memory item's full catalog row and its cold code (hex or None). Every value has the
    type SQLite gives back for its column, so that the row's checksum is the same written
    and read; a value the catalog cannot hold (a time that is not a finite number, a kind
    that is not a string) raises ValueError or TypeError."""
    m = memmeta.unpack(item.meta, item.text)
    names = [str(e) for e in m["entities"]]
    row = Row(
        id=item.id,
        text=item.text,
        kind=_str(m["kind"]),
        source=_str(m["source"]),
        session=_opt(_str, m["session"]),
        key=_opt(_str, m["key"]),
        event_time=_real(m["when"]),
        created_time=_real(m["created"]),
        importance=_real(m["importance"]),
        pinned=int(bool(m["pinned"])),
        tags=json.dumps(m["tags"], ensure_ascii=False),
        entities=json.dumps(names, ensure_ascii=False),
        model=_opt(_str, m.get("model")),
        lsn=lsn,
        speaker=ents.speaker(item.text),
        tier=_str(m["tier"]),
        stability=_real(m["stability"]),
        t_last=_real(m["t_last"]),
        recalls=_int(m["recalls"]),
        forgotten_at=_opt(_real, m["forgotten_at"]),
        superseded_by=_opt(_int, m["superseded_by"]),
        merged_into=_opt(_int, m["merged_into"]),
        sources=json.dumps(m["sources"], ensure_ascii=False),
    )
    return row, m["code"]


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _real(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise ValueError(f"expected a 64-bit integer, got {v!r}")
    return v


def _opt(check: Any, v: Any) -> Any:
    return None if v is None else check(v)


def row_check(row: tuple[Any, ...]) -> int:
    """The checksum of a row's columns: CRC32C of their repr as a plain tuple (floats
    round-trip exactly; a text with a lone surrogate, which SQLite cannot hold anyway, still
    hashes)."""
    return crc32c(repr(tuple(row)).encode("utf-8", "surrogatepass"))


def slim(row: Row) -> Row:
    """What a forgotten memory's row keeps: its text, entities, model, speaker and sources
    stay in the store's item until the purge."""
    return row._replace(text=None, entities="[]", model=None, speaker=None, sources="[]")


def full_row(row: Row, item: rec.Item) -> Row:
    """``row`` (as the catalog returns it) in full: a forgotten memory's slim row completed
    from its store item; any other row as it is."""
    if row.tier != "forgotten":
        return row
    full, _ = item_row(int(row.lsn), item)
    return full
