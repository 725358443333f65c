"""A stored memory's synced state (``merge.Synced``), kept in its own metadata.

Every write of a memory on a device with sync set up passes through ``Stamper``
(``MemoryStore.stamper``): the fields the write changed get a new hybrid-clock stamp, the
others keep theirs, and a reinforcement adds to this device's own recall counter. The
stamps travel in the item, in the same log record as the values they stamp, so a crash can
never leave one without the other:

    meta["sync"] = {"s": [[hlc, device, mask], ...],   # each stamp and the fields it set
                    "r": {device: count},              # recalls, one counter per device
                    "w": 0 | 1 | 2}                    # this write: from another device (0),
                                                       # a local change (1), one whose
                                                       # vector must travel with it (2)

A memory written before sync was set up has no stamps: its fields count as stamped at time
0 by no device, so any real write wins over them, on every replica alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localmem.catalog import memmeta
from localmem.store import records as rec
from localmem.store.hlc import HybridClock
from localmem.sync.merge import LWW_FIELDS, Stamp, Synced

NO_DEVICE = "0" * 32
ORIGIN: Stamp = (0, NO_DEVICE)
BIT = {name: 1 << i for i, name in enumerate(LWW_FIELDS)}
ALL_BITS = (1 << len(LWW_FIELDS)) - 1

Put = tuple[Any, ...]  # (id, text, meta, vector[, quantized]) as Store.put_many takes it


def values(text: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The synced fields' values of a stored memory (packed metadata: defaults restored)."""
    d = memmeta.DEFAULTS
    out = {k: meta.get(k, d.get(k)) for k in LWW_FIELDS if k not in ("text", "forgotten")}
    out["text"] = text
    # A forget is the person's act; a memory the sweep let fade is forgotten here only
    # (tiers are each device's own, derived from the lifecycle state that does sync).
    out["forgotten"] = meta.get("tier", "hot") == "forgotten" and not meta.get("faded", False)
    out["when"] = meta.get("when", 0.0)
    out["created"] = meta.get("created", out["when"])
    return out


def stamps_of(meta: dict[str, Any]) -> dict[str, Stamp]:
    """field -> stamp, from ``meta["sync"]`` (ORIGIN for a field no stamp covers)."""
    out = dict.fromkeys(LWW_FIELDS, ORIGIN)
    for hlc, device, mask in (meta.get("sync") or {}).get("s", ()):
        for name, bit in BIT.items():
            if mask & bit:
                out[name] = (int(hlc), str(device))
    return out


def _groups(stamps: dict[str, Stamp]) -> list[list[Any]]:
    by: dict[Stamp, int] = {}
    for name, s in stamps.items():
        if s != ORIGIN:
            by[s] = by.get(s, 0) | BIT[name]
    return [[h, d, m] for (h, d), m in sorted(by.items())]


def recalls_of(meta: dict[str, Any]) -> dict[str, int]:
    """device -> its count; a memory from before sync has its count under NO_DEVICE."""
    r = (meta.get("sync") or {}).get("r")
    if r is None:
        n = int(meta.get("recalls", 0))
        return {NO_DEVICE: n} if n else {}
    return {str(k): int(v) for k, v in r.items()}


def t_last(meta: dict[str, Any]) -> float:
    created = meta.get("created", meta.get("when", 0.0))
    return float(meta.get("t_last", created))


def state(item: rec.Item) -> Synced:
    """What ``item`` holds, as a synced state."""
    vals, stamps = values(item.text, item.meta), stamps_of(item.meta)
    return Synced(
        fields={k: (stamps[k], vals[k]) for k in LWW_FIELDS},
        stability=float(item.meta.get("stability", memmeta.DEFAULTS["stability"])),
        t_last=t_last(item.meta),
        recalls=recalls_of(item.meta),
    )


def sync_meta(s: Synced, written: int) -> dict[str, Any]:
    """``meta["sync"]`` for a memory in state ``s``."""
    return {
        "s": _groups({k: f[0] for k, f in s.fields.items()}),
        "r": dict(sorted(s.recalls.items())),
        "w": written,
    }


class Stamper:
    """Stamps the writes of this device (see the module doc); ``MemoryStore`` calls it with
    each batch of puts and the items they replace (None: a new memory)."""

    def __init__(self, device: str, clock: HybridClock) -> None:
        self.device, self.clock = device, clock

    def __call__(self, puts: list[Put], olds: Mapping[int, rec.Item | None]) -> list[Put]:
        return [self.stamp(p, olds.get(int(p[0]))) for p in puts]

    def stamp(self, put: Put, old: rec.Item | None) -> Put:
        id, text, meta = put[0], put[1], dict(put[2] or {})
        if meta.get("type") != "memory":
            return put
        new_vals = values(text, meta)
        if old is None:
            old_stamps, old_vals = dict.fromkeys(LWW_FIELDS, ORIGIN), None
            recalls: dict[str, int] = {}
            old_life: tuple[float, float] | None = None
        else:
            old_stamps, old_vals = stamps_of(old.meta), values(old.text, old.meta)
            recalls = recalls_of(old.meta)
            old_life = (float(old.meta.get("stability", 1.0)), t_last(old.meta))
        changed = [k for k in LWW_FIELDS if old_vals is None or new_vals[k] != old_vals[k]]
        more = int(meta.get("recalls", 0)) - sum(recalls.values())
        if more > 0:
            recalls[self.device] = recalls.get(self.device, 0) + more
        life = (float(meta.get("stability", 1.0)), t_last(meta))
        lived = more > 0 or old_life is None or life != old_life
        stamps = dict(old_stamps)
        if changed:
            self.clock.observe(max(s[0] for s in old_stamps.values()))
            now = (self.clock.now(), self.device)
            for k in changed:
                stamps[k] = now
        revived = "forgotten" in changed and not new_vals["forgotten"]
        written = 2 if ("text" in changed or revived) else 1 if (changed or lived) else 0
        meta["sync"] = {"s": _groups(stamps), "r": dict(sorted(recalls.items())), "w": written}
        if recalls or "recalls" in meta:
            meta["recalls"] = sum(recalls.values())
        return (id, text, meta, *put[3:])


def written(meta: dict[str, Any]) -> int:
    """``meta["sync"]["w"]`` of a stored write (0 when it has none)."""
    return int((meta.get("sync") or {}).get("w", 0))
