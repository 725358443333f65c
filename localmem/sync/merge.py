"""How replicas of one memory converge, whatever order its changes arrive in (issue 26).

A memory's synced state is a join-semilattice (a state-based CRDT): ``merge`` is
commutative, associative and idempotent, so replicas that have seen the same changes —
in any order, any of them twice — hold the same state. Each change (an ``op``) is itself a
small state: the fields it sets, stamped with its hybrid-clock time and device.

- Plain fields (text, kind, tags, importance, pinned, when, ...) and the ``forgotten`` flag
  (forget / restore): last writer wins by (HLC, device id). Forget and restore are ordered
  operations on the same clock, so a forget made after a restore wins, and the reverse.
- ``purged``: a tombstone, and final: once a memory is purged on any device, every write to
  it is dropped, however late it arrives and whatever its clock says. Ids are never reused
  (each device issues its own), so a write stamped after a purge comes from a device that
  had not heard of it yet; the person asked for the memory to be gone, and a half memory
  (a pin with no text) must not come back.
- Lifecycle state only grows, so retention never regresses on any device: ``stability``
  and ``t_last`` by max; ``recalls`` as one counter per device (each device counts its own
  reinforcements), summed.

Derived state — the catalog, the index, tiers — is rebuilt from the merged state, never
synced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Stamp = tuple[int, str]  # (HLC, device id): totally ordered, unique per write

#: The fields a write sets, last writer wins. Their order is fixed: a stored memory keeps
#: its stamps as bit masks over it (``localmem.sync.stamps``); add new fields at the end.
LWW_FIELDS = ("text", "kind", "tags", "importance", "pinned", "when", "key", "session",
              "source", "forgotten", "created", "superseded_by", "merged_into",
              "sources")  # fmt: skip


@dataclass(frozen=True)
class Synced:
    """One memory's synced state: ``fields[name] = (stamp, value)``."""

    fields: dict[str, tuple[Stamp, Any]] = field(default_factory=dict)
    purged: Stamp | None = None
    stability: float = 0.0
    t_last: float = 0.0
    recalls: dict[str, int] = field(default_factory=dict)  # device -> its own count

    @property
    def alive(self) -> bool:
        """Not purged, and holding a text (a memory, not a stray change to one)."""
        return self.purged is None and "text" in self.fields

    def value(self, name: str, default: Any = None) -> Any:
        got = self.fields.get(name)
        return default if got is None else got[1]

    @property
    def total_recalls(self) -> int:
        return sum(self.recalls.values())


def op(stamp: Stamp, **changes: Any) -> Synced:
    """A change as a state: ``op(stamp, text=..., pinned=True)``, ``op(stamp, purged=True)``,
    ``op(stamp, stability=..., t_last=..., recalls=n)`` — ``n`` is the count of
    reinforcements ``stamp``'s device has made in all (a counter per device merges by max:
    a delta would be lost when two arrive from one device)."""
    purge = bool(changes.pop("purged", False))
    recall = int(changes.pop("recalls", 0))
    stability = float(changes.pop("stability", 0.0))
    t_last = float(changes.pop("t_last", 0.0))
    unknown = set(changes) - set(LWW_FIELDS)
    if unknown:
        raise ValueError(f"not synced fields: {sorted(unknown)}")
    return Synced(
        fields={k: (stamp, v) for k, v in changes.items()},
        purged=stamp if purge else None,
        stability=stability,
        t_last=t_last,
        recalls={stamp[1]: recall} if recall else {},
    )


def _order(f: tuple[Stamp, Any]) -> tuple[Stamp, str]:
    """Stamps are unique per write; should a broken clock repeat one, the value decides,
    so replicas still agree."""
    return f[0], json.dumps(f[1], sort_keys=True, default=str)


def merge(a: Synced, b: Synced) -> Synced:
    """The least state that includes both (see the module doc)."""
    purged = min((p for p in (a.purged, b.purged) if p is not None), default=None)
    fields: dict[str, tuple[Stamp, Any]] = {}
    if purged is None:
        fields = dict(a.fields)
        for name, f in b.fields.items():
            got = fields.get(name)
            if got is None or f[0] > got[0]:
                fields[name] = f
            elif f[0] == got[0] and f[1] != got[1]:
                fields[name] = max(got, f, key=_order)
    recalls = dict(a.recalls)
    for device, n in b.recalls.items():
        recalls[device] = max(recalls.get(device, 0), n)
    return Synced(fields, purged, max(a.stability, b.stability), max(a.t_last, b.t_last),
                  recalls)  # fmt: skip
