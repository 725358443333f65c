"""Issue 26: the change lists sync segments carry round-trip exactly, and a damaged or
hostile one is refused whole with a ValueError (never another exception, never a part)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localmem.sync.codec import Change, decode, encode

DEVICE = "ab" * 16

texts = st.text(max_size=200)
changes = st.builds(
    Change,
    id=st.integers(0, 2**63 - 1),
    hlc=st.integers(0, 2**64 - 1),
    device=st.sampled_from([DEVICE, "0" * 32, "f" * 32]),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "text": texts,
            "pinned": st.booleans(),
            "tags": st.lists(texts, max_size=3),
            "forgotten": st.booleans(),
        },
    ),
    purged=st.booleans(),
    stability=st.floats(0, 1e6),
    t_last=st.floats(-1e10, 1e10),
    recalls=st.integers(0, 2**32 - 1),
    vector=st.none()
    | st.integers(1, 16).map(
        lambda d: np.random.default_rng(d).standard_normal(d).astype(np.float32)
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(changes, max_size=8))
def test_changes_round_trip_exactly(cs):
    assert decode(encode(cs)) == cs


def test_damaged_change_lists_are_refused_whole():
    rng = random.Random(26)
    cs = [Change(i, 1000 + i, DEVICE, {"text": f"memory {i}", "tags": ["x"]}, False, 3.5,
                 1.7e9, i, np.full(8, 0.25, dtype=np.float32)) for i in range(20)]  # fmt: skip
    good = encode(cs)
    refused = 0
    for trial in range(3000):
        bad = bytearray(good)
        if trial % 3 == 0:
            bad = bad[: rng.randrange(len(bad))]
        else:
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            got = decode(bytes(bad))
        except ValueError:
            refused += 1
            continue
        # What decodes is a whole, valid list (authenticity is the sealed segment's job).
        assert len(got) == len(cs) and all(isinstance(c, Change) for c in got)
    assert refused > 1000
    with pytest.raises(ValueError, match="32 lowercase hex"):
        encode([Change(1, 1, "not-a-device")])
    for garbage in (b"", b"LMCHG1\n", b"LMCHG1\n\xff\xff\xff\xff", b'{"text": 1}'):
        with pytest.raises(ValueError):
            decode(garbage)
