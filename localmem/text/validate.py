"""What a memory may hold: one validator for every way in (``remember``, the MCP tools,
imports, which are untrusted files), so that nothing the catalog cannot hold reaches the log.

A record in the log is replayed into the catalog every time a store opens; a value the
catalog refuses there (a time that is a string, a NaN, a 1 MiB tag) would make the store
unopenable. Everything is checked here first, and the message says how to fix the call.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np

from localmem import forgetting as lc
from localmem.errors import InvalidArgumentError
from localmem.text import entities as ents

KINDS = ("episodic", "fact", "preference", "note")
SOURCES = ("chat", "mcp", "import", "api", "cli")
#: The longest text one memory holds, in characters (a long document is several memories).
MAX_TEXT_CHARS = 16_384
MAX_TAGS = 64
MAX_LABEL_CHARS = 256  # a tag, a session, a key
MAX_SOURCES = 1_000  # provenance entries of one memory (duplicates merged into it)
MAX_ID = 2**63 - 1
# Year 1 .. 9999: what datetime can represent and SQLite sorts.
_T_MIN, _T_MAX = -62135596800.0, 253402300799.0


def to_timestamp(when: Any, what: str = "when") -> float:
    """A datetime (naive = local time), unix seconds, or an ISO 8601 string -> unix seconds."""
    if when is None:
        return time.time()
    if isinstance(when, bool):
        raise InvalidArgumentError(f"{what} must be a datetime, a timestamp or an ISO string")
    if isinstance(when, datetime):
        try:
            t = when.timestamp()
        except (ValueError, OverflowError, OSError):
            raise InvalidArgumentError(f"{what}={when!r} is out of range") from None
    elif isinstance(when, (int, float, np.integer, np.floating)):
        try:
            t = float(when)
        except OverflowError:
            raise InvalidArgumentError(f"{what}={when!r} is out of range") from None
    elif isinstance(when, str):
        try:
            parsed = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                f"{what}={when[:40]!r} is not an ISO 8601 date or time (e.g. 2023-05-08 or "
                "2023-05-08T13:56:00)"
            ) from None
        try:
            t = parsed.timestamp()
        except (ValueError, OverflowError, OSError):
            raise InvalidArgumentError(f"{what}={when!r} is out of range") from None
    else:
        raise InvalidArgumentError(
            f"{what} must be a datetime, a unix timestamp or an ISO string, got "
            f"{type(when).__name__}"
        )
    if not math.isfinite(t) or not (_T_MIN <= t <= _T_MAX):
        raise InvalidArgumentError(f"{what}={when!r} is out of range")
    return t


def _encodable(s: str, what: str) -> None:
    """A str that is valid Unicode: no lone surrogates (from a broken decode or a JSON
    ``\\ud800`` escape), which no tokenizer, SQLite or UTF-8 file can take."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"{what} is not valid Unicode (a lone surrogate at character "
            f"{next(i for i, c in enumerate(s) if 0xD800 <= ord(c) <= 0xDFFF)}): decode the "
            "input as UTF-8 first"
        ) from None


def check_text(text: Any, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        if what == "query":
            raise InvalidArgumentError("the query is empty: give the words to look for")
        raise InvalidArgumentError(f"{what} is empty: there is nothing to remember")
    if len(text) > MAX_TEXT_CHARS:
        if what == "query":
            raise InvalidArgumentError(
                f"the query has {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are "
                "looked for: shorten it"
            )
        raise InvalidArgumentError(
            f"{what} has {len(text):,} characters; one memory holds at most "
            f"{MAX_TEXT_CHARS:,}: split it into several memories"
        )
    if "\x00" in text:
        raise InvalidArgumentError(f"{what} contains a NUL character")
    _encodable(text, what)
    return text


def check_label(v: Any, what: str) -> str:
    """A tag, session or key: a non-empty one-line string of at most 256 characters."""
    if not isinstance(v, str) or not v.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty string")
    if len(v) > MAX_LABEL_CHARS:
        raise InvalidArgumentError(
            f"{what} has {len(v):,} characters; at most {MAX_LABEL_CHARS} are allowed"
        )
    if any(unicodedata.category(c) == "Cc" for c in v):
        raise InvalidArgumentError(f"{what} {v[:40]!r} contains a control character")
    _encodable(v, what)
    return v


def check_tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        raise InvalidArgumentError("tags must be a list of strings, not one string")
    if tags is None:
        return []
    if not isinstance(tags, Iterable):
        raise InvalidArgumentError(f"tags must be a list of strings, got {type(tags).__name__}")
    tag_list = list(tags)
    if len(tag_list) > MAX_TAGS:
        raise InvalidArgumentError(f"tags: at most {MAX_TAGS}, got {len(tag_list)}")
    return [check_label(t, "a tag").strip() for t in tag_list]


def check_optional_label(v: Any, what: str) -> str | None:
    return None if v is None else check_label(v, what)


def check_importance(importance: Any) -> float:
    if isinstance(importance, bool) or not isinstance(
        importance, (int, float, np.integer, np.floating)
    ):
        raise InvalidArgumentError("importance must be a number in [0, 1]")
    if not 0.0 <= float(importance) <= 1.0:  # NaN fails this too
        raise InvalidArgumentError(f"importance must be in [0, 1], got {importance}")
    return float(importance)


def check_bool(v: Any, what: str) -> bool:
    """A real bool (``pinned="no"`` is not True)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise InvalidArgumentError(f"{what} must be True or False, got {v!r}")


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return str(kind)


def check_id(id: Any, what: str = "a memory id") -> int:
    if isinstance(id, bool) or not isinstance(id, (int, np.integer)) or not 0 < id <= MAX_ID:
        raise InvalidArgumentError(f"{what} is an int in [1, 2**63 - 1], got {id!r}")
    return int(id)


def check_item(
    text: Any,
    when: Any = None,
    kind: str = "note",
    tags: Iterable[str] = (),
    importance: float = 0.5,
    source: str = "api",
    session: str | None = None,
    key: str | None = None,
    pinned: bool = False,
) -> tuple[str, dict[str, Any]]:
    """A new memory's text and metadata, as ``remember`` takes them."""
    text = check_text(text)
    if source not in SOURCES:
        raise InvalidArgumentError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    kind = check_kind(kind)
    importance = check_importance(importance)
    meta = {
        "type": "memory",
        "kind": kind,
        "source": source,
        "session": check_optional_label(session, "session"),
        "key": check_optional_label(key, "key"),
        "when": None if when is None else to_timestamp(when),  # None: now, by the clock
        "importance": importance,
        "pinned": check_bool(pinned, "pinned"),
        "tags": check_tags(tags),
        "entities": ents.extract(text),
        "tier": "hot",
        "stability": lc.initial_stability(kind, importance),
        "recalls": 0,
    }
    return text, meta


# ---------------------------------------------------------------------- imported state

_SCALARS = (str, int, float, bool, type(None))


def _check_sources(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or len(v) > MAX_SOURCES:
        raise InvalidArgumentError(f"sources must be a list of at most {MAX_SOURCES} objects")
    out = []
    for s in v:
        if not isinstance(s, dict) or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(x, _SCALARS) for k, x in s.items()
        ):
            raise InvalidArgumentError("a source must be an object of plain values")
        for x in s.values():
            if isinstance(x, str):
                if len(x) > MAX_TEXT_CHARS:
                    raise InvalidArgumentError("a source's text is too long")
                _encodable(x, "a source's text")
            elif isinstance(x, float) and not math.isfinite(x):
                raise InvalidArgumentError("a source holds a number that is not finite")
        out.append(dict(s))
    return out


def _check_ref(v: Any, what: str) -> int | None:
    return None if v is None else check_id(v, what)


def _check_stability(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) <= 1e7:
        raise InvalidArgumentError(f"stability must be a number of days in (0, 1e7], got {v!r}")
    return float(v)


def _check_recalls(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31:
        raise InvalidArgumentError(f"recalls must be an int >= 0, got {v!r}")
    return v


def _check_tier(v: Any) -> str:
    if v not in lc.TIERS:
        raise InvalidArgumentError(f"tier must be one of {', '.join(lc.TIERS)}; got {v!r}")
    return str(v)


def _check_source(v: Any) -> str:
    if v not in SOURCES:
        raise InvalidArgumentError(f"source must be one of {', '.join(SOURCES)}; got {v!r}")
    return str(v)


# Each key an exported memory may carry, and its check (None: dropped, it is derived).
_STATE: dict[str, Any] = {
    "kind": check_kind,
    "source": _check_source,
    "session": lambda v: check_optional_label(v, "session"),
    "key": lambda v: check_optional_label(v, "key"),
    "when": lambda v: to_timestamp(v, "when"),
    "created": lambda v: to_timestamp(v, "created"),
    "t_last": lambda v: to_timestamp(v, "t_last"),
    "forgotten_at": lambda v: None if v is None else to_timestamp(v, "forgotten_at"),
    "faded": lambda v: check_bool(v, "faded"),
    "importance": check_importance,
    "pinned": lambda v: check_bool(v, "pinned"),
    "tags": check_tags,
    "tier": _check_tier,
    "stability": _check_stability,
    "recalls": _check_recalls,
    "superseded_by": lambda v: _check_ref(v, "superseded_by"),
    "merged_into": lambda v: _check_ref(v, "merged_into"),
    "sources": _check_sources,
    "entities": None,  # derived from the text
    "code": None,  # a cold memory's code: recomputed with the store's model
    "model": None,  # the importing store's model embeds it
    "type": None,
    "sync": None,  # a synced memory's stamps: an imported copy is a new memory here
}


def check_record(id: Any, text: Any, meta: Any) -> tuple[int, str, dict[str, Any]]:
    """An exported memory (an import's untrusted line): its id, text and metadata checked as
    ``remember`` checks them, and its lifecycle state too. Unknown keys are refused: a file
    from a newer localmem is not half-read."""
    id = check_id(id)
    text = check_text(text)
    if not isinstance(meta, dict):
        raise InvalidArgumentError("meta must be an object")
    unknown = sorted(k for k in meta if k not in _STATE)
    if unknown:
        raise InvalidArgumentError(f"unknown metadata {unknown[:5]}: written by a newer localmem?")
    out: dict[str, Any] = {"type": "memory"}
    for k, v in meta.items():
        check = _STATE[k]
        if check is not None:
            out[k] = check(v)
    out.setdefault("when", time.time())
    return id, text, out


# ---------------------------------------------------------------------- Memory's calls

ITEM_KEYS = frozenset(
    ("text", "when", "kind", "tags", "importance", "source", "session", "key", "pinned")
)


def check_item_dict(i: int, d: Any) -> tuple[str, dict[str, Any]]:
    """Item ``i`` of a ``remember_many`` call: a dict with ``remember``'s keyword names."""
    if not isinstance(d, dict):
        raise InvalidArgumentError(f"item {i} is a {type(d).__name__}, not a dict")
    extra = set(d) - ITEM_KEYS
    if extra:
        raise InvalidArgumentError(
            f"item {i} has unknown keys {sorted(extra)}; allowed: {sorted(ITEM_KEYS)}"
        )
    if "text" not in d:
        raise InvalidArgumentError(f"item {i} has no 'text'")
    try:
        return check_item(**d)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"item {i}: {e}") from None


def check_page(limit: Any, offset: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 2**31:
        raise InvalidArgumentError(
            f"limit must be a count of memories from 0 to {2**31:,}; got {limit!r}"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 2**62:
        raise InvalidArgumentError(f"offset must be a count from 0 to {2**62:,}; got {offset!r}")


def check_filters(kind: Any = None, tier: Any = None, session: Any = None) -> None:
    """The optional filters of ``list`` and ``recall``."""
    if kind is not None and kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if tier is not None and tier not in lc.TIERS:
        raise InvalidArgumentError(f"tier must be one of {', '.join(lc.TIERS)}; got {tier!r}")
    if session is not None and not isinstance(session, str):
        raise InvalidArgumentError(f"session must be a str, got {type(session).__name__}")


def check_count(v: Any, what: str, lo: int, hi: int) -> int:
    """An int in [lo, hi] (a bool is not one)."""
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidArgumentError(f"{what} must be an int in [{lo}, {hi}], got {v!r}")
    return v
