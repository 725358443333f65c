"""What ``Memory`` hands back: a memory (``MemoryItem``) and a recalled one (``Hit``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from localmem import forgetting as lc
from localmem.catalog.rows import Row
from localmem.text.validate import to_timestamp

Progress = Callable[[int, int | None], object]  # (done, total or None)
#: The tag of a model's reply (``Assistant``, a ChatGPT import): context, not knowledge.
REPLY_TAG = "assistant"


@dataclass(frozen=True)
class MemoryItem:
    """One memory, as the catalog holds it."""

    REPLY_TAG: ClassVar[str] = REPLY_TAG  # the tag of a model's reply (``is_reply``)

    id: int
    text: str
    kind: str
    source: str
    session: str | None
    when: datetime
    created: datetime
    importance: float
    pinned: bool = False
    tags: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    key: str | None = None
    model: str | None = None
    tier: str = "hot"
    stability: float = 1.0  # days
    last_used: datetime | None = None  # the last reinforcement (creation at first)
    recalls: int = 0
    superseded_by: int | None = None  # a newer memory that contradicts this one
    merged_into: int | None = None  # set on a near-duplicate folded into another memory
    sources: tuple[dict[str, Any], ...] = ()  # provenance of duplicates merged into this one

    @property
    def is_reply(self) -> bool:
        """A model's reply (tagged ``assistant``): left out of recall unless asked for."""
        return REPLY_TAG in self.tags

    def retention(self, now: datetime | float | None = None) -> float:
        """R in [0, 1]: how much of this memory is left (Ebbinghaus; localmem.forgetting)."""
        t_last = self.last_used.timestamp() if self.last_used else self.created.timestamp()
        return lc.retention(to_timestamp(now), t_last, self.stability, pinned=self.pinned)

    @classmethod
    def from_row(cls, r: Row) -> MemoryItem:
        """A catalog row (complete: a forgotten memory's row filled from its item)."""
        return cls(
            id=int(r.id),
            text=r.text or "",
            kind=r.kind,
            source=r.source,
            session=r.session,
            when=datetime.fromtimestamp(r.event_time, timezone.utc),
            created=datetime.fromtimestamp(r.created_time, timezone.utc),
            importance=float(r.importance),
            pinned=bool(r.pinned),
            tags=tuple(json.loads(r.tags)),
            entities=tuple(json.loads(r.entities)),
            key=r.key,
            model=r.model,
            tier=r.tier,
            stability=float(r.stability),
            last_used=datetime.fromtimestamp(r.t_last, timezone.utc),
            recalls=int(r.recalls),
            superseded_by=r.superseded_by,
            merged_into=r.merged_into,
            sources=tuple(json.loads(r.sources)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields a script or a tool caller needs, JSON-ready."""
        return {
            "id": self.id, "text": self.text, "kind": self.kind,
            "when": self.when.isoformat(), "created": self.created.isoformat(),
            "tags": list(self.tags), "tier": self.tier, "pinned": self.pinned,
            "retention": round(self.retention(), 4),
            **({"superseded_by": self.superseded_by} if self.superseded_by else {}),
        }  # fmt: skip


@dataclass(frozen=True)
class Hit:
    """A recalled memory: its ``score`` and, in ``why``, each channel's part.

    The score is on the fused scale (the channels' sum, times lifecycle.rank_weight(R)); the
    re-ranker re-orders the top of the list by handing those fused scores out again in its
    own order, and its own score (another scale: trees' leaves summed) is ``why["rerank"]``.
    """

    memory: MemoryItem
    score: float
    why: dict[str, float] = field(default_factory=dict)
    retention: float = 1.0
    cosine: float | None = None  # the query's cosine with it (None: found by another channel)

    def explain(self) -> str:
        parts = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(self.why.items(), key=lambda kv: -kv[1])
        )
        return f"score {self.score:.3f} ({parts})"

    def as_dict(self) -> dict[str, Any]:
        """The memory's fields with the score and each channel's part, JSON-ready."""
        return {
            **self.memory.as_dict(),
            "score": round(self.score, 4),
            "why": {k: round(v, 3) for k, v in self.why.items()},
        }
