"""Issue 26: the merge rules converge — replicas that saw the same changes, in any order and
any of them twice, agree — and keep what the issue asks (forget/restore ordered on the
clock, a purge that wins over every write however late it arrives, lifecycle state never
regressing)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from localmem.sync.merge import Synced, merge, op

DEVICES = ["a" * 32, "b" * 32, "c" * 32]


def _ops(rng: random.Random, n: int) -> list[Synced]:
    """A random schedule of changes to one memory from three devices (each device's clock
    moves forward; the devices' clocks interleave)."""
    clock = dict.fromkeys(DEVICES, 0)
    count = dict.fromkeys(DEVICES, 0)
    out = []
    for _ in range(n):
        d = rng.choice(DEVICES)
        # a device's clock only moves forward; it often jumps near the others' (it saw them)
        near = max(clock.values()) + rng.randint(-3, 3) if rng.random() < 0.5 else 0
        clock[d] = max(clock[d] + 1, near)
        stamp = (clock[d] * 16 + DEVICES.index(d), d)  # unique per write
        kind = rng.choice(["text", "forget", "restore", "pin", "purge", "recall", "update"])
        if kind == "text":
            out.append(op(stamp, text=f"text {rng.random()}"))
        elif kind in ("forget", "restore"):
            out.append(op(stamp, forgotten=kind == "forget"))
        elif kind == "pin":
            out.append(op(stamp, pinned=rng.random() < 0.5))
        elif kind == "purge":
            out.append(op(stamp, purged=True))
        elif kind == "recall":
            count[d] += 1
            out.append(op(stamp, recalls=count[d], stability=rng.uniform(1, 90),
                          t_last=float(stamp[0])))  # fmt: skip
        else:
            out.append(op(stamp, tags=[rng.choice("xyz")], importance=rng.random()))
    return out


def _fold(ops: list[Synced]) -> Synced:
    state = Synced()
    for o in ops:
        state = merge(state, o)
    return state


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40))
def test_any_order_any_duplicates_gives_the_same_state(seed, n):
    rng = random.Random(seed)
    ops = _ops(rng, n)
    want = _fold(ops)
    for _ in range(3):  # three replicas: shuffled, with duplicates, merged pairwise
        got = ops + rng.sample(ops, k=min(len(ops), 5))
        rng.shuffle(got)
        assert _fold(got) == want
    half = rng.randrange(len(ops) + 1)
    assert merge(_fold(ops[:half]), _fold(ops[half:])) == want
    assert merge(want, want) == want


def test_forget_and_restore_are_ordered_on_the_clock():
    a, b = DEVICES[:2]
    put = op((1, a), text="Ana's birthday is May 3")
    forget, restore = op((5, b), forgotten=True), op((7, a), forgotten=False)
    assert _fold([put, restore, forget]).value("forgotten") is False  # restore came later
    late_forget = op((9, b), forgotten=True)
    assert _fold([late_forget, put, restore]).value("forgotten") is True


def test_a_purge_wins_over_every_write_however_late_it_arrives():
    a, b = DEVICES[:2]
    put, edit = op((1, a), text="old"), op((3, b), text="edited before the purge")
    purge = op((4, a), purged=True)
    state = _fold([purge, put, edit])  # the older writes arrive after the purge
    assert not state.alive and state.value("text") is None
    # a device that had not heard of the purge pins it later: the memory stays gone
    newer = op((6, b), pinned=True)
    for order in ([put, purge, newer], [newer, put, purge], [purge, newer]):
        got = _fold(order)
        assert not got.alive and got.fields == {} and got.purged == (4, a)
    assert merge(op((1, a), text="x"), newer).alive  # a write alone is not a purge


def test_a_change_without_text_is_not_a_memory_yet():
    """A pin from one device can arrive before the memory's creation from another."""
    a, b = DEVICES[:2]
    pin = op((5, b), pinned=True)
    assert not pin.alive
    assert merge(pin, op((1, a), text="hello", pinned=False)).alive


def test_lifecycle_state_never_regresses():
    a, b = DEVICES[:2]
    s = _fold([op((1, a), recalls=3, stability=40.0, t_last=100.0),
               op((2, b), recalls=2, stability=10.0, t_last=200.0),
               op((3, a), recalls=2, stability=5.0, t_last=50.0)])  # fmt: skip
    assert s.stability == 40.0 and s.t_last == 200.0 and s.total_recalls == 5


def test_unknown_fields_are_refused():
    import pytest

    with pytest.raises(ValueError, match="not synced"):
        op((1, DEVICES[0]), colour="red")


def test_a_repeated_stamp_still_converges():
    """A broken clock that reuses a stamp for two values: replicas still agree."""
    a = DEVICES[0]
    x, y = op((5, a), text="one"), op((5, a), text="other")
    assert merge(x, y) == merge(y, x)
