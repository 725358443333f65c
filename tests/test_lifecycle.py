"""The retention model: the curve, reinforcement with the spacing effect, tiers, pinning."""

from __future__ import annotations

import math

import pytest

from localmem import forgetting as lc

DAY = lc.DAY


def test_retention_follows_the_curve():
    assert lc.retention(0.0, 0.0, 3.0) == 1.0
    assert lc.retention(3 * DAY, 0.0, 3.0) == pytest.approx(math.exp(-1))
    assert lc.retention(-5.0, 0.0, 3.0) == 1.0  # clock skew never raises R above 1
    assert lc.retention(1000 * DAY, 0.0, 3.0, pinned=True) == 1.0


def test_kinds_and_importance_set_initial_stability():
    chat = lc.initial_stability("episodic", 0.5)
    fact = lc.initial_stability("fact", 0.5)
    assert fact > 10 * chat
    assert lc.initial_stability("fact", 1.0) == 3 * lc.initial_stability("fact", 0.0)
    assert lc.initial_stability("unknown-kind", 0.5) == lc.initial_stability("note", 0.5)


def test_reinforcement_grows_stability_more_when_nearly_forgotten():
    s_fresh, t1 = lc.reinforce(1 * DAY, 0.0, 10.0)  # R ~ 0.9
    s_faded, _ = lc.reinforce(40 * DAY, 0.0, 10.0)  # R ~ 0.02
    assert t1 == 1 * DAY
    assert 10.0 < s_fresh < s_faded <= 10.0 * 3.5
    assert lc.reinforce(0.0, 0.0, 3000.0)[0] == lc.PARAMS.s_max_days


def test_tiers_follow_retention():
    assert [lc.tier_for(r) for r in (1.0, 0.5, 0.3, 0.15, 0.1, 0.02, 0.01)] == [
        "hot", "hot", "warm", "warm", "cold", "cold", "forgotten",
    ]  # fmt: skip
    # A never-used chat turn: warm within days, forgotten within two weeks.
    s0 = lc.initial_stability("episodic", 0.5)
    assert lc.tier_for(lc.retention(3 * DAY, 0, s0)) == "warm"
    assert lc.tier_for(lc.retention(14 * DAY, 0, s0)) == "forgotten"
    # A fact untouched for a month is still hot-ish; a pinned memory never leaves hot.
    assert lc.tier_for(lc.retention(30 * DAY, 0, lc.initial_stability("fact", 0.5))) == "hot"
    assert lc.tier_for(lc.retention(10_000 * DAY, 0, 1.0, pinned=True)) == "hot"


def test_rank_weight_keeps_some_relevance_for_faded_memories():
    assert lc.rank_weight(1.0) == 1.0
    assert lc.rank_weight(0.0) == lc.PARAMS.rank_floor


def test_a_question_dated_in_the_past_never_moves_the_clock_back():
    s, t = lc.reinforce(100 * DAY, 200 * DAY, 5.0)
    assert t == 200 * DAY and s > 5.0
