"""A memory's form in each tier: what its store item holds (the one place that says it).

    hot        fp32 vector in the arena + INT8 code in the index
    warm       INT8 code only (scale + dim bytes: a quarter of the vector's bytes)
    cold       a binary code (1 bit per dimension) in the catalog's sqlite-vec table; text
               kept and still found by keyword and by Hamming distance, at lower fidelity
    forgotten  out of every index (a slim catalog row for the sweep and the counts); text
               kept in the item until the purge, so that a restore can bring it back

Each function gives the ``Store.put_many`` entry ``(id, text, meta, vector, quantized)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from localmem.catalog import memmeta
from localmem.store import records as rec

Put = tuple[int, str, dict[str, Any], Any, bool]


def binary_code(v: npt.NDArray[np.float32]) -> bytes:
    """One bit per dimension: the sign (what the cold tier keeps of a vector)."""
    return np.packbits(np.asarray(v) > 0, bitorder="little").tobytes()


def hamming_to_cos(distance: int, bits: int) -> float:
    """The cosine a Hamming distance between sign codes suggests (random hyperplanes:
    angle ≈ π · distance / bits)."""
    return math.cos(math.pi * distance / max(bits, 1))


def needs_vector(item: rec.Item, tier: str) -> bool:
    """Whether writing ``item`` in ``tier`` needs its text embedded again: the tier keeps a
    vector the item lost (a promotion), or hot wants the full vector a lower tier dropped."""
    return tier != "forgotten" and (
        item.vector is None or (tier == "hot" and item.meta.get("tier", "hot") != "hot")
    )


def in_tier(item: rec.Item, meta: dict[str, Any], tier: str, vector: Any, now: float) -> Put:
    """``item`` with metadata ``meta`` in ``tier``'s form; ``vector`` is its embedding (a
    fresh one when ``needs_vector``)."""
    meta = dict(meta, tier=tier)
    meta.pop("code", None)
    meta.pop("entities", None)
    if tier != "forgotten":
        meta.pop("forgotten_at", None)
        meta.pop("faded", None)
    if tier in ("hot", "warm"):
        return (item.id, item.text, memmeta.pack(meta), np.array(vector, dtype=np.float32),
                tier == "warm")  # fmt: skip
    if tier == "cold":
        meta["code"] = binary_code(np.asarray(vector)).hex()
    else:
        meta.setdefault("forgotten_at", now)
        # No vector (and no code) left to say which model made it; a restore embeds the
        # text again and names the model of the day.
        meta.pop("model", None)
    return item.id, item.text, memmeta.pack(meta), None, False
