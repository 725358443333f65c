"""Fuzzing the readers of every on-disk format: WAL segments, arena generations, index
files, manifests, and whole stores. Each case damages a valid file (truncation, bit flips,
garbage, zeroed or duplicated ranges, inserted bytes) and reads it back. A reader must never
crash, never hand out a damaged record or blob (what it returns is an exact prefix of what
was written), and must say when it stopped early. Seeds are fixed: a failure reproduces.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from localmem import Int8Index, Store, _core
from localmem.errors import CorruptFileError, StorageError
from localmem.store.manifest import Manifest, read_manifest, write_manifest
from tests import tally


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0 or not b:  # truncate
        return bytes(b[: rng.randrange(0, len(b) + 1)])
    if kind == 1:  # flip a few bits
        for _ in range(rng.randrange(1, 9)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # overwrite a range with garbage
        at = rng.randrange(len(b))
        n = rng.randrange(1, 65)
        b[at : at + n] = rng.randbytes(min(n, len(b) - at))
    elif kind == 3:  # garbage appended (a torn write of something else)
        b += rng.randbytes(rng.randrange(1, 200))
    elif kind == 4:  # bytes inserted
        at = rng.randrange(len(b) + 1)
        b[at:at] = rng.randbytes(rng.randrange(1, 40))
    elif kind == 5:  # a range zeroed (lost sectors)
        at = rng.randrange(len(b))
        n = rng.randrange(1, 4096)
        b[at : at + n] = bytes(min(n, len(b) - at))
    else:  # a chunk copied over another place
        n = rng.randrange(1, 128)
        src, dst = rng.randrange(len(b)), rng.randrange(len(b))
        chunk = b[src : src + n]
        b[dst : dst + len(chunk)] = chunk
    return bytes(b)


def is_clean_cut(mutated: bytes, original: bytes, boundaries: list[int]) -> bool:
    """True if `mutated` is the original cut exactly at a record boundary, possibly followed
    by zeros only: that is what a log looks like whose later records were never written
    (a preallocated tail), so no reader can tell it from one."""
    return any(
        len(mutated) >= b and mutated[:b] == original[:b] and not mutated[b:].strip(b"\0")
        for b in boundaries
    )


@pytest.fixture(scope="module")
def wal_base(tmp_path_factory):
    d = tmp_path_factory.mktemp("walbase") / "wal"
    w = _core.Wal(str(d), sync="off", prealloc_bytes=8192)  # records, then zeros
    w.recover()
    rng = random.Random(1)
    for _ in range(40):
        w.append(rng.randrange(1, 100), rng.randbytes(rng.randrange(0, 300)))
    records = w.read(0, 1000, 1 << 30)
    seg = Path(w.stats()["tail_segment"])
    data = seg.read_bytes()
    boundaries, off = [32], 32
    for _, _, p in records:
        off += 24 + (len(p) + 7) // 8 * 8
        boundaries.append(off)
    return seg.name, data, records, boundaries


def test_fuzz_wal_segments(tmp_path, wal_base):
    name, original, records, boundaries = wal_base
    rng = random.Random(2)
    d = tmp_path / "wal"
    n = 4000
    for case in range(n):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        data = mutate(original, rng)
        (d / name).write_bytes(data)
        w = _core.Wal(str(d))
        got = w.read(0, 1000, 1 << 30) if w.last_lsn else []
        assert got == records[: len(got)], f"case {case}: a damaged record was returned"
        if len(got) < len(records) and not is_clean_cut(data, original, boundaries):
            assert w.pending_damage["any"], f"case {case}: records dropped without a report"
        if case % 8 == 0:  # the writer's repair, then the log must take appends
            rep = w.recover()
            assert rep["any"] == bool(w.pending_damage["any"] or rep["quarantined"])
            lsn = w.append(7, b"after repair")
            again = _core.Wal(str(d))
            assert again.last_lsn == lsn and not again.pending_damage["any"]
            assert again.read(lsn - 1) == [(lsn, 7, b"after repair")]
    tally.add("fuzzed files read: WAL segments", n)


def test_fuzz_arena_files(tmp_path):
    base = tmp_path / "base.blob"
    _core.BlobArena.create(str(base), 1)
    a = _core.BlobArena(str(base), 1)
    a.recover(0)
    rng = random.Random(3)
    blobs = []
    for lsn in range(1, 41):
        payload = rng.randbytes(rng.randrange(0, 400))
        key, flags = rng.randrange(1000), rng.randrange(2)
        a.append(key, lsn, flags, payload)
        blobs.append((key, lsn, flags, payload))
    original = base.read_bytes()
    boundaries, off = [64], 64
    for *_, p in blobs:
        off += 32 + (len(p) + 7) // 8 * 8
        boundaries.append(off)
    path = tmp_path / "fuzz.blob"
    n = 3500
    for case in range(n):
        data = mutate(original, rng)
        path.write_bytes(data)
        try:
            f = _core.BlobArena(str(path), 1)
        except CorruptFileError:
            assert data[:64] != original[:64] or len(data) < 64
            continue
        s = f.refresh(10**9)
        got = [
            (k, lsn, fl, bytes(f.view(o, ln)))
            for k, lsn, fl, o, ln in zip(
                s["keys"].tolist(),
                s["lsns"].tolist(),
                s["flags"].tolist(),
                s["offsets"].tolist(),
                s["lengths"].tolist(),
                strict=False,
            )
        ]
        assert got == blobs[: len(got)], f"case {case}: a damaged blob was returned"
        if len(got) < len(blobs) and not is_clean_cut(data, original, boundaries):
            assert s["stop"] != "clean", f"case {case}: blobs dropped without a report"
    tally.add("fuzzed files read: arena generations", n)


def test_fuzz_index_files(tmp_path, rng):
    ix = Int8Index(16, metric="cos")
    vecs = rng.standard_normal((60, 16)).astype(np.float32)
    ix.add(np.arange(60, dtype=np.int64) * 3, vecs)
    base = tmp_path / "base.lmix"
    ix.save(base)
    original = base.read_bytes()
    want_ids, want_scores = ix.search(vecs[:4], 5)
    r = random.Random(4)
    path = tmp_path / "fuzz.lmix"
    n, loaded = 1500, 0
    for case in range(n):
        path.write_bytes(mutate(original, r))
        try:
            got = Int8Index.load(path)
        except (CorruptFileError, StorageError):
            continue
        loaded += 1
        ids, scores = got.search(vecs[:4], 5)
        np.testing.assert_array_equal(ids, want_ids, err_msg=f"case {case}")
        np.testing.assert_array_equal(scores, want_scores, err_msg=f"case {case}")
    assert loaded < n // 10  # nearly every damage is caught by the checksums
    tally.add("fuzzed files read: index files", n)


def test_fuzz_sealed_index_files(tmp_path, rng):
    """An encrypted store's index snapshot (sealed in chunks): every damage is refused, as
    damage (CorruptFileError), never as another key; what loads is the index written."""
    import os

    key = _core.AeadKey(os.urandom(32))
    ix = Int8Index(16, metric="cos")
    vecs = rng.standard_normal((3000, 16)).astype(np.float32)
    ix.add(np.arange(3000, dtype=np.int64), vecs)
    base = tmp_path / "base.lmix"
    ix.save(base, key=key)
    original = base.read_bytes()
    assert original[:8] == b"LMSEALED" and vecs[0].tobytes() not in original
    renamed = tmp_path / "int8-older.lmix"  # an old snapshot put in the current one's place
    renamed.write_bytes(original)
    with pytest.raises(CorruptFileError, match="failed authentication"):
        Int8Index.load(renamed, key=key)
    want = ix.search(vecs[:4], 5)
    r = random.Random(5)
    path = tmp_path / "fuzz.lmix"
    n, loaded = 1500, 0
    for case in range(n):
        bad = mutate(original, r)
        path.write_bytes(bad)
        try:
            got = Int8Index.load(path, key=key)
        except (CorruptFileError, StorageError):
            continue
        loaded += bad != original
        for a, b in zip(got.search(vecs[:4], 5), want, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"case {case}")
    assert loaded == 0  # authentication leaves no damage unnoticed
    tally.add("fuzzed files read: sealed index files", n)


def test_fuzz_manifests(tmp_path):
    m = Manifest(
        dim=384,
        metric="cos",
        generation=3,
        checkpoint_lsn=1234,
        index_file="index/int8-00000000000004d2.lmix",
        arena_end=4096,
        store_id="00ff00ff00ff00ff",
    )
    base = tmp_path / "MANIFEST"
    write_manifest(base, m)
    original = base.read_bytes()
    rng = random.Random(5)
    n = 1000
    for case in range(n):
        base.write_bytes(mutate(original, rng))
        try:
            got = read_manifest(base)
        except CorruptFileError:
            continue
        assert got == m, f"case {case}: a damaged manifest was accepted"
    tally.add("fuzzed files read: manifests", n)


def test_fuzz_whole_stores(tmp_path):
    """Damage one file of a real store and open it: the store opens (having repaired what
    it could and said so) or refuses with CorruptFileError, and what it serves is right."""
    src = tmp_path / "src"
    texts = {}
    with Store.open(src, dim=8, segment_bytes=8192) as s:
        for i in range(60):
            texts[i] = f"item {i} " * (i % 9)
            s.put(i, texts[i], vector=np.full(8, i + 1, dtype=np.float32))
            if i == 30:
                s.checkpoint()
    files = [p for p in src.rglob("*") if p.is_file() and p.name != "LOCK"]
    rng = random.Random(6)
    n = 500
    for case in range(n):
        dst = tmp_path / "case"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        victim = dst / rng.choice(files).relative_to(src)
        victim.write_bytes(mutate(victim.read_bytes(), rng))
        try:
            s = Store.open(dst)
        except CorruptFileError:
            continue
        with s:
            for id in s.ids():
                assert s.get(id).text == texts[id], f"case {case}: {victim.name}"
            if len(s) < len(texts):
                assert s.recovery, f"case {case}: items lost without a report ({victim.name})"
    tally.add("fuzzed files read: whole stores", n)


def test_deeply_nested_manifest_is_refused_not_a_crash(tmp_path):
    from localmem.errors import CorruptFileError
    from localmem.store.manifest import read_manifest

    p = tmp_path / "MANIFEST"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFileError):
        read_manifest(p)
