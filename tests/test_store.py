"""Store: puts, deletes, reads, search, replay on open, checkpoints, two openers, bad input."""

from __future__ import annotations

import json
import os
import stat
import threading

import numpy as np
import pytest

from localmem import Store
from localmem.errors import (
    CorruptFileError,
    InvalidArgumentError,
    StoreLockedError,
    UnknownIdError,
)
from localmem.store import FIRST_USER_TYPE
from localmem.store.lock import StoreLock

DIM = 16


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def fill(s: Store, ids) -> None:
    for i in ids:
        s.put(i, f"text {i} " + "é" * (i % 5), meta={"n": i}, vector=vec(i))


def test_put_get_delete_search(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(50))
        it = s.get(7)
        assert (it.id, it.text, it.meta) == (7, "text 7 éé", {"n": 7})
        np.testing.assert_array_equal(it.vector, vec(7))
        assert not it.vector.flags.writeable  # a view into the mmap'd arena
        assert s.search(vec(7), 1)[0][0] == 7
        assert s.delete(7) and not s.delete(7)
        assert 7 not in s and len(s) == 49
        with pytest.raises(UnknownIdError, match="no item with id 7"):
            s.get(7)
        assert 7 not in [i for i, _ in s.search(vec(7), 5)]
        s.put(8, "replaced", vector=vec(100))
        assert s.get(8).text == "replaced" and s.search(vec(100), 1)[0][0] == 8
        s.put(1000, "no vector")
        assert s.get(1000).vector is None and 1000 not in [i for i, _ in s.search(vec(1), 60)]


def test_reopen_replays_the_log(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(30))
        s.delete(3)
        s.checkpoint()
        fill(s, range(30, 40))  # after the checkpoint: only in the log
        s.delete(35)
    with Store.open(tmp_path / "s") as s:
        assert s.ids() == [i for i in range(40) if i not in (3, 35)]
        assert s.get(39).meta == {"n": 39} and s.search(vec(39), 1)[0][0] == 39
        assert s.dim == DIM and s.recovery == []


def test_put_many_and_user_records(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        last = s.put_many([(i, f"bulk {i}", None, vec(i)) for i in range(100)] + [(500, "x")])
        assert last == 101 and len(s) == 101
        assert s.log(FIRST_USER_TYPE, b"touch 5") == 102
        assert list(s.changes(101)) == [(102, FIRST_USER_TYPE, b"touch 5")]
        assert [lsn for lsn, _, _ in s.changes(98)] == [99, 100, 101, 102]
        with pytest.raises(InvalidArgumentError, match="belong to the store"):
            s.log(1, b"x")
        assert s.put_many([]) == 0
    with Store.open(tmp_path / "s") as s:
        assert len(s) == 101 and s.last_lsn == 102


def test_bad_input_is_refused_with_the_fix(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        cases = [
            (lambda: s.put(-1, "x"), "id must be in"),
            (lambda: s.put("1", "x"), "id must be an int"),  # type: ignore[arg-type]
            (lambda: s.put(True, "x"), "id must be an int"),
            (lambda: s.put(1, b"bytes"), "text must be a str"),  # type: ignore[arg-type]
            (lambda: s.put(1, "\ud800"), "not valid Unicode"),
            (lambda: s.put(1, "x", meta=[1]), "meta must be a dict"),  # type: ignore[arg-type]
            (lambda: s.put(1, "x", meta={"f": object()}), "JSON-serializable"),
            (lambda: s.put(1, "x", vector=np.zeros(3)), r"shape \(16,\)"),
            (lambda: s.put(1, "x", vector=np.full(DIM, np.nan)), "NaN"),
            (lambda: s.put_many([(1,)]), "fields"),  # type: ignore[list-item]
        ]
        for call, msg in cases:
            with pytest.raises(InvalidArgumentError, match=msg):
                call()
        assert len(s) == 0 and s.last_lsn == 0
    with pytest.raises(InvalidArgumentError, match="dim=16"):
        Store.open(tmp_path / "s", dim=8)
    with pytest.raises(InvalidArgumentError, match="sync must be"):
        Store.open(tmp_path / "s", sync="never")  # type: ignore[arg-type]
    with (
        Store.open(tmp_path / "novec") as s,
        pytest.raises(InvalidArgumentError, match="without dim"),
    ):
        s.put(1, "x", vector=vec(1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        Store.open(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "absent", create=False)
    s = Store.open(tmp_path / "s")
    s.close()
    s.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        s.put(1, "x")


def test_store_is_private(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(3))
        s.checkpoint()
    for root, _dirs, files in os.walk(tmp_path / "s"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f


def test_checkpoint_compaction_and_log_truncation(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM, segment_bytes=1 << 16) as s:
        fill(s, range(400))
        for i in range(0, 400, 2):
            s.delete(i)
        before = s.stats()
        r = s.checkpoint(compact=True)
        assert r["compacted"] and r["generation"] == 2
        assert r["arena_bytes"] < r["arena_bytes_before"] * 0.6
        assert r["segments_dropped"] > 0 and s.stats()["wal"]["bytes"] < before["wal"]["bytes"]
        assert sorted(os.listdir(tmp_path / "s" / "arena")) == ["gen-000002.blob"]
        assert len(s) == 200 and s.get(399).text.startswith("text 399")
        fill(s, [1000])
    with Store.open(tmp_path / "s") as s:
        assert len(s) == 201 and s.get(1).meta == {"n": 1} and s.search(vec(1), 1)[0][0] == 1


def test_a_checkpoint_compacts_by_itself_once_garbage_passes_256_kib_and_the_live_bytes(
    tmp_path,
):
    """A small store that keeps rewriting its items (every tier move of a memory is a new
    blob) is compacted by its next checkpoint once the garbage exceeds both 256 KiB and what
    is live; less garbage than that is left for later."""
    with Store.open(tmp_path / "s", dim=DIM) as s:
        for i in range(100):
            s.put(i, "x" * 1000)
        for _ in range(2):  # ~200 KB of garbage, more than the ~100 KB live
            for i in range(100):
                s.put(i, "y" * 1000)
        assert not s.checkpoint()["compacted"]
        for i in range(100):
            s.put(i, "z" * 1000)  # ~300 KB now
        r = s.checkpoint()
        assert r["compacted"] and r["arena_bytes"] < r["arena_bytes_before"] / 3
        assert s.get(7).text == "z" * 1000


def test_auto_checkpoint_by_log_size(tmp_path):
    with Store.open(tmp_path / "s", checkpoint_bytes=1 << 16, segment_bytes=1 << 14) as s:
        for i in range(300):
            s.put(i, "y" * 1000)
        st = s.stats()
        assert st["checkpoint_lsn"] > 0 and st["wal"]["bytes"] < 2 << 16


def test_two_openers_see_each_other(tmp_path):
    a = Store.open(tmp_path / "s", dim=DIM)
    b = Store.open(tmp_path / "s")
    fill(a, range(10))
    assert len(b) == 10 and b.get(3).text.startswith("text 3")
    fill(b, range(10, 20))
    b.delete(0)
    assert len(a) == 19 and 0 not in a and a.search(vec(15), 1)[0][0] == 15
    a.checkpoint(compact=True)  # b holds the old generation: it must switch
    fill(b, [20])
    assert b.get(5).text.startswith("text 5") and len(b) == 20
    assert a.get(20).meta == {"n": 20}
    a.close()
    b.close()


def test_threads_share_a_store(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(50):
                    id = t * 1000 + i
                    s.put(id, f"t{t}", vector=vec(id))
                    assert s.get(id).text == f"t{t}"
            except BaseException as e:  # pragma: no cover
                errors.append(e)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors and len(s) == 400


def test_lock_timeout_is_a_clear_error(tmp_path):
    with Store.open(tmp_path / "s") as s:
        holder = StoreLock(tmp_path / "s" / "LOCK", timeout=1)
        holder.acquire()
        try:
            s._lock.timeout = 0.05
            with pytest.raises(StoreLockedError, match="busy"):
                s.put(1, "x")
        finally:
            holder.close()
        s.put(1, "x")
        assert s.get(1).text == "x"


def test_damaged_index_snapshot_is_rebuilt_from_the_arena(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(20))
        s.checkpoint()
    (ix,) = (tmp_path / "s" / "index").iterdir()
    data = bytearray(ix.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ix.write_bytes(bytes(data))
    with Store.open(tmp_path / "s") as s:
        assert [r["part"] for r in s.recovery] == ["index"]
        assert s.search(vec(11), 1)[0][0] == 11 and len(s) == 20


def test_damaged_manifest_and_checkpointed_arena_are_refused_untouched(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(20))
        s.checkpoint()
    m = tmp_path / "s" / "MANIFEST"
    good = m.read_bytes()
    doc = json.loads(good)
    doc["checkpoint_lsn"] = 5
    m.write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match="checksum"):
        Store.open(tmp_path / "s")
    m.write_bytes(b"\0garbage")
    with pytest.raises(CorruptFileError, match="not a valid store manifest"):
        Store.open(tmp_path / "s")
    m.write_bytes(good)
    (arena,) = (tmp_path / "s" / "arena").iterdir()
    data = bytearray(arena.read_bytes())
    data[200] ^= 1
    arena.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="inside the part made durable"):
        Store.open(tmp_path / "s")
    assert arena.read_bytes() == bytes(data)  # nothing was cut


def test_a_lagging_opener_survives_checkpoints_that_delete_its_segments(tmp_path):
    """b last read the log in its first segment; a then fills several segments and
    checkpoints, deleting them. b must reload from the checkpoint, not take the log for
    ended (and must never cut the shared arena on that mistaken belief)."""
    a = Store.open(tmp_path / "s", dim=DIM, segment_bytes=4096)
    b = Store.open(tmp_path / "s", segment_bytes=4096)
    fill(a, range(5))
    assert len(b) == 5
    for round in range(3):
        fill(a, range(100 * (round + 1), 100 * (round + 1) + 60))
        a.checkpoint(compact=round == 1)
    fill(b, [9999])
    want = {*range(5), *(i for r in (1, 2, 3) for i in range(100 * r, 100 * r + 60)), 9999}
    assert set(b.ids()) == want and set(a.ids()) == want
    assert b.get(150).text.startswith("text 150") and a.get(9999).meta == {"n": 9999}
    assert b.recovery == [] and a.recovery == []
    a.close()
    b.close()
    with Store.open(tmp_path / "s") as s:
        assert set(s.ids()) == want and s.recovery == []


def test_a_store_used_across_fork_is_refused_in_the_child(tmp_path):
    s = Store.open(tmp_path / "s")
    s.put(1, "parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            s.put(2, "child")
            os.write(w, b"wrote")
        except InvalidArgumentError as e:
            os.write(w, str(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    msg = os.read(r, 1000).decode()
    os.close(r)
    assert "forked child must open the store again" in msg
    s.put(3, "parent again")
    assert s.ids() == [1, 3]
    s.close()


def test_a_checkpoint_failing_after_its_switch_loses_no_later_write(tmp_path, monkeypatch):
    import localmem.store.views as store_mod  # where the checkpoint's crash points are

    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(300))
        for i in range(290):
            s.delete(i)

        def boom(name: str) -> None:
            if name == "checkpoint:after-manifest":
                raise OSError(28, "No space left on device (simulated)")

        monkeypatch.setattr(store_mod, "crash_point", boom)
        with pytest.raises(OSError, match="No space"):
            s.checkpoint(compact=True)
        monkeypatch.undo()
        s.put(1000, "written after the failed checkpoint", vector=vec(1000))
        assert s.get(1000).text == "written after the failed checkpoint"
        assert s.get(295).meta == {"n": 295}
    with Store.open(tmp_path / "s") as s:
        assert s.get(1000).text == "written after the failed checkpoint"
        assert s.ids() == [*range(290, 300), 1000]


def test_writes_after_a_checkpoint_take_the_native_path(tmp_path, monkeypatch):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(10))
        s.checkpoint()

        def slow(records):  # type: ignore[no-untyped-def]
            raise AssertionError("took the slow path")

        monkeypatch.setattr(s, "_submit", slow)
        s.put(12, "native")
        assert s.get(12).text == "native"


def test_quantized_vectors_take_a_quarter_of_the_bytes_and_search_the_same(tmp_path):
    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(50))
        q = vec(7)
        before = s.search(q, 5)
        full = s.get(7)
        s.put(7, full.text, meta=full.meta, vector=full.vector, quantized=True)
        after = s.search(q, 5)  # the index holds the same code (its scale moves by ~1e-4)
        assert [i for i, _ in after] == [i for i, _ in before]
        assert np.allclose([x for _, x in after], [x for _, x in before], rtol=1e-3)
        got = s.get(7).vector
        unit = vec(7) / np.linalg.norm(vec(7))
        assert got is not None and np.abs(got - unit).max() <= np.abs(unit).max() / 127
    with Store.open(tmp_path / "s") as s:  # replayed from the log: still the same code
        assert s.search(q, 5) == after
    from localmem.store import records as rec

    p_fp32 = rec.encode_put(1, "x", None, vec(1), DIM)
    p_int8 = rec.encode_put(1, "x", None, vec(1), DIM, quantized=True)
    assert len(p_fp32) - len(p_int8) == 3 * DIM - 4
    assert rec.put_quantized(p_int8) and not rec.put_quantized(p_fp32)


def test_exiting_with_daemon_threads_inside_native_calls_is_clean(tmp_path):
    """A daemon thread returning from a GIL-free call while the interpreter shuts down used
    to abort the process ("terminate called without an active exception")."""
    import subprocess
    import sys

    code = f"""
import threading, time
from localmem import Store
s = Store.open({str(tmp_path / "s")!r}, dim=4)
def w():
    i = 0
    while True:
        s.put(i, "x"); i += 1
for _ in range(4):
    threading.Thread(target=w, daemon=True).start()
time.sleep(0.3)
"""
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-500:]


def test_metadata_is_stored_deflated_and_reads_back_exactly():
    """Metadata JSON is deflated against a preset dictionary when that is shorter (a third of
    the bytes for a memory's usual keys); items written before, in plain JSON, read the same;
    damage and unknown flags are CorruptFileError, never a crash or a huge allocation."""
    import json
    import struct
    import zlib

    from localmem.errors import CorruptFileError
    from localmem.store import records as rec

    meta = {
        "type": "memory",
        "kind": "fact",
        "session": "d4",
        "when": 1736109257.143,
        "stability": 60.0,
        "model": "all-minilm-l6-v2-int8",
        "tier": "warm",
        "t_last": 1760458414.465,
        "sources": [{"id": 3, "text": "Ana é minha irmã", "source": "api"}],
    }
    plain = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
    p = rec.encode_put(5, "Fiona works as a dentist.", meta, vec(5), DIM, quantized=True)
    head = struct.unpack_from("<qIIIII", p)
    assert head[1] == rec.VEC_INT8 | rec.META_DEFLATE
    assert head[3] <= len(plain) // 2  # deflated to at most half
    it = rec.decode_put(p)
    assert it.meta == meta and it.text == "Fiona works as a dentist."
    assert it.vector is not None and it.vector.shape == (DIM,)
    # A tiny meta that would not shrink stays JSON; no meta at all stays empty.
    small = rec.encode_put(1, "x", {"a": 1}, None, None)
    assert struct.unpack_from("<qIIIII", small)[1] == 0
    assert rec.decode_put(small).meta == {"a": 1}
    assert rec.decode_put(rec.encode_put(1, "x", None, None, None)).meta == {}
    # An item written by an earlier version (plain JSON, flags 0) reads the same.
    old = struct.pack("<qIIIII", 5, 0, 1, len(plain), 0, 0) + b"x" + plain
    assert rec.decode_put(old).meta == meta
    # Damage: the deflated metadata cut short anywhere (the stream never ends), and a sample
    # of bit flips. A flip may still inflate to other valid JSON: raw DEFLATE has no checksum
    # of its own (the log's and the arena's CRC32C catch damage before this reader).
    t0 = 24 + head[2]
    for cut in range(head[3]):
        short = struct.pack("<qIIIII", 5, rec.META_DEFLATE, head[2], cut, 0, 0)
        with pytest.raises(CorruptFileError, match="damaged metadata"):
            rec.decode_put(short + p[24:t0] + p[t0 : t0 + cut])
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(p)
        bad[t0 + int(rng.integers(head[3]))] ^= 1 << int(rng.integers(8))
        try:
            got = rec.decode_put(bytes(bad))
        except CorruptFileError:
            continue
        assert isinstance(got.meta, dict)
    # A deflate bomb (16 MiB + of spaces in a few KB) is refused, not inflated.
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zdict=rec.META_DICT)
    bomb = z.compress(b"{" + b" " * (rec.MAX_DEFLATED_META + 10) + b"}") + z.flush()
    big = struct.pack("<qIIIII", 5, rec.META_DEFLATE, 0, len(bomb), 0, 0) + bomb
    with pytest.raises(CorruptFileError, match="damaged metadata"):
        rec.decode_put(big)
    unknown = struct.pack("<qIIIII", 5, 8, 1, 0, 0, 0) + b"x"
    for read in (rec.decode_put, rec.put_vector):  # the index's replay refuses it too
        with pytest.raises(CorruptFileError, match="newer localmem"):
            read(unknown)


def test_a_store_is_raised_to_the_current_format_before_anything_is_written(tmp_path):
    """A store an earlier version made (manifest format 1) opens and is marked format 2 at
    once, so that the earlier version refuses it cleanly instead of meeting deflated items;
    a manifest from a newer version is refused with the fix."""
    import json

    from localmem import _core
    from localmem.errors import CorruptFileError
    from localmem.store import manifest as mf

    with Store.open(tmp_path / "s", dim=DIM) as s:
        fill(s, range(3))
        s.checkpoint()
    path = tmp_path / "s" / "MANIFEST"
    m = mf.read_manifest(path)
    assert m.format == mf.FORMAT == 2
    # Write it back as format 1, with its checksum, as the earlier version did.
    old = mf.replace(m, format=1)
    body = json.dumps(mf.asdict(old), sort_keys=True, separators=(",", ":"))
    doc = dict(json.loads(body), crc32c=_core.crc32c(body.encode()))
    path.write_text(json.dumps(doc))
    assert mf.read_manifest(path).format == 1
    with Store.open(tmp_path / "s") as s:
        assert mf.read_manifest(path).format == 2
        assert s.get(2).meta == {"n": 2}
    doc = dict(json.loads(body.replace('"format":1', '"format":3')))
    body3 = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    doc["crc32c"] = _core.crc32c(body3.encode())
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match=r"newer localmem.*upgrade"):
        Store.open(tmp_path / "s")
