"""Consolidation on the real embedding model: near-duplicates merge keeping every source,
a newer contradicting fact supersedes the older one (both kept, linked, ranked)."""

from __future__ import annotations

import pytest

from localmem import Memory
from localmem.embed import OnnxEmbedder
from localmem.text.terms import content_words


@pytest.fixture(scope="module")
def embedder():
    return OnnxEmbedder()


@pytest.fixture
def mem(tmp_path, embedder):
    with Memory.open(tmp_path / "m", embedder=embedder, sync="off") as m:
        yield m


def test_duplicates_merge_and_keep_every_source(mem):
    a = mem.remember("Tom lent me Dune", kind="fact", source="chat", session="s1")
    b = mem.remember("Tom lent me his copy of Dune", kind="fact", source="mcp", importance=0.9)
    other = mem.remember("Tom's sister lives in Oslo", kind="fact")
    out = mem.consolidate()
    assert out["merged"] == 1
    kept = mem.get(a.id)
    assert kept.text == "Tom lent me his copy of Dune"  # the more informative statement
    assert kept.importance == 0.9
    assert {s["id"] for s in kept.sources} == {a.id, b.id}
    assert {s["source"] for s in kept.sources} == {"chat", "mcp"}
    gone = mem.get(b.id)
    assert gone.tier == "forgotten" and gone.merged_into == a.id  # never both deleted
    assert mem.get(other.id).tier == "hot" and mem.get(other.id).merged_into is None
    hits = mem.recall("who lent me Dune?", k=3)
    assert [h.memory.id for h in hits][:1] == [a.id]
    assert b.id not in [h.memory.id for h in hits]
    assert mem.consolidate()["merged"] == 0  # idempotent
    assert mem.restore(b.id).merged_into is None  # undo


def test_a_newer_fact_supersedes_the_one_it_contradicts(mem):
    old = mem.remember("Caroline lives in Lisbon", kind="fact")
    mem.remember("Caroline has a dog named Rex", kind="fact")
    new = mem.remember("Caroline lives in Porto now", kind="fact")
    out = mem.consolidate()
    assert out["superseded"] == 1 and out["merged"] == 0
    assert mem.get(old.id).superseded_by == new.id
    hits = mem.recall("Where does Caroline live?", k=3)
    ids = [h.memory.id for h in hits]
    assert ids.index(new.id) < ids.index(old.id)
    assert hits[ids.index(old.id)].why["superseded_by"] == new.id


def test_different_facts_about_one_person_stay_apart(mem):
    a = mem.remember("Priya works as a nurse", kind="fact")
    b = mem.remember("Priya has two children", kind="fact")
    out = mem.consolidate()
    assert out["merged"] == 0 and out["superseded"] == 0
    assert mem.get(a.id).superseded_by is None and mem.get(b.id).merged_into is None


def test_content_words():
    assert content_words("I work at Google") <= content_words("I work at Google as an engineer")
