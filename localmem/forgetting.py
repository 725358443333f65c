"""Forgetting as a measured feature: retention, reinforcement and tiers, in one place.

Retention follows the Ebbinghaus forgetting curve as MemoryBank uses it (Zhong et al., 2023,
"MemoryBank: Enhancing Large Language Models with Long-Term Memory"):

    R(t) = exp(-(t - t_last) / S)

with ``S`` the memory's stability (days) and ``t_last`` its last reinforcement. MemoryBank
starts every memory at S = 1 and adds 1 per recall; we keep its curve but take two refinements
from spaced-repetition models (SuperMemo / FSRS, also the family SuperLocalMemory cites):

- ``S0`` depends on what the memory is: a stated preference or fact is meant to last, a
  chit-chat turn is not; importance (0..1) scales it.
- Reinforcement multiplies S, and by more when the memory was nearly forgotten (the spacing
  effect): ``S' = S · (1 + GROWTH_MIN + GROWTH_SPACING · (1 - R))``, then ``t_last = now``.

Retention drives tiers (hot: fp32 + INT8; warm: INT8; cold: compact codes, text kept;
forgotten: out of every index, text purged after a grace period) and weighs ranking: a faded
memory needs more relevance to outrank a fresh one. Pinned memories never decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DAY = 86_400.0
TIERS = ("hot", "warm", "cold", "forgotten")


@dataclass(frozen=True)
class Params:
    # Initial stability in days by kind. A turn of conversation half-fades in ~2 days
    # unless used again (ln 2 · 3 d); a fact or preference stays above the cold threshold
    # for months without use. Multiplied by (0.5 + importance): 0.5x .. 1.5x.
    s0_days: dict[str, float] = field(
        default_factory=lambda: {"episodic": 3.0, "note": 14.0, "fact": 60.0, "preference": 90.0}
    )
    growth_min: float = 0.5  # S x1.5 for a reinforcement while still fresh (R ~ 1)
    growth_spacing: float = 2.0  # ... up to x3.5 when nearly forgotten (R ~ 0)
    s_max_days: float = 3650.0  # ten years: beyond that the curve says nothing useful
    # Tier thresholds on R: hot above 0.5, warm above 0.15, cold above 0.02, else forgotten.
    # With S0 = 3 days a never-used turn is warm after ~2 days, cold after ~6, forgotten after
    # ~12; a fact (S0 = 60 d) goes cold after ~4 months without use.
    warm_below: float = 0.5
    cold_below: float = 0.15
    forget_below: float = 0.02
    purge_after_days: float = 30.0  # forgotten text is kept this long for restore()
    # Ranking: score x (RANK_FLOOR + (1 - RANK_FLOOR) · R) — a fully faded memory keeps 60%
    # of its relevance, so an exact match still beats a vaguely related fresh one.
    rank_floor: float = 0.6


PARAMS = Params()


def initial_stability(kind: str, importance: float, p: Params = PARAMS) -> float:
    """S0 in days for a new memory."""
    base = p.s0_days.get(kind, p.s0_days["note"])
    return min(p.s_max_days, base * (0.5 + max(0.0, min(1.0, importance))))


def retention(now: float, t_last: float, stability_days: float, *, pinned: bool = False) -> float:
    """R in [0, 1] at unix time ``now``."""
    if pinned:
        return 1.0
    dt = max(0.0, now - t_last) / DAY
    return math.exp(-dt / max(stability_days, 1e-6))


def reinforce(
    now: float, t_last: float, stability_days: float, p: Params = PARAMS
) -> tuple[float, float]:
    """A recall the caller used: the new (stability in days, t_last). A ``now`` before the
    last reinforcement (a question dated in the past) never moves the clock back."""
    r = retention(now, t_last, stability_days)
    s = stability_days * (1.0 + p.growth_min + p.growth_spacing * (1.0 - r))
    return min(p.s_max_days, s), max(now, t_last)


def tier_for(r: float, p: Params = PARAMS) -> str:
    """The tier a memory with retention ``r`` belongs in (forgotten is never automatic for a
    pinned memory: its R is 1)."""
    if r >= p.warm_below:
        return "hot"
    if r >= p.cold_below:
        return "warm"
    if r >= p.forget_below:
        return "cold"
    return "forgotten"


def rank_weight(r: float, p: Params = PARAMS) -> float:
    return p.rank_floor + (1.0 - p.rank_floor) * r
