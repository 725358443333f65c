"""The native write-ahead log: records, segments, sync modes, group commit, damage."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from localmem import _core
from localmem.errors import ConcurrencyError, InvalidArgumentError


def open_wal(path, **kw) -> _core.Wal:
    """A log that grows record by record (prealloc_bytes=0), so that file sizes and byte
    offsets in these tests are those of the records; preallocation has its own tests."""
    kw.setdefault("prealloc_bytes", 0)
    w = _core.Wal(str(path), **kw)
    w.recover()
    return w


def payload(i: int) -> bytes:
    return f"record {i} ".encode() * (i % 7)


def test_append_read_roundtrip_across_segments(tmp_path):
    w = open_wal(tmp_path / "wal", segment_bytes=4096)
    lsns = [w.append(i % 5, payload(i)) for i in range(1, 301)]
    assert lsns == list(range(1, 301))
    w.commit(300)
    assert w.stats()["segments"] > 3
    got = w.read(0, 10_000, 1 << 30)
    assert [(lsn, t, p) for lsn, t, p in got] == [(i, i % 5, payload(i)) for i in range(1, 301)]
    # Reading from the middle, in small batches, returns the same records.
    out, after = [], 137
    while True:
        batch = w.read(after, 7, 1 << 30)
        if not batch:
            break
        out += batch
        after = batch[-1][0]
    assert [r[0] for r in out] == list(range(138, 301))
    # A new object scans the same log from disk.
    w2 = open_wal(tmp_path / "wal")
    assert w2.last_lsn == 300 and w2.read(299) == [(300, 300 % 5, payload(300))]


def test_files_are_private(tmp_path):
    w = open_wal(tmp_path / "wal")
    w.commit(w.append(1, b"x"))
    assert stat.S_IMODE(os.stat(tmp_path / "wal").st_mode) == 0o700
    seg = w.stats()["tail_segment"]
    assert stat.S_IMODE(os.stat(seg).st_mode) == 0o600


def test_max_bytes_returns_at_least_one_record(tmp_path):
    w = open_wal(tmp_path / "wal")
    for _ in range(5):
        w.append(1, b"y" * 1000)
    assert len(w.read(0, 100, 10)) == 1
    assert len(w.read(0, 100, 2500)) == 2


def test_bad_arguments_say_how_to_fix(tmp_path):
    w = open_wal(tmp_path / "wal")
    with pytest.raises(InvalidArgumentError, match="bytes-like"):
        w.append(1, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="reserved"):
        w.append(0xFFFFFFFF, b"")
    with pytest.raises(InvalidArgumentError, match="record type"):
        w.append(-1, b"")
    with pytest.raises(InvalidArgumentError, match="at most"):
        w.append(1, bytes(65 << 20))
    with pytest.raises(InvalidArgumentError, match="one type per payload"):
        w.append_batch([1, 2], [b"a"])
    with pytest.raises(InvalidArgumentError, match="no such record"):
        w.commit(10)
    with pytest.raises(InvalidArgumentError, match="sync must be"):
        _core.Wal(str(tmp_path / "w2"), sync="sometimes")
    assert w.last_lsn == 0  # nothing was written by the refused calls


def test_sync_modes_count_fsyncs(tmp_path):
    for mode, expect in (("always", 50), ("off", 0)):
        w = open_wal(tmp_path / mode, sync=mode)
        base = w.stats()["fsyncs"]
        for _ in range(50):
            w.commit(w.append(1, b"z" * 100))
        assert w.stats()["fsyncs"] - base == expect, mode
    w = open_wal(tmp_path / "batch", sync="batch")
    for _ in range(20):
        w.commit(w.append(1, b"z"))
    assert w.durable_lsn == 20
    assert w.stats()["tail_synced"] == w.stats()["tail_size"]


def test_group_commit_shares_fsyncs_between_threads(tmp_path):
    w = open_wal(tmp_path / "wal", sync="batch")
    per_thread, threads = 200, 16
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(per_thread):
                w.commit(w.append(t, f"{t}:{i}".encode()))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    st = w.stats()
    assert st["last_lsn"] == st["durable_lsn"] == per_thread * threads
    assert st["fsyncs"] < per_thread * threads / 2, st  # groups of several commits
    assert st["max_group"] > 1
    seen = {p.decode() for _, _, p in w.read(0, 1 << 20, 1 << 30)}
    assert seen == {f"{t}:{i}" for t in range(threads) for i in range(per_thread)}


def test_torn_tail_is_cut_reported_and_quarantined(tmp_path):
    w = open_wal(tmp_path / "wal")
    twin = open_wal(tmp_path / "twin")  # the same history plus an 11th record
    for i in range(10):
        w.append(1, payload(i))
        twin.append(1, payload(i))
    w.sync()
    seg = w.stats()["tail_segment"]
    good = os.path.getsize(seg)
    twin.append(1, b"eleventh record " * 10)
    twin.sync()
    full = Path(twin.stats()["tail_segment"]).read_bytes()[good:]
    with open(seg, "ab") as f:  # the first 30 bytes of the 11th record: a torn write
        f.write(full[:30])
    r = _core.Wal(str(tmp_path / "wal"))
    assert r.last_lsn == 10 and r.pending_damage["any"]
    assert os.path.getsize(seg) == good + 30  # a reader changes nothing
    rep = r.recover()
    assert rep["any"] and rep["dropped_bytes"] == 30 and "torn" in rep["reason"]
    assert os.path.getsize(seg) == good
    (q,) = rep["quarantined"]
    assert Path(q).read_bytes() == full[:30]
    assert r.append(1, b"next") == 11


def test_corruption_in_the_middle_ends_the_log_there(tmp_path):
    w = open_wal(tmp_path / "wal", segment_bytes=4096)
    for i in range(1, 201):
        w.append(1, payload(i))
    w.sync()
    segs = sorted(p for p in os.listdir(tmp_path / "wal") if p.endswith(".wal"))
    assert len(segs) >= 3
    victim = tmp_path / "wal" / segs[1]
    data = bytearray(victim.read_bytes())
    data[200] ^= 0x40
    victim.write_bytes(bytes(data))
    r = _core.Wal(str(tmp_path / "wal"))
    dmg = r.pending_damage
    assert dmg["any"] and dmg["segment"].endswith(segs[1])
    assert len(dmg["later_segments"]) == len(segs) - 2
    last = r.last_lsn
    assert 0 < last < 200
    assert [x[2] for x in r.read(0, 1000, 1 << 30)] == [payload(i) for i in range(1, last + 1)]
    rep = r.recover()
    assert len(rep["quarantined"]) == len(segs) - 1  # the cut tail and every later file
    assert r.append(1, b"after") == last + 1
    assert _core.Wal(str(tmp_path / "wal")).last_lsn == last + 1


def test_a_second_writer_must_catch_up_first(tmp_path):
    a = open_wal(tmp_path / "wal")
    b = open_wal(tmp_path / "wal")
    a.commit(a.append(1, b"from a"))
    with pytest.raises(ConcurrencyError):
        b.append(1, b"from b")
    assert b.refresh() == 1
    assert b.append(1, b"from b") == 2
    assert a.refresh() == 2 and a.read(1) == [(2, 1, b"from b")]


def test_refresh_follows_rotation_by_another_writer(tmp_path):
    a = open_wal(tmp_path / "wal", segment_bytes=4096)
    b = open_wal(tmp_path / "wal", segment_bytes=4096)
    for i in range(1, 100):
        a.append(2, payload(i))
    assert b.refresh() == 99
    assert [x[0] for x in b.read(0, 1000, 1 << 30)] == list(range(1, 100))


def test_truncate_before_keeps_the_tail(tmp_path):
    w = open_wal(tmp_path / "wal", segment_bytes=4096)
    for i in range(1, 301):
        w.append(1, payload(i))
    n = w.stats()["segments"]
    assert w.truncate_before(250) > 0
    assert w.first_lsn <= 250
    assert w.stats()["segments"] < n
    with pytest.raises(ConcurrencyError, match="checkpointed"):
        w.read(0)
    assert w.read(299)[0][0] == 300
    assert w.truncate_before(10**9) >= 0
    assert w.stats()["segments"] == 1


def test_empty_log_starts_at_start_lsn(tmp_path):
    w = open_wal(tmp_path / "wal", start_lsn=1000)
    assert w.last_lsn == 999
    assert w.append(1, b"a") == 1000


def test_a_seal_that_names_its_own_segment_is_damage_not_a_loop(tmp_path):
    """A segment is named after its first LSN, so a seal as its first record would name the
    segment itself as its successor. Such a file (a bug or a forger) must end the log with
    a report, not send the reader round in circles."""
    import struct

    w = open_wal(tmp_path / "wal")
    assert w.rotate() is None and w.stats()["segments"] == 1  # empty tail: no-op
    seg = Path(w.stats()["tail_segment"])
    first = w.last_lsn + 1
    head = struct.pack("<IQII", 0, first, 0xFFFFFFFF, 0xFFFFFFFF)
    seal = struct.pack("<I", _core.crc32c(head)) + head
    with seg.open("ab") as f:
        f.write(seal)
    r = _core.Wal(str(tmp_path / "wal"))
    assert r.pending_damage["any"] and "empty segment" in r.pending_damage["reason"]
    assert r.refresh() == first - 1
    r.recover()
    assert r.append(1, b"fine") == first


def test_a_zero_filled_tail_is_the_clean_end_of_the_log(tmp_path):
    w = open_wal(tmp_path / "wal")
    w.commit(w.append(1, b"kept"))
    seg = Path(w.stats()["tail_segment"])
    size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(bytes(8192))  # a preallocation, or a file system that extended the file
    r = _core.Wal(str(tmp_path / "wal"))
    assert not r.pending_damage["any"]
    rep = r.recover()
    assert not rep["any"] and seg.stat().st_size == size + 8192  # kept: appends fill it
    assert r.append(1, b"next") == 2
    assert _core.Wal(str(tmp_path / "wal")).read(0) == [(1, 1, b"kept"), (2, 1, b"next")]


def test_preallocated_segments(tmp_path):
    """The default: the tail is kept prealloc_bytes ahead in written zeros, the log ends at
    the first zero header, and whatever else lies in the zeros is a torn write."""
    w = _core.Wal(str(tmp_path / "wal"), sync="always", prealloc_bytes=16384)
    w.recover()
    seg = Path(w.stats()["tail_segment"])
    assert seg.stat().st_size == 16384  # created preallocated
    for i in range(200):  # 200 x 64 B records: the file grows in 16 KiB steps
        w.append(1, payload(i)[:40].ljust(40, b"."))
    size = seg.stat().st_size
    assert size % 16384 == 0 and size > 200 * 64
    # Another handle reads to the end and sees nothing past it.
    r = _core.Wal(str(tmp_path / "wal"))
    assert r.last_lsn == 200 and not r.pending_damage["any"]
    # A writer appends: the reader's refresh finds it; a stale writer is refused.
    w.append(1, b"two hundred and one")
    assert r.refresh() == 201
    # A torn write in the zeros (the middle of a record that never completed).
    data = bytearray(seg.read_bytes())
    tail = data.rstrip(b"\0")
    garbage_at = len(tail) + 100
    data[garbage_at : garbage_at + 8] = b"GARBAGE!"
    seg.write_bytes(bytes(data))
    r2 = _core.Wal(str(tmp_path / "wal"))
    assert r2.last_lsn == 201 and r2.pending_damage["any"]
    rep = r2.recover()
    assert rep["any"] and "zero header" in rep["reason"]
    assert rep["dropped_bytes"] <= 108  # up to the last written byte, not the zeros
    (q,) = rep["quarantined"]
    assert b"GARBAGE!" in Path(q).read_bytes()
    assert r2.append(1, b"after repair") == 202
    assert not _core.Wal(str(tmp_path / "wal")).pending_damage["any"]
