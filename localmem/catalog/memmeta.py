"""A memory's metadata as the log stores it: only what differs from the defaults.

Every memory item carries its metadata (kind, times, lifecycle state, provenance) as JSON in
its log record and arena blob. Written in full that is ~300 bytes — as much as the INT8 code
of the vector, and most of what a cold or forgotten memory costs. ``pack`` drops what a
reader can restore (default values, ``created`` equal to ``when``, ``t_last`` equal to
``created``, the entities, which are derived from the text) and rounds times to the
millisecond; ``unpack`` gives every key back. Both are pure: ``unpack(pack(m), text)`` equals
``unpack(m, text)``, and packing twice changes nothing. Old items written in full read the
same. The store then deflates what is left against a dictionary of these keys
(``records.META_DEFLATE``): ~150 bytes of JSON become ~60.
"""

from __future__ import annotations

from typing import Any

from localmem.text import entities as ents

DEFAULTS: dict[str, Any] = {
    "kind": "note",
    "source": "api",
    "session": None,
    "key": None,
    "importance": 0.5,
    "pinned": False,
    "tags": [],
    "tier": "hot",
    "recalls": 0,
    "stability": 1.0,
    "forgotten_at": None,
    "superseded_by": None,
    "merged_into": None,
    "sources": [],
    "code": None,
    "faded": False,  # forgotten by the sweep (retention), not by the user: see tiers.sweep
}
TIMES = ("when", "created", "t_last", "forgotten_at")


def _rounded(key: str, v: Any) -> Any:
    if isinstance(v, float):
        if key in TIMES:
            return round(v, 3)  # a millisecond is finer than any clock a person reads
        if key == "stability":
            return round(v, 5)  # days: a second's precision
    return v


def pack(meta: dict[str, Any]) -> dict[str, Any]:
    """What the log keeps of ``meta``."""
    m = {k: _rounded(k, v) for k, v in meta.items() if k != "entities"}
    when = m.get("when")
    created = m.get("created", when)
    if "t_last" in m and m["t_last"] == created:
        del m["t_last"]
    if "created" in m and m["created"] == when:
        del m["created"]
    for k, d in DEFAULTS.items():
        if k in m and m[k] == d:
            del m[k]
    return m


def unpack(meta: dict[str, Any], text: str) -> dict[str, Any]:
    """Every key of a memory's metadata, defaults filled in (a fresh dict)."""
    m = dict(DEFAULTS)  # its mutable values are the two empty lists, made anew here
    m["tags"], m["sources"] = [], []
    m.update(meta)
    m.setdefault("when", 0.0)
    m.setdefault("created", m["when"])
    m.setdefault("t_last", m["created"])
    if "entities" not in meta:
        m["entities"] = ents.extract(text)
    return m
