"""The native blob arena: appends, zero-copy views, scans, repair, generational copy."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from localmem import _core
from localmem.errors import ConcurrencyError, CorruptFileError, InvalidArgumentError


@pytest.fixture
def arena(tmp_path) -> _core.BlobArena:
    path = str(tmp_path / "gen-000001.blob")
    _core.BlobArena.create(path, 1)
    a = _core.BlobArena(path, 1)
    a.recover(0)
    return a


def test_append_scan_view(arena, tmp_path):
    blobs = [(i, os.urandom(i * 13 % 200)) for i in range(1, 50)]
    offs = [arena.append(k, lsn, k % 2, data) for lsn, (k, data) in enumerate(blobs, 1)]
    assert all(o % 8 == 0 for o in offs)
    other = _core.BlobArena(arena.path, 1)
    s = other.refresh(10**9)
    assert s["stop"] == "clean"
    assert s["keys"].tolist() == [k for k, _ in blobs]
    assert s["offsets"].tolist() == offs
    for (_, data), off, n in zip(blobs, s["offsets"], s["lengths"], strict=False):
        assert bytes(other.view(int(off), int(n))) == data


def test_views_outlive_the_arena_and_its_file(arena):
    vec = np.arange(16, dtype=np.float32)
    off = arena.append(7, 1, 0, vec.tobytes())
    view = arena.view(off, vec.nbytes)
    f32 = view.view(np.float32)  # zero copy
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 1
    path = arena.path
    del arena
    gc.collect()
    os.unlink(path)  # a compaction deletes old generations while views may be alive
    assert f32.tolist() == vec.tolist()


def test_refresh_stops_before_blobs_past_the_log(arena):
    for lsn in (1, 2, 3):
        arena.append(lsn, lsn, 0, b"x" * lsn)
    other = _core.BlobArena(arena.path, 1)
    s = other.refresh(2)
    assert s["lsns"].tolist() == [1, 2] and s["stop"] == "beyond"
    assert other.refresh(3)["lsns"].tolist() == [3]


def test_recover_cuts_a_torn_blob(arena):
    arena.append(1, 1, 0, b"complete")
    end = arena.end
    with open(arena.path, "ab") as f:
        f.write(b"\x10\x00\x00\x00partial")
    with pytest.raises(ConcurrencyError):
        arena.append(2, 2, 0, b"next")
    other = _core.BlobArena(arena.path, 1)
    scan, rep = other.recover(10)
    assert scan["keys"].tolist() == [1] and rep["any"] and rep["dropped_bytes"] == 11
    assert os.path.getsize(arena.path) == end
    assert other.append(2, 2, 0, b"next") > 0


def test_bad_handles_and_lsns_are_refused(arena):
    off = arena.append(1, 5, 0, b"hello")
    with pytest.raises(InvalidArgumentError, match="outside"):
        arena.view(off + 1000, 5)
    with pytest.raises(InvalidArgumentError, match="not a blob handle"):
        arena.view(off, 4)
    with pytest.raises(InvalidArgumentError, match="not after"):
        arena.append(2, 5, 0, b"same lsn")
    with pytest.raises(InvalidArgumentError, match="bytes-like"):
        arena.append(2, 6, 0, 123)  # type: ignore[arg-type]


def test_header_checks(tmp_path):
    p = tmp_path / "a.blob"
    _core.BlobArena.create(str(p), 3)
    with pytest.raises(CorruptFileError, match="generation"):
        _core.BlobArena(str(p), 4)
    p.write_bytes(b"not an arena at all" * 4)
    with pytest.raises(CorruptFileError, match="magic"):
        _core.BlobArena(str(p), 3)
    p.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="truncated"):
        _core.BlobArena(str(p), 3)


def test_copy_to_keeps_chosen_blobs_in_order(arena, tmp_path):
    offs = [arena.append(k, k, 0, f"blob {k}".encode() * k) for k in range(1, 21)]
    keep = np.asarray(offs[::3], dtype=np.uint64)
    new_path = str(tmp_path / "gen-000002.blob")
    placed = arena.copy_to(new_path, 2, keep)
    b = _core.BlobArena(new_path, 2)
    s = b.refresh(100)
    assert s["keys"].tolist() == list(range(1, 21, 3))
    assert s["offsets"].tolist() == placed.tolist()
    for k, off, n in zip(s["keys"], s["offsets"], s["lengths"], strict=False):
        assert bytes(b.view(int(off), int(n))) == f"blob {k}".encode() * int(k)
    with pytest.raises(InvalidArgumentError, match="increasing"):
        arena.copy_to(new_path, 2, keep[::-1].copy())
    with pytest.raises(InvalidArgumentError, match="uint64"):
        arena.copy_to(new_path, 2, keep.astype(np.int64))
