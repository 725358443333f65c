"""Tiers on a virtual clock: demotion by retention, the cold tier's codes, forgetting with a
grace period and restore (across a restart), reinforcement, promotion, pinning."""

from __future__ import annotations

import time

import pytest

from localmem import Memory, errors
from localmem.forgetting import DAY
from localmem.testing import HashEmbedder


def open_mem(path):
    return Memory.open(path, embedder=HashEmbedder(), sync="off")


@pytest.fixture
def mem(tmp_path):
    with open_mem(tmp_path / "m") as m:
        yield m


def seed(mem):
    chat = mem.remember_many(
        [{"text": f"chat turn {i} about the weather {i}", "kind": "episodic"} for i in range(20)]
    )
    fact = mem.remember("Priya is allergic to peanuts", kind="fact", importance=0.9)
    pinned = mem.remember("the wifi password is hunter2", kind="episodic", pinned=True)
    return chat, fact, pinned


def test_faded_memories_move_down_the_tiers_and_shrink(mem):
    chat, fact, pinned = seed(mem)
    t0 = time.time()
    arena_before = sum(len(mem.store.get(m.id).vector.tobytes()) for m in chat)
    assert mem.consolidate(now=t0 + 3 * DAY)["warm"] == 20
    assert {mem.get(m.id).tier for m in chat} == {"warm"}
    warm_bytes = sum(len(mem.store.get(m.id).vector.astype("int8").tobytes()) for m in chat)
    assert warm_bytes * 4 == arena_before
    assert mem.consolidate(now=t0 + 7 * DAY)["cold"] == 20
    c = mem.get(chat[3].id)
    assert c.tier == "cold" and mem.store.get(c.id).vector is None
    # Cold memories are still found: by keyword and by their binary code.
    hits = mem.recall("chat turn 3 about the weather 3", k=1, floor=False, now=t0 + 7 * DAY)
    assert hits[0].memory.id == chat[3].id and hits[0].retention < 0.15
    assert mem.consolidate(now=t0 + 13 * DAY)["forgotten"] == 19  # the cold hit came back
    assert mem.get(fact.id).tier == "hot" and mem.get(pinned.id).tier == "hot"
    assert len(mem) == 3  # the fact, the pinned turn and the one recalled
    assert mem.consolidate(now=t0 + 50 * DAY)["purged"] == 19
    with pytest.raises(errors.UnknownIdError):
        mem.get(chat[0].id)
    assert mem.get(pinned.id).tier == "hot"  # pinned memories never fade


def test_restore_undoes_a_forget_across_a_restart(tmp_path):
    with open_mem(tmp_path / "m") as mem:
        m = mem.remember("the spare key is under the blue pot")
        mem.forget(m.id)
        assert mem.recall("spare key blue pot", floor=False) == []
    with open_mem(tmp_path / "m") as mem:
        assert mem.get(m.id).tier == "forgotten"
        assert mem.restore(m.id).tier == "hot"
    with open_mem(tmp_path / "m") as mem:
        assert mem.recall("spare key blue pot", k=1, floor=False)[0].memory.id == m.id


def _index_entries(mem, id):
    """Where memory ``id`` appears in the catalog: its row's slim fields and each index."""
    db = mem.catalog._db
    row = db.execute(
        "SELECT text, speaker, entities, model FROM memories WHERE id=?", (id,)
    ).fetchone()
    fts = db.execute("SELECT count(*) FROM memories_fts WHERE rowid=?", (id,)).fetchone()[0]
    names = db.execute("SELECT count(*) FROM entities WHERE id=?", (id,)).fetchone()[0]
    cold = 0  # the cold tier's table exists once a first code is written
    if db.execute("SELECT 1 FROM sqlite_schema WHERE name='cold_codes'").fetchone():
        cold = db.execute("SELECT count(*) FROM cold_codes WHERE id=?", (id,)).fetchone()[0]
    return row, (fts, names, cold)


def test_a_forgotten_memory_is_in_no_index_and_restore_derives_them_again(tmp_path):
    text = "Farid: Priya moved to Lisbon last spring"
    t0 = time.time()
    with open_mem(tmp_path / "m") as mem:
        m = mem.remember(text, kind="episodic", session="s1")
        other = mem.remember("Priya likes the tram in Lisbon", kind="episodic", session="s1")
        mem.consolidate(now=t0 + 7 * DAY)  # both cold: a code in the sqlite-vec table
        assert mem.get(m.id).tier == "cold" and _index_entries(mem, m.id)[1] == (1, 3, 1)
        mem.forget(m.id)
        row, entries = _index_entries(mem, m.id)
        assert row == (None, None, "[]", None) and entries == (0, 0, 0)
        assert "model" not in mem.store.get(m.id).meta  # no vector left to name a model of
        # Everything about it is still there to read (from the store's item) ...
        got = mem.get(m.id)
        assert got.tier == "forgotten" and got.text == text and "Priya" in got.entities
        assert [x.text for x in mem.list(tier="forgotten")] == [text]
        assert mem.stats()["by_tier"]["forgotten"] == 1 and len(mem) == 1
        # ... but no channel finds it: keyword, entity, time, session context.
        hits = mem.recall("where did Priya move, Lisbon?", k=5, floor=False, now=t0 + 7 * DAY)
        assert m.id not in {h.memory.id for h in hits} and other.id in {h.memory.id for h in hits}
    with open_mem(tmp_path / "m") as mem:  # restore after a restart re-derives every index
        assert mem.restore(m.id).text == text
        row, entries = _index_entries(mem, m.id)
        assert row[0] == text and row[1] == "Farid" and "Priya" in row[2]
        assert entries == (1, 3, 0)  # hot again: text and entities, no cold code
        assert row[3] == mem.embedder.model_id and mem.store.get(m.id).vector is not None
        hit = mem.recall("moved to Lisbon", k=1, floor=False)[0]
        assert hit.memory.id == m.id and "keyword" in hit.why


def test_an_old_catalog_is_rebuilt_without_forgotten_memories_in_its_indexes(tmp_path):
    with open_mem(tmp_path / "m") as mem:
        m = mem.remember("Priya moved to Lisbon last spring")
        mem.forget(m.id)
        mem.store.checkpoint()  # the log no longer reaches back: rebuilt from the items
        db = mem.catalog._db  # what schema 5 had: a forgotten row in full, an index by id
        db.execute("UPDATE memories SET text='Priya moved to Lisbon last spring'")
        db.execute("CREATE INDEX entities_id ON entities(id)")
        db.execute("UPDATE state SET v=5 WHERE k='schema'")
    with open_mem(tmp_path / "m") as mem:
        assert _index_entries(mem, m.id) == ((None, None, "[]", None), (0, 0, 0))
        db = mem.catalog._db
        assert db.execute("SELECT 1 FROM sqlite_schema WHERE name='entities_id'").fetchone() is None
        assert mem.get(m.id).text == "Priya moved to Lisbon last spring"
        assert mem.restore(m.id).tier == "hot"
        assert mem.recall("Lisbon", k=1, floor=False)[0].memory.id == m.id


def test_reinforcement_grows_stability_and_promotes(mem):
    chat, _, _ = seed(mem)
    t0 = time.time()
    mem.consolidate(now=t0 + 3 * DAY)
    target = chat[5]
    before = mem.get(target.id)
    assert before.tier == "warm"
    hits = mem.recall("chat turn 5 about the weather 5", k=1, reinforce=True, now=t0 + 3 * DAY)
    assert hits[0].memory.id == target.id
    after = mem.get(target.id)
    assert after.tier == "hot" and after.recalls == 1
    assert after.stability > before.stability * 1.5
    assert after.retention(t0 + 3 * DAY) == pytest.approx(1.0)
    assert mem.store.get(target.id).vector is not None


def test_a_cold_hit_is_promoted(mem):
    chat, _, _ = seed(mem)
    t0 = time.time()
    mem.consolidate(now=t0 + 7 * DAY)
    assert mem.get(chat[2].id).tier == "cold"
    mem.recall("chat turn 2 about the weather 2", k=1, floor=False, now=t0 + 7 * DAY)
    assert mem.get(chat[2].id).tier == "warm"


def test_retention_weighs_ranking(mem):
    old = mem.remember("we talked about sailing boats", kind="episodic")
    t0 = time.time()
    new = mem.remember("we talked about sailing boats", kind="fact", importance=1.0)
    hits = mem.recall("sailing boats", k=2, floor=False, now=t0 + 4 * DAY)
    assert [h.memory.id for h in hits] == [new.id, old.id]
    assert hits[0].retention > hits[1].retention


def test_the_sweep_is_bounded_and_resumes(mem):
    chat, _, _ = seed(mem)
    t0 = time.time()
    first = mem.consolidate(now=t0 + 3 * DAY, limit=8)
    assert first["scanned"] == 8 and first["warm"] == 8
    while True:
        step = mem.consolidate(now=t0 + 3 * DAY, limit=8)
        if step["scanned"] < 8:
            break
    assert {mem.get(m.id).tier for m in chat} == {"warm"}
    with pytest.raises(errors.InvalidArgumentError):
        mem.consolidate(limit=0)


def test_upkeep_runs_by_itself_on_open_and_after_calls(tmp_path, monkeypatch):
    with open_mem(tmp_path / "m") as m:
        chat, _, _ = seed(m)
    later = time.time() + 8 * DAY
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off", clock=lambda: later) as m:
        # the sweep on open demoted what faded meanwhile
        assert {m.get(c.id).tier for c in chat} == {"cold"}
        m.remember("Tom lent me Dune", kind="fact")
        m.remember("Tom lent me Dune.", kind="fact")
        monkeypatch.setattr(Memory, "UPKEEP_INTERVAL", 0.0)
        m.recall("anything", floor=False)  # ... and every UPKEEP_INTERVAL after a call
        assert len(m.list(kind="fact")) == 2  # the duplicate folded into the first


def test_forgetting_off_keeps_everything_hot(tmp_path):
    with open_mem(tmp_path / "m") as m:
        chat, _, _ = seed(m)
    later = time.time() + 30 * DAY
    with Memory.open(
        tmp_path / "m", embedder=HashEmbedder(), sync="off", clock=lambda: later, forgetting=False
    ) as m:
        m.remember("one more", kind="episodic")
        assert {m.get(c.id).tier for c in chat} == {"hot"}
        assert m.get(chat[0].id).retention(later) < 0.01  # faded, but nothing moved


def test_filters_reach_every_channel_and_tiers(mem):
    _, fact, _ = seed(mem)
    mem.remember_many([{"text": f"another fact number {i}", "kind": "fact"} for i in range(150)])
    t0 = time.time()
    mem.consolidate(now=t0 + 7 * DAY)  # the chat goes cold; facts stay hot
    hits = mem.recall("chat turn 4 about the weather", k=3, kind="episodic", floor=False,
                      now=t0 + 7 * DAY)  # fmt: skip
    assert hits and all(h.memory.kind == "episodic" for h in hits)
    assert mem.recall("allergic to peanuts", k=1, kind="fact", floor=False)[0].memory.id == fact.id


def test_reembedding_keeps_each_tier_and_forgotten_stay_out(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(model_id="a"), sync="off") as m:
        gone = m.remember("the old door code is 4711")
        m.forget(gone.id)
        chat = m.remember("we talked about sailing boats", kind="episodic")
        m.consolidate(now=time.time() + 7 * DAY)
        assert m.get(chat.id).tier == "cold"
    for f in (tmp_path / "m").glob("catalog.sqlite*"):
        f.unlink()  # a lost catalog must not hide which model embedded the store
    with pytest.raises(errors.ModelMismatchError):
        Memory.open(tmp_path / "m", embedder=HashEmbedder(model_id="b"), sync="off")
    with Memory.open(
        tmp_path / "m", embedder=HashEmbedder(model_id="b"), sync="off", reembed=True
    ) as m:
        assert m.store.get(gone.id).vector is None and m.get(gone.id).tier == "forgotten"
        assert m.store.get(chat.id).vector is None and "code" in m.store.get(chat.id).meta
        assert all(h.memory.id != gone.id for h in m.recall("door code", floor=False))


def test_compact_gives_back_what_forgetting_freed_and_keeps_every_memory(tmp_path):
    mem = open_mem(tmp_path / "m")
    t0 = time.time()
    chat = mem.remember_many(
        [
            {"text": f"chit-chat {i} about lunch and the bus {i}", "kind": "episodic"}
            for i in range(400)
        ]
    )
    keep = mem.remember("Priya is allergic to peanuts", kind="fact", pinned=True)
    mem.consolidate(now=t0 + 50 * DAY)  # forgotten: 400 turns
    mem.consolidate(now=t0 + 90 * DAY)  # and purged after the grace period
    root = mem.path
    arena = lambda: sum(f.stat().st_size for f in (root / "arena").iterdir())  # noqa: E731
    before_arena, before_catalog = arena(), mem.catalog.file_bytes()
    out = mem.compact()
    assert out["compacted"] and out["arena_bytes"] < before_arena / 10
    assert arena() < before_arena / 10
    assert out["catalog"]["after"] < before_catalog / 2 and mem.store.stats()["wal"]["bytes"] <= 64
    mem.close()
    with open_mem(root) as mem:  # nothing lost, and the store reopens from the compacted files
        assert len(mem.store) == 1 and mem.get(keep.id).text == "Priya is allergic to peanuts"
        assert mem.recall("who is allergic to peanuts", k=1)[0].memory.id == keep.id
        assert all(m.id not in mem.store for m in chat)


def test_pin_keeps_a_memory_hot_and_unpin_lets_it_fade(mem):
    t0 = time.time()
    m = mem.remember("the boiler code is 4471", kind="episodic")
    mem.consolidate(now=t0 + 5 * DAY)
    assert mem.get(m.id).tier != "hot"
    p = mem.pin(m.id)
    assert p.pinned and p.tier == "hot"
    mem.consolidate(now=t0 + 400 * DAY)
    assert mem.get(m.id).tier == "hot"
    assert not mem.pin(m.id, False).pinned
    mem.consolidate(now=time.time() + 60 * DAY)
    assert mem.get(m.id).tier != "hot"
    mem.forget(m.id)
    with pytest.raises(errors.InvalidArgumentError, match="restore"):
        mem.pin(m.id)
    with pytest.raises(errors.UnknownIdError):
        mem.pin(999_999)
