"""Memory API: remember / recall / forget / get / list / stats, validation, the catalog as a
view of the log, and model mismatch. Channel tests run on the real ONNX model."""

from __future__ import annotations

import sqlite3  # noqa: F401  (the catalog is apsw; sqlite3 only checks the file below)
import time
from datetime import datetime, timezone

import pytest

from localmem import Memory, errors
from localmem.testing import HashEmbedder


@pytest.fixture
def fake(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        yield mem


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """One store on the real embedded model, with purpose-built memories."""
    path = tmp_path_factory.mktemp("real") / "m"
    mem = Memory.open(path, sync="off")
    facts = [
        dict(text="I started taking violin lessons with a teacher downtown", when="2024-02-10"),
        dict(text="Priya works as a nurse at the children's hospital", when="2024-01-05"),
        dict(text="We spent the whole vacation hiking in the Dolomites", when="2021-03-14"),
        dict(text="My favourite food is spicy ramen", when="2023-08-01"),
        dict(text="The car needs new tyres before winter", when="2023-10-20"),
        dict(text="Tom lent me his copy of Dune", when="2022-06-11"),
    ]
    chat = [
        "Anna: Guess what, I finally adopted a cat!",
        "Ben: That's wonderful, what did you name her?",
        "Anna: Her name is Mochi, she is grey and very shy.",
        "Ben: Cute. I'm still thinking about getting a dog.",
    ]
    mem.remember_many(facts)
    mem.remember_many(
        [dict(text=t, session="chat-1", kind="episodic", when="2024-03-01") for t in chat]
    )
    yield mem
    mem.close()


def texts(hits):
    return [h.memory.text for h in hits]


# ---------------------------------------------------------------- channels (real model)


def test_paraphrase_without_shared_words(real):
    hits = real.recall("Which musical instrument am I studying?", k=3)
    assert hits and "violin" in hits[0].memory.text
    assert hits[0].why.get("semantic", 0) > 0 and "keyword" not in hits[0].why


def test_name_question_uses_entity_and_keyword(real):
    hits = real.recall("What is Priya's job?", k=3)
    assert "Priya" in hits[0].memory.text
    assert hits[0].why.get("entity", 0) > 0


def test_date_question_uses_the_time_channel(real):
    hits = real.recall("What did I do in March 2021?", k=3)
    assert "Dolomites" in hits[0].memory.text
    assert hits[0].why.get("time", 0) > 0


def test_relative_time_resolves_against_now(real):
    now = datetime(2024, 2, 24, tzinfo=timezone.utc)
    hits = real.recall("what did I start two weeks ago?", k=2, now=now)
    assert "violin" in hits[0].memory.text and hits[0].why.get("time", 0) > 0


def test_session_context_brings_neighbouring_turns(real):
    hits = real.recall("What is the name of Anna's new pet?", k=5)
    found = texts(hits)
    assert any("Mochi" in t for t in found)
    assert any("adopted a cat" in t for t in found)


def test_speaker_named_in_the_question(real):
    hits = real.recall("What did Ben say he is thinking about?", k=3)
    assert hits[0].memory.text.startswith("Ben:") and "dog" in hits[0].memory.text
    assert hits[0].why.get("speaker", 0) > 0


def test_unrelated_query_returns_nothing(real):
    assert real.recall("How do I fix a segmentation fault in my C++ compiler?", k=5) == []
    assert len(real.recall("How do I fix a segmentation fault?", k=5, floor=False)) == 5


def test_hits_explain_themselves(real):
    h = real.recall("spicy ramen", k=1)[0]
    assert set(h.why) >= {"keyword", "semantic"}
    assert "score" in h.explain()


# ---------------------------------------------------------------- API (fake embedder)


def test_remember_get_list_forget(fake):
    m = fake.remember(
        "Caroline moved to Lisbon in May 2023",
        when="2023-05-20",
        kind="fact",
        tags=["travel"],
        importance=0.7,
        source="api",
        session="s1",
    )
    assert m.id > 0 and m.kind == "fact" and m.tags == ("travel",)
    assert m.when == datetime(2023, 5, 20).astimezone(timezone.utc)
    assert "Caroline" in m.entities and "Lisbon" in m.entities
    assert fake.get(m.id) == m
    assert [x.id for x in fake.list(tag="travel")] == [m.id]
    assert fake.stats()["by_kind"] == {"fact": 1}
    fake.forget(m.id)  # out of every index, restorable until the purge
    assert fake.get(m.id).tier == "forgotten"
    assert len(fake) == 0 and fake.list() == [] and fake.list(tier="forgotten")[0].id == m.id
    assert fake.recall("Caroline Lisbon", floor=False) == []
    assert fake.restore(m.id).tier == "hot"
    assert fake.recall("Caroline Lisbon", k=1, floor=False)[0].memory.id == m.id
    fake.forget(m.id, purge=True)
    with pytest.raises(errors.UnknownIdError):
        fake.get(m.id)
    with pytest.raises(errors.UnknownIdError):
        fake.forget(m.id)
    assert len(fake) == 0


def test_remember_many_keeps_order_and_reports_progress(fake):
    seen = []
    got = fake.remember_many(
        ({"text": f"note number {i}"} for i in range(10)),
        progress=lambda done, total: seen.append(done),
        batch=4,
    )
    assert [m.text for m in got] == [f"note number {i}" for i in range(10)]
    assert len({m.id for m in got}) == 10
    assert seen == [4, 8, 10]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(text=""), "empty"),
        (dict(text="   \n\t"), "empty"),
        (dict(text="x" * 20_000), "at most"),
        (dict(text=7), "must be a str"),
        (dict(text="ok", when="last tuesday-ish"), "ISO 8601"),
        (dict(text="ok", when=float("nan")), "out of range"),
        (dict(text="ok", kind="gossip"), "kind must be"),
        (dict(text="ok", importance=1.5), "importance"),
        (dict(text="ok", tags="travel"), "list of strings"),
        (dict(text="ok", source="web"), "source must be"),
    ],
)
def test_bad_input_is_refused_clearly(fake, kwargs, match):
    with pytest.raises(errors.InvalidArgumentError, match=match):
        fake.remember(**kwargs)
    assert len(fake) == 0


def test_remember_many_names_the_bad_item(fake):
    with pytest.raises(errors.InvalidArgumentError, match="item 1"):
        fake.remember_many([{"text": "fine"}, {"text": ""}])
    with pytest.raises(errors.InvalidArgumentError, match="unknown keys"):
        fake.remember_many([{"text": "fine", "colour": "red"}])
    with pytest.raises(errors.InvalidArgumentError, match="not one dict"):
        fake.remember_many({"text": "one"})


def test_bad_ids_and_queries(fake):
    for bad in (0, -1, "3", 1.5, True, None):
        with pytest.raises(errors.InvalidArgumentError):
            fake.get(bad)
    with pytest.raises(errors.InvalidArgumentError):
        fake.recall("")
    with pytest.raises(errors.InvalidArgumentError):
        fake.recall("ok", k=0)
    assert fake.recall("anything at all") == []  # empty store


def test_closed_memory_refuses_calls(tmp_path):
    mem = Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off")
    mem.close()
    mem.close()  # idempotent
    with pytest.raises(errors.InvalidArgumentError, match="closed"):
        mem.remember("x")


# ---------------------------------------------------------------- the catalog is a view


def test_catalog_is_rebuilt_when_deleted(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        ids = [m.id for m in mem.remember_many([{"text": f"fact {i}"} for i in range(20)])]
    for f in tmp_path.joinpath("m").glob("catalog.sqlite*"):
        f.unlink()
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        assert sorted(m.id for m in mem.list(limit=100)) == ids
        assert mem.recall("fact 7", k=1, floor=False)[0].memory.text == "fact 7"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "old schema"])
def test_damaged_catalog_is_moved_aside_and_rebuilt(tmp_path, damage):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        mem.remember_many([{"text": f"fact {i}"} for i in range(20)])
    db = tmp_path / "m" / "catalog.sqlite"
    for f in tmp_path.joinpath("m").glob("catalog.sqlite-*"):
        f.unlink()
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:1000])
    else:
        import apsw

        c = apsw.Connection(str(db))
        c.execute("UPDATE state SET v=1 WHERE k='schema'")
        c.close()
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        assert len(mem) == 20
        assert mem.recall("fact 7", k=1, floor=False)[0].memory.text == "fact 7"


def test_catalog_rebuilds_from_items_after_a_checkpoint(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        mem.remember_many([{"text": f"fact {i}"} for i in range(5)])
        mem.catalog.set_state("applied_lsn", 0)  # as if the catalog lagged behind
        mem.store.checkpoint()  # ... and the log it needs was dropped
        mem.remember("one more")
        assert len(mem) == 6


def test_second_handle_sees_the_first_ones_writes(tmp_path):
    a = Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off")
    b = Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off")
    try:
        x = a.remember("written by a")
        y = b.remember("written by b")
        assert x.id != y.id
        assert a.get(y.id).text == "written by b"
        assert b.get(x.id).text == "written by a"
        a.forget(y.id, purge=True)
        with pytest.raises(errors.UnknownIdError):
            b.get(y.id)
    finally:
        a.close()
        b.close()


def test_model_mismatch_is_detected_and_reembedding_fixes_it(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(32, "model-a"), sync="off") as mem:
        mem.remember_many([{"text": f"fact {i}"} for i in range(5)])
    with pytest.raises(errors.ModelMismatchError, match="model-a"):
        Memory.open(tmp_path / "m", embedder=HashEmbedder(32, "model-b"), sync="off")
    seen = []
    with Memory.open(
        tmp_path / "m",
        embedder=HashEmbedder(32, "model-b"),
        sync="off",
        reembed=True,
        progress=lambda d, t: seen.append((d, t)),
    ) as mem:
        assert seen[-1] == (5, 5)
        assert {m.model for m in mem.list()} == {"model-b"}
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(32, "model-b"), sync="off") as mem:
        assert len(mem) == 5


def test_automatic_checkpoints_keep_the_log_the_catalog_still_needs(tmp_path, monkeypatch):
    """A checkpoint inside remember_many must not drop records the catalog has not applied
    yet (that forced a full catalog rebuild, quadratic over a big import)."""
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        mem.store._opt["checkpoint_bytes"] = 1 << 16
        rebuilt = []
        monkeypatch.setattr(mem.records, "rebuild_catalog", lambda *a, **k: rebuilt.append(a))
        mem.remember_many(({"text": f"note {i} " + "x" * 200} for i in range(3000)), batch=100)
        assert rebuilt == []
        assert len(mem) == 3000
        assert mem.store.stats()["wal"]["first_lsn"] > 1000  # and the log was cut


def test_checkpoints_and_readers_in_other_threads_do_not_deadlock(tmp_path):
    import threading

    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        mem.store._opt["checkpoint_bytes"] = 1 << 16  # a checkpoint every few writes
        stop = time.monotonic() + 2.0
        errors_seen: list[BaseException] = []

        def writer() -> None:
            i = 0
            try:
                while time.monotonic() < stop:
                    mem.remember_many([{"text": f"note {i} {j} " + "x" * 300} for j in range(20)])
                    i += 1
            except BaseException as e:
                errors_seen.append(e)

        def reader() -> None:
            try:
                while time.monotonic() < stop:
                    mem.recall("note 3", floor=False)
                    mem.list(limit=5)
            except BaseException as e:
                errors_seen.append(e)

        threads = [threading.Thread(target=f) for f in (writer, reader, reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert errors_seen == []


def test_an_item_this_version_cannot_decode_is_left_out_not_fatal(tmp_path, caplog, monkeypatch):
    """A record whose checksum holds but whose content cannot be decoded (say, metadata
    deflated by another build's dictionary) is left out of the catalog with a warning and
    named in stats(); every other memory stays reachable, and a rebuilt catalog does the
    same."""
    import struct
    import zlib

    import numpy as np

    from localmem.errors import CorruptFileError
    from localmem.store import records as rec

    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        ids = [m.id for m in mem.remember_many([{"text": f"fact {i}"} for i in range(5)])]
        bad = ids[2]  # "fact 2"
        good = mem.store.get(bad)
        # Metadata deflated against another dictionary: the record is intact, the JSON is not.
        js = b'{"type":"memory","kind":"note","when":1700000000}'
        z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zdict=b"another dictionary: " + js)
        meta = z.compress(js) + z.flush()
        with pytest.raises(CorruptFileError):  # what this version makes of it
            rec.decode_put(struct.pack("<qIIIII", 1, rec.META_DEFLATE, 0, len(meta), 0, 0) + meta)
        text = b"written elsewhere"
        pad = (-(24 + len(text) + len(meta))) % 4
        vec = np.asarray(good.vector, dtype="<f4").tobytes()
        head = struct.pack(
            "<qIIIII", bad, rec.META_DEFLATE, len(text), len(meta), len(good.vector), 0
        )
        mem.store._write([(rec.PUT, head + text + meta + b"\0" * pad + vec)])  # as raw bytes
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        assert sorted(m.text for m in mem.list()) == ["fact 0", "fact 1", "fact 3", "fact 4"]
        assert [u["id"] for u in mem.stats()["unreadable"]] == [bad]
        assert "cannot be read" in caplog.text
        assert mem.recall("fact 4", k=1, floor=False)[0].memory.text == "fact 4"
        with pytest.raises(CorruptFileError):
            mem.store.get(bad)
        # Export, the way out of a troubled store, takes every other memory.
        import io

        from localmem import portable

        out = io.StringIO()
        assert portable.export_jsonl(mem, out) == 4
        mem.store.checkpoint()  # the log is dropped: a new catalog is rebuilt from the items
    for f in tmp_path.joinpath("m").glob("catalog.sqlite*"):
        f.unlink()
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        assert len(mem) == 4 and [u["id"] for u in mem.stats()["unreadable"]] == [bad]
    # A version that can read it (here: one that knows that dictionary) takes it back in.
    monkeypatch.setattr(rec, "META_DICT", b"another dictionary: " + js)
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        assert mem.stats()["unreadable"] == [] and mem.get(bad).text == "written elsewhere"
    monkeypatch.undo()
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        mem.store._write([(rec.PUT, head + text + meta + b"\0" * pad + vec)])
        mem.store.refresh()
        assert [u["id"] for u in mem.stats()["unreadable"]] == [bad]
        mem.forget(bad, purge=True)  # the one thing to do with it here: delete it
        assert mem.stats()["unreadable"] == [] and len(mem) == 4
        with pytest.raises(errors.UnknownIdError):
            mem.store.get(bad)


def test_upkeep_and_reinforce_pass_over_items_that_stopped_decoding(tmp_path, monkeypatch, caplog):
    """Rows the catalog applied while their items still decoded, whose items this build
    cannot decode (another dictionary): reinforcing, the sweep and consolidation leave those
    items as they are, with a warning, instead of failing the call."""
    from localmem.store import records as rec

    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as mem:
        ids = [m.id for m in mem.remember_many([{"text": f"fact {i}"} for i in range(4)])]
        monkeypatch.setattr(rec, "META_DICT", b"a dictionary these items were not written with")
        assert mem.reinforce(ids) == 0
        assert "cannot be read" in caplog.text
        mem.consolidate(now=time.time() + 400 * 86400)  # everything due for demotion
        assert len(mem.recall("fact 2", k=4, floor=False)) == 4
