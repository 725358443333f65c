"""Issue 26 groundwork: the hybrid logical clock and the sync folder's sealed segments,
against what a folder-sync tool does to files (late, out of order, half-copied, conflict
copies under other names) and what clocks do (step back, run minutes apart)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localmem import _core
from localmem.errors import EncryptionKeyError, InvalidArgumentError
from localmem.store import syncfolder
from localmem.store.hlc import HybridClock, pack, unpack

A, B = "a" * 32, "b" * 32


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["now", "observe", "wall"]),
                          st.integers(0, 2**40)), max_size=60))  # fmt: skip
def test_the_clock_only_moves_forward_and_past_what_it_observed(ops):
    wall = [1_700_000_000_000]
    clock = HybridClock(wall=lambda: wall[0])
    last = 0
    for op, x in ops:
        if op == "wall":  # the wall clock jumps anywhere, back included
            wall[0] = x
            continue
        t = clock.now() if op == "now" else clock.observe(pack(x, x % 7))
        assert t > last
        if op == "observe":
            assert t > pack(x, x % 7)
        last = t


def test_many_timestamps_in_one_millisecond_borrow_the_next():
    clock = HybridClock(wall=lambda: 5)
    stamps = [clock.now() for _ in range(70_000)]
    assert stamps == sorted(set(stamps))
    assert unpack(stamps[-1])[0] == 6  # the 65,537th moved to the next millisecond


def test_a_clock_seeded_from_its_writes_never_repeats_after_a_restore():
    clock = HybridClock(wall=lambda: 1_000)
    issued = [clock.now() for _ in range(5)]
    restored = HybridClock(max(issued), wall=lambda: 900)  # the wall clock went back
    assert restored.now() > max(issued)
    with pytest.raises(ValueError):
        HybridClock(-1)


def test_segments_are_read_in_order_up_to_the_first_missing_or_half_copied(tmp_path):
    key = _core.AeadKey(os.urandom(32))
    for seq in (1, 2, 3, 5):
        syncfolder.write_segment(tmp_path, A, seq, key, f"records {seq}".encode())
    got, scan = syncfolder.read_new(tmp_path, A, 0, key)
    assert [s.payload for s in got] == [b"records 1", b"records 2", b"records 3"]
    assert (scan.waiting, scan.later) == ("missing", 1)
    # 4 arrives half-copied, then whole
    syncfolder.write_segment(tmp_path / "elsewhere", A, 4, key, b"records 4" * 1000)
    whole = (tmp_path / "elsewhere" / A / f"{4:016x}.seg").read_bytes()
    target = syncfolder.segment_path(tmp_path, A, 4)
    target.write_bytes(whole[: len(whole) // 2])
    got, scan = syncfolder.read_new(tmp_path, A, 3, key)
    assert got == [] and scan.waiting == "incomplete"
    target.write_bytes(whole)
    got, scan = syncfolder.read_new(tmp_path, A, 3, key)
    assert [s.seq for s in got] == [4, 5] and scan.waiting == "" and scan.later == 0
    got, scan = syncfolder.read_new(tmp_path, A, 0, key, limit=2)  # a few at a time
    assert [s.seq for s in got] == [1, 2] and scan.later == 3


def test_conflict_copies_other_names_and_other_folders_keys_are_not_read(tmp_path):
    key, other = _core.AeadKey(os.urandom(32)), _core.AeadKey(os.urandom(32))
    p = syncfolder.write_segment(tmp_path, A, 1, key, b"mine")
    shutil.copy(p, p.with_name(f"{1:016x} (conflicted copy 2026-12-06).seg"))
    shutil.copy(p, p.with_name(".syncthing.tmp"))
    (tmp_path / "not-a-device").mkdir()
    got, scan = syncfolder.read_new(tmp_path, A, 0, key)
    assert [s.payload for s in got] == [b"mine"] and scan.later == 0
    assert syncfolder.devices(tmp_path) == [A]
    # A segment copied under another number does not read (its name is authenticated).
    shutil.copy(p, syncfolder.segment_path(tmp_path, A, 2))
    got, scan = syncfolder.read_new(tmp_path, A, 1, key)
    assert got == [] and scan.waiting == "incomplete"
    syncfolder.write_segment(tmp_path, B, 1, other, b"theirs")
    with pytest.raises(EncryptionKeyError):
        syncfolder.read_new(tmp_path, B, 0, key)


def test_segments_are_written_once_and_hold_no_plaintext(tmp_path):
    key = _core.AeadKey(os.urandom(32))
    p = syncfolder.write_segment(tmp_path, A, 1, key, b"MARKER my sister's pin is 4321")
    assert b"MARKER" not in p.read_bytes() and oct(p.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InvalidArgumentError, match="written once"):
        syncfolder.write_segment(tmp_path, A, 1, key, b"again")
    for bad in ("A" * 32, "../x", ""):
        with pytest.raises(InvalidArgumentError):
            syncfolder.segment_path(tmp_path, bad, 1)
    with pytest.raises(InvalidArgumentError):
        syncfolder.write_segment(tmp_path, A, 0, key, b"")
    assert [s.seq for s in syncfolder.read_new(tmp_path, A, 0, key)[0]] == [1]
    assert syncfolder.segments(Path(tmp_path), B) == []
