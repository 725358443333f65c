"""Saving and loading an index: round trips, mmap, and damaged files (fuzzed)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from localmem import Int8Index
from localmem.errors import CorruptFileError, StorageError

HEADER = 128


@pytest.fixture
def saved(tmp_path, rng):
    x = rng.standard_normal((777, 40)).astype(np.float32)
    index = Int8Index(40, metric="cos")
    index.add(np.arange(777) * 3, x, keep_fp32=True)
    index.remove([0, 3, 6])
    path = tmp_path / "index.lmi"
    index.save(path)
    return index, path, x


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(saved, rng, mmap):
    index, path, _ = saved
    loaded = Int8Index.load(path, mmap=mmap)
    assert len(loaded) == len(index) == 774
    assert loaded.dim == 40 and loaded.metric == "cos"
    assert loaded.stats()["mapped"] is mmap
    assert loaded.stats()["fp32_vectors"] == 774
    q = rng.standard_normal((30, 40)).astype(np.float32)
    for kw in ({}, {"rerank": 4}):
        a, b = index.search(q, 12, **kw), loaded.search(q, 12, **kw)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_file_is_private_and_saving_is_atomic(saved):
    _, path, _ = saved
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["index.lmi"]  # no temporary left


def test_mapped_index_copies_on_write_and_leaves_file_alone(saved, rng):
    _, path, _ = saved
    before = path.read_bytes()
    loaded = Int8Index.load(path)
    loaded.add([1], rng.standard_normal((1, 40)).astype(np.float32))
    loaded.remove([9])
    assert 1 in loaded and 9 not in loaded
    assert loaded.stats()["mapped"] is False
    assert path.read_bytes() == before
    loaded.save(path)  # overwriting the file it was mapped from is safe
    again = Int8Index.load(path)
    assert len(again) == len(loaded) and 1 in again and 9 not in again


def test_every_truncation_is_refused(saved):
    _, path, _ = saved
    data = path.read_bytes()
    cuts = sorted({0, 1, 7, 8, HEADER - 1, HEADER, HEADER + 1, len(data) // 2, len(data) - 1})
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptFileError):
            Int8Index.load(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(CorruptFileError, match="trailing"):
        Int8Index.load(path)


def test_random_damage_is_always_detected(saved, rng):
    _, path, _ = saved
    data = path.read_bytes()
    for _ in range(300):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), rng.integers(1, 4)):
            damaged[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError):
            Int8Index.load(path, mmap=bool(rng.integers(0, 2)))


def test_unverified_damage_never_crashes(saved, rng):
    # Without the checksum, content checks still refuse what would break the index; what
    # they let through must load and search without crashing.
    _, path, _ = saved
    data = path.read_bytes()
    q = rng.standard_normal((2, 40)).astype(np.float32)
    refused = 0
    for _ in range(300):
        damaged = bytearray(data)
        pos = int(rng.integers(HEADER, len(data)))
        damaged[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            loaded = Int8Index.load(path, verify=False)
        except CorruptFileError:
            refused += 1
            continue
        loaded.search(q, 5, rerank=2)
    assert refused > 0


def test_header_damage_and_foreign_files(tmp_path, saved):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    wrong_magic = bytearray(data)
    wrong_magic[0:8] = b"NOTANIDX"
    path.write_bytes(bytes(wrong_magic))
    with pytest.raises(CorruptFileError, match="bad magic"):
        Int8Index.load(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello " * 100)
    with pytest.raises(CorruptFileError):
        Int8Index.load(other)


def test_newer_format_version_says_upgrade(saved):
    from localmem import _core

    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[8:12] = (99).to_bytes(4, "little")
    data[124:128] = _core.crc32c(bytes(data[:124])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"version 99.*upgrade"):
        Int8Index.load(path)


def test_missing_file_and_directory_are_storage_errors(tmp_path):
    with pytest.raises(StorageError, match="cannot open"):
        Int8Index.load(tmp_path / "absent.lmi")
    with pytest.raises(StorageError, match="not a regular file"):
        Int8Index.load(tmp_path)
    with pytest.raises(OSError):
        Int8Index(4).save(tmp_path / "no" / "such" / "dir" / "x.lmi")


def test_empty_index_round_trip(tmp_path):
    path = tmp_path / "empty.lmi"
    Int8Index(5).save(path)
    loaded = Int8Index.load(path)
    assert len(loaded) == 0 and loaded.dim == 5
    assert loaded.search(np.ones(5, np.float32), 3)[0].shape == (0,)
