"""Issue 26, the edges a review found: what fades stays on its device, a process that had the
store open before it joined, a field set back to none, segments under the wrong name, a
damaged state file, set-ups cut by a crash, and a local change made while an import runs."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from localmem import Memory
from localmem.store import syncfolder as sf
from localmem.sync import setup
from localmem.testing import HashEmbedder


def _mem(path: Path, **kw) -> Memory:
    kw.setdefault("embedder", HashEmbedder(384))
    return Memory.open(path, forgetting=False, **kw)


def _pair(tmp_path: Path) -> tuple[Memory, Memory]:
    a, b = _mem(tmp_path / "a"), _mem(tmp_path / "b")
    b.sync_join(tmp_path / "folder", a.sync_init(tmp_path / "folder"))
    return a, b


def test_what_fades_and_is_purged_on_one_device_lives_on_the_others(tmp_path):
    a, b = _pair(tmp_path)
    with a, b:
        m = a.remember("the plumber's number is 555-0100", importance=0.1)
        a.sync()
        b.sync()
        a.consolidate(now=time.time() + 400 * 86400)  # faded on a
        a.consolidate(now=time.time() + 800 * 86400)  # and purged there, past the grace
        assert m.id not in a.store
        a.sync()
        b.sync()
        assert b.get(m.id).tier == "hot"  # b keeps it: it faded on a only
        b.reinforce([m.id])
        b.sync()
        a.sync()
        assert a.get(m.id).text == m.text  # used on b: back on a


def test_a_faded_memory_used_on_another_device_comes_back(tmp_path):
    a, b = _pair(tmp_path)
    with a, b:
        m = a.remember("the wifi password is on the fridge", importance=0.1)
        a.sync()
        b.sync()
        a.consolidate(now=time.time() + 400 * 86400)
        assert a.get(m.id).tier == "forgotten"
        b.reinforce([m.id], now=time.time() + 1)
        b.sync()
        a.sync()
        assert a.get(m.id).tier == "hot"


def test_a_process_that_had_the_store_open_before_the_join_writes_as_a_device(tmp_path):
    with _mem(tmp_path / "a") as a:
        code = a.sync_init(tmp_path / "folder")
        first = a.remember("a's own memory")
    early = _mem(tmp_path / "b")  # the MCP server, say, open all along
    with _mem(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", code)
        span = b.records.id_span
    later = early.remember("written by the process opened before the join")
    assert span is not None and span[0] <= later.id < span[1] and later.id != first.id
    early.sync()
    early.close()
    with _mem(tmp_path / "a") as a:
        a.sync()
        want = {"a's own memory", "written by the process opened before the join"}
        assert {m.text for m in a.list()} == want


def test_a_field_set_back_to_none_on_one_device_is_none_on_the_others(tmp_path):
    a, b = _pair(tmp_path)
    with a, b:
        keep = a.remember("Ana lives in Porto")
        dup = a.remember("Ana lives in Porto now")
        a.records.rewrite({dup.id: ("forgotten", {"merged_into": keep.id})}, time.time())
        a.sync()
        b.sync()
        assert b.get(dup.id).merged_into == keep.id
        b.restore(dup.id)  # merged_into goes back to none
        b.sync()
        a.sync()
        got = a.get(dup.id)
        assert got.merged_into is None and got.tier == "hot"


def test_a_segment_under_another_devices_name_is_not_taken(tmp_path):
    a, b = _pair(tmp_path)
    with a, b:
        a.remember("from a")
        a.sync()
        dev_a, dev_b = a.sync_status()["device"], b.sync_status()["device"]
        folder = tmp_path / "folder"
        nxt = max(sf.segments(folder, dev_b)) + 1
        shutil.copy(sf.segment_path(folder, dev_a, max(sf.segments(folder, dev_a))),
                    sf.segment_path(folder, dev_b, nxt))  # fmt: skip
        with _mem(tmp_path / "c") as c:
            out = c.sync_join(folder, a.sync_code())
            assert "another device" in out["waiting"][dev_b]
            assert [m.text for m in c.list()] == ["from a"]


def test_a_damaged_state_file_leaves_the_store_working_and_can_be_joined_again(tmp_path, caplog):
    a, b = _pair(tmp_path)
    a.close()
    with b:
        b.remember("kept")
    (tmp_path / "b" / sf.STATE_FILE).write_bytes(b'{"format": 1, "device": 7}')
    with _mem(tmp_path / "b") as b:  # opens; sync is off
        assert [m.text for m in b.list()] == ["kept"]
        assert "cannot be read" in b.sync_status()["error"]
        caplog.clear()
        for n in range(3):
            b.remember(f"still writes {n}")
        said = [r for r in caplog.records if "cannot be read" in r.getMessage()]
        assert len(said) <= 1  # tried once for this version of the file, not per write
        with _mem(tmp_path / "a") as a:
            b.sync_join(tmp_path / "folder", a.sync_code())
            assert b.sync_status()["devices"]
            a.sync()
            assert {m.text for m in a.list()} == {"kept", *(f"still writes {n}" for n in range(3))}
    assert list((tmp_path / "b").glob("SYNC.corrupt-*"))


def test_an_init_cut_before_its_marker_and_a_join_cut_mid_renumbering_finish(tmp_path, monkeypatch):
    with _mem(tmp_path / "a") as a:
        a.remember("on a")
        code = a.sync_init(tmp_path / "folder")

    # init: the state written, the marker not (a crash between): the next step writes it
    def cut(*args):
        raise KeyboardInterrupt("killed")

    with _mem(tmp_path / "i") as i:
        i.remember("on i")
        with monkeypatch.context() as mp:
            mp.setattr(setup.sf, "write_marker", cut)
            with pytest.raises(KeyboardInterrupt):
                i.sync_init(tmp_path / "other")
    with _mem(tmp_path / "i") as i:
        assert i.sync()["exported"] == 1 and (tmp_path / "other" / sf.MARKER).exists()
        with _mem(tmp_path / "j") as j:
            j.sync_join(tmp_path / "other", i.sync_code())
            assert [m.text for m in j.list()] == ["on i"]
    # join: killed after 3 of the memories it renumbers were moved
    with _mem(tmp_path / "b") as b:
        b.remember_many([{"text": f"on b {n}"} for n in range(10)])
        calls = []

        def crash(id):
            calls.append(id)
            if len(calls) > 3:
                raise KeyboardInterrupt("killed")
            return real(id)

        real = b.records.drop_locally
        monkeypatch.setattr(b.records, "drop_locally", crash)
        with pytest.raises(KeyboardInterrupt):
            b.sync_join(tmp_path / "folder", code)
    with _mem(tmp_path / "b") as b:
        b.sync()
        texts = [m.text for m in b.list(limit=100)]
        assert sorted(texts) == sorted(["on a", *(f"on b {n}" for n in range(10))])
        lo, hi = b.records.id_span
        assert all(lo <= m.id < hi for m in b.list(limit=100) if m.text != "on a")
    with _mem(tmp_path / "a") as a:
        a.sync()
        assert len(a.list(limit=100)) == 11


def test_a_change_made_here_while_an_import_embeds_is_kept(tmp_path):
    """b's vectors are another model's than a's: b embeds what it imports (slowly here),
    and the person pins the same memory meanwhile."""
    slow = HashEmbedder(384, model_id="other-model")
    started = threading.Event()
    real = slow.embed

    def embed(texts, progress=None):
        started.set()
        time.sleep(0.5)
        return real(texts)

    slow.embed = embed  # type: ignore[method-assign]
    with _mem(tmp_path / "a") as a, _mem(tmp_path / "b", embedder=slow) as b:
        b.sync_join(tmp_path / "folder", a.sync_init(tmp_path / "folder"))
        m = a.remember("the meeting is on Thursday")
        a.sync()
        b.sync()
        a.update(m.id, text="the meeting moved to Friday")
        a.sync()
        started.clear()
        t = threading.Thread(target=b.sync)
        t.start()
        assert started.wait(10)
        b.pin(m.id)  # while the import embeds the new text
        t.join()
        got = b.get(m.id)
        assert got.text == "the meeting moved to Friday" and got.pinned
        b.sync()
        a.sync()
        assert a.get(m.id).pinned


def test_the_state_file_reader_refuses_damage_with_one_error():
    """Fuzz: a damaged ``SYNC`` reads as a whole valid state or is CorruptFileError,
    never another exception."""
    import json
    import random

    from localmem.errors import CorruptFileError
    from localmem.sync.state import SyncState

    good = SyncState(device="ab" * 16, slot=42, folder="/f", key="01" * 32, seq=3,
                     seen={"cd" * 16: 2}, tombstones=[5, 9],
                     renumber={"3": 42_000_000_001})  # fmt: skip
    raw = good.to_bytes()
    assert SyncState.from_bytes(raw, Path("SYNC")) == good
    rng = random.Random(26)
    refused = 0
    doc = json.loads(raw)
    for trial in range(3000):
        if trial % 3 == 0:  # well-formed JSON, a wrong value
            bad = dict(doc)
            k = rng.choice(sorted(bad))
            bad[k] = rng.choice([None, -1, "x", [], {}, 1.5, True, 2**70])
            data = json.dumps(bad).encode()
        else:
            data = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(len(data) + 1)] if trial % 3 == 1 else data)
        try:
            SyncState.from_bytes(data, Path("SYNC"))
        except CorruptFileError:
            refused += 1
    assert refused > 1500
