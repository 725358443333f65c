"""Issue 26: the change lists sync segments carry round-trip exactly, and a damaged or
hostile one is refused whole with a ValueError (never another exception, never a part)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localmem.sync.codec import MAX_HLC, Change, decode, encode
from localmem.sync.merge import Synced, merge, op

DEVICES = ["ab" * 16, "0" * 32, "f" * 32]

texts = st.text(max_size=200)
stamps = st.tuples(st.integers(0, MAX_HLC), st.sampled_from(DEVICES))
ops = st.builds(
    lambda s, f: op(s, **f),
    stamps,
    st.fixed_dictionaries(
        {},
        optional={
            "text": texts,
            "pinned": st.booleans(),
            "tags": st.lists(texts, max_size=3),
            "forgotten": st.booleans(),
            "importance": st.floats(0, 1),
            "purged": st.just(True),
            "stability": st.floats(0, 1e6),
            "t_last": st.floats(-1e10, 1e10),
            "recalls": st.integers(0, 2**31),
        },
    ),
)
states = st.lists(ops, min_size=1, max_size=4).map(
    lambda os: __import__("functools").reduce(merge, os, Synced())
)
changes = st.builds(
    Change,
    id=st.integers(0, 2**63 - 1),
    state=states,
    vector=st.none()
    | st.integers(1, 16).map(
        lambda d: np.random.default_rng(d).standard_normal(d).astype(np.float32)
    ),
    model=st.sampled_from(["", "all-MiniLM-L6-v2"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(changes, max_size=8), st.dictionaries(st.sampled_from("ab"), st.integers()))
def test_changes_round_trip_exactly(cs, info):
    assert decode(encode(cs, info)) == (info, cs)


def _change(i: int) -> Change:
    s = op((1000 + i, DEVICES[0]), text=f"memory {i}", tags=["x"], stability=3.5, t_last=1.7e9,
           recalls=i)  # fmt: skip
    return Change(i, s, np.full(8, 0.25, dtype=np.float32), "m")


def test_damaged_change_lists_are_refused_whole():
    rng = random.Random(26)
    cs = [_change(i) for i in range(20)]
    good = encode(cs, {"slot": 3})
    refused = 0
    for trial in range(3000):
        bad = bytearray(good)
        if trial % 3 == 0:
            bad = bad[: rng.randrange(len(bad))]
        else:
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            _, got = decode(bytes(bad))
        except ValueError:
            refused += 1
            continue
        # What decodes is a whole, valid list (authenticity is the sealed segment's job).
        assert len(got) == len(cs) and all(isinstance(c, Change) for c in got)
    assert refused > 1000
    with pytest.raises(ValueError, match="32 lowercase hex"):
        encode([Change(1, op((1, "not-a-device"), text="x"))])
    for garbage in (b"", b"LMCHG2\n", b"LMCHG2\n\xff\xff\xff\xff", b'{"text": 1}'):
        with pytest.raises(ValueError):
            decode(garbage)


def test_hostile_states_are_refused():
    """Well-formed bytes, wrong content: each is a ValueError naming what is wrong."""
    import json
    import struct

    def one(doc: dict, flags: int = 0, stability: float = 1.0) -> bytes:
        js = json.dumps(doc).encode()
        body = struct.pack("<qBddI", 1, flags, stability, 0.0, len(js)) + js
        return b"LMCHG2\n" + struct.pack("<I", 2) + b"{}" + struct.pack("<II", 1, len(body)) + body

    d = DEVICES[0]
    for doc, flags, why in [
        ({"d": [d], "s": [[1, 0]], "f": {"colour": [0, "red"]}}, 0, "synced fields"),
        ({"d": [d], "s": [[1, 5]], "f": {"text": [0, "x"]}}, 0, "device"),
        ({"d": [d], "s": [[1, 0]], "f": {"text": [3, "x"]}}, 0, "stamp"),
        ({"d": [d], "s": [[-1, 0]], "f": {"text": [0, "x"]}}, 0, "clock"),
        ({"d": [d], "s": [[1]], "f": {}}, 0, "stamp table"),
        ({"d": ["nope"], "f": {}}, 0, "device list"),
        ({"d": [d], "s": [[1, 0]], "f": {"text": [0, "x"]}, "p": 0}, 1, "purge carries no"),
        ({"d": [d], "s": [[1, 0]], "p": 0}, 0, "purge"),
        ({"d": [d], "r": [[0, -3]]}, 0, "recall count"),
        ({"d": [d], "x": 1}, 0, "object of"),
    ]:
        with pytest.raises(ValueError, match=why):
            decode(one(doc, flags))
    with pytest.raises(ValueError, match="lifecycle"):
        decode(one({"d": []}, 0, float("nan")))
