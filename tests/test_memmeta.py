"""A memory's metadata is logged without what a reader can restore; reading it back gives
every key, the same for items written in full (stores from before) and packed ones."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localmem.catalog import memmeta
from localmem.text import entities as ents

TEXT = "Anna moved to Lisbon with Marco last spring"
FULL = {
    "type": "memory",
    "kind": "fact",
    "source": "chat",
    "session": "s1",
    "key": None,
    "when": 1735850057.1431234,
    "created": 1735850057.1431234,
    "importance": 0.5,
    "pinned": False,
    "tags": [],
    "entities": ents.extract(TEXT),
    "model": "all-minilm-l6-v2-int8",
    "tier": "warm",
    "recalls": 0,
    "stability": 60.000000001,
    "t_last": 1735850057.1431234,
    "forgotten_at": None,
    "superseded_by": None,
    "merged_into": None,
    "sources": [],
    "code": None,
    "faded": False,
}


def test_pack_keeps_only_what_differs_and_unpack_restores_it():
    packed = memmeta.pack(FULL)
    assert packed == {
        "type": "memory",
        "kind": "fact",
        "source": "chat",
        "session": "s1",
        "when": 1735850057.143,
        "model": "all-minilm-l6-v2-int8",
        "tier": "warm",
        "stability": 60.0,
    }
    assert len(json.dumps(packed)) < len(json.dumps(FULL)) / 2
    full = memmeta.unpack(packed, TEXT)
    assert full.keys() == FULL.keys()
    assert full["entities"] == FULL["entities"] and "Lisbon" in full["entities"]
    assert full["created"] == full["t_last"] == full["when"] == 1735850057.143
    assert {k: v for k, v in full.items() if k not in (*memmeta.TIMES, "stability")} == {
        k: v for k, v in FULL.items() if k not in (*memmeta.TIMES, "stability")
    }
    # An item written in full (before packing existed) reads the same, unrounded.
    assert memmeta.unpack(FULL, TEXT) == FULL


def test_times_that_differ_are_kept():
    m = dict(FULL, created=FULL["when"] + 5, t_last=FULL["when"] + 86400, recalls=3)
    packed = memmeta.pack(m)
    assert packed["created"] == round(m["created"], 3) and packed["recalls"] == 3
    full = memmeta.unpack(packed, TEXT)
    assert full["t_last"] == round(m["t_last"], 3) and full["when"] == round(m["when"], 3)


values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(0, 1e10), st.text(max_size=5)
)


times = st.dictionaries(st.sampled_from(memmeta.TIMES), st.floats(0, 4e9))
others = st.dictionaries(st.sampled_from(sorted(memmeta.DEFAULTS)), values)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(times, others)
def test_pack_is_idempotent_and_loses_nothing_a_reader_sees(t, o):
    meta = {**o, **t}
    p = memmeta.pack(meta)
    assert memmeta.pack(p) == p
    full = memmeta.unpack(meta, TEXT)
    assert memmeta.unpack(p, TEXT) == memmeta.unpack(memmeta.pack(full), TEXT)
    assert {k: v for k, v in memmeta.unpack(p, TEXT).items() if k not in memmeta.TIMES} == {
        k: round(v, 5) if k == "stability" and isinstance(v, float) else v
        for k, v in full.items()
        if k not in memmeta.TIMES
    }
