"""The re-ranker: its tree scoring against a plain walk of the trees, its model file as
untrusted input, its features, and its place in recall (real store, real ONNX model)."""

from __future__ import annotations

import copy
import json
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localmem import Memory
from localmem.errors import CorruptFileError, InvalidArgumentError
from localmem.recall import features, ranker
from localmem.recall.features import FEATURES
from localmem.recall.ranker import TreeRanker

NF = len(FEATURES)


def random_tree(rng: np.random.Generator, leaves: int) -> dict:
    """A random binary tree in the ranker's layout (nodes in preorder, leaves left to right)."""
    t: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "leaf")}

    def grow(n_leaves: int) -> int:
        if n_leaves == 1:
            t["leaf"].append(float(rng.normal()))
            return ~(len(t["leaf"]) - 1)
        i = len(t["feature"])
        t["feature"].append(int(rng.integers(NF)))
        t["threshold"].append(float(rng.normal()))
        t["left"].append(0)
        t["right"].append(0)
        k = int(rng.integers(1, n_leaves))
        t["left"][i] = grow(k)
        t["right"][i] = grow(n_leaves - k)
        return i

    grow(leaves)
    return t


def walk(doc: dict, x: np.ndarray) -> np.ndarray:
    """The obvious scoring: each row down each tree, one node at a time."""
    out = np.zeros(len(x))
    for t in doc["trees"]:
        for r, row in enumerate(x):
            if not t["feature"]:
                out[r] += t["leaf"][0]
                continue
            node = 0
            while node >= 0:
                f, thr = t["feature"][node], t["threshold"][node]
                node = t["left"][node] if row[f] <= thr else t["right"][node]
            out[r] += t["leaf"][~node]
    return out


def model(rng: np.random.Generator, trees: int = 40, leaves: int = 31) -> dict:
    ts = [random_tree(rng, int(rng.integers(1, leaves + 1))) for _ in range(trees)]
    return {"format": ranker.FORMAT, "features": list(FEATURES), "trees": ts}


def test_scores_equal_a_plain_walk_of_the_trees(rng):
    doc = model(rng)
    x = rng.normal(size=(70, NF))
    for r in range(10):  # rows sitting exactly on thresholds: <= goes left
        t = doc["trees"][r % len(doc["trees"])]
        for f, thr in zip(t["feature"], t["threshold"], strict=True):
            x[r, f] = thr
    r = TreeRanker.from_json(doc, "random")
    assert np.allclose(r.score(x), walk(doc, x), rtol=0, atol=1e-12)
    assert r.score(np.zeros((0, NF))).shape == (0,)


def test_the_shipped_ranker_loads_and_agrees_with_a_plain_walk(rng):
    r = ranker.configured()
    assert r is not None and ranker.configured("off") is None
    doc = json.loads((ranker.resources.files("localmem.recall") / ranker.SHIPPED).read_text())
    x = rng.normal(size=(50, NF)) * 2
    assert np.allclose(r.score(x), walk(doc, x), atol=1e-9)


def test_a_model_for_other_features_is_refused_with_how_to_fix(rng):
    doc = model(rng, trees=2)
    doc["features"] = doc["features"][:-1]
    with pytest.raises(InvalidArgumentError, match="retrain"):
        TreeRanker.from_json(doc, "old")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("trees"),
        lambda d: d.update(format="localmem-ranker/0"),
        lambda d: d.update(trees=[]),
        lambda d: d["trees"][0].update(feature=[NF + 3] * len(d["trees"][0]["feature"])),
        lambda d: d["trees"][0]["left"].__setitem__(0, 0),  # the root as its own child
        lambda d: d["trees"][0]["leaf"].append(1.0),
        lambda d: d["trees"][0]["threshold"].__setitem__(0, float("nan")),
        lambda d: d["trees"][0]["leaf"].reverse(),  # fine: values only
        lambda d: d["trees"][0].update(left=d["trees"][0]["right"]),  # shared subtrees
    ],
)
def test_a_damaged_model_is_refused_or_scores_as_walked(rng, damage):
    doc = model(rng, trees=3, leaves=8)
    for t in doc["trees"]:
        while len(t["leaf"]) < 3:  # every damage needs a node to act on
            t.update(random_tree(rng, 5))
    damage(doc)
    try:
        r = TreeRanker.from_json(doc, "damaged")
    except CorruptFileError:
        return
    x = rng.normal(size=(20, NF))
    assert np.allclose(r.score(x), walk(doc, x), atol=1e-12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_models_load_only_when_they_score_as_walked(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    doc = model(rng, trees=2, leaves=6)
    t = doc["trees"][data.draw(st.integers(0, 1))]
    field = data.draw(st.sampled_from(["feature", "threshold", "left", "right", "leaf"]))
    if t[field]:
        i = data.draw(st.integers(0, len(t[field]) - 1))
        t[field][i] = data.draw(
            st.one_of(st.integers(-40, 40), st.floats(allow_nan=True), st.none(), st.text())
        )
    else:
        t[field].append(data.draw(st.integers(-3, 3)))
    try:
        r = TreeRanker.from_json(copy.deepcopy(doc), "fuzzed")
    except (CorruptFileError, InvalidArgumentError):
        return
    x = rng.normal(size=(8, NF)) * 3
    assert np.allclose(r.score(x), walk(doc, x), atol=1e-12)


def test_a_bad_ranker_file_fails_before_the_store_opens(tmp_path):
    bad = tmp_path / "ranker.json"
    bad.write_text('{"format": "localmem-ranker/1", "trees": "no"}')
    with pytest.raises(CorruptFileError, match="ranker"):
        Memory.open(tmp_path / "store", ranker=bad)
    assert not (tmp_path / "store").exists()


def test_query_types():
    qt = features.query_type
    assert features.QUERY_TYPES[qt("When did Caroline go to the LGBTQ support group?")] == "when"
    assert features.QUERY_TYPES[qt("How long has Nate had his turtles?")] == "how long"
    assert qt("Caroline's hobbies") == len(features.QUERY_TYPES)


CHAT = [
    ("Anna: I went to the shelter on Saturday.", "D1"),
    ("Ben: Oh nice, did you bring someone home?", "D1"),
    ("Anna: Yes! A little grey kitten. We named her Mochi.", "D1"),
    ("Ben: That is adorable. Send pictures!", "D1"),
    ("Ben: My band plays at the Riverside pub next Friday.", "D2"),
    ("Anna: I will be there, I love your covers of old jazz songs.", "D2"),
    ("Ben: We might try a new song by Radiohead too.", "D2"),
]


@pytest.fixture(scope="module")
def chat_store(tmp_path_factory):
    with Memory.open(tmp_path_factory.mktemp("chat") / "s", sync="off") as mem:
        mem.remember_many(
            [{"text": t, "session": s, "when": datetime(2024, 3, 1 + int(s[1:]))} for t, s in CHAT]
        )
        yield mem


def test_features_see_the_turn_before_and_the_session(chat_store):
    seen: list[tuple[list[int], np.ndarray]] = []
    chat_store.retriever.trace = lambda q, ids, x: seen.append((ids, x))
    try:
        chat_store.recall("Did Anna bring an animal home from the shelter?", k=5, floor=False)
    finally:
        chat_store.retriever.trace = None
    ids, x = seen[-1]
    text = {m.id: m.text for m in chat_store.list(limit=100)}
    row = {text[i]: x[r] for r, i in enumerate(ids)}
    mochi = row[CHAT[2][0]]
    col = {name: i for i, name in enumerate(FEATURES)}
    assert mochi[col["prev_is_question"]] == 1.0  # Ben asked just before
    assert mochi[col["prev_base"]] > 0 and mochi[col["has_digit"]] == 0
    assert mochi[col["capitalized"]] >= 1  # Mochi
    assert row[CHAT[1][0]][col["is_question"]] == 1.0
    d1 = [x[r] for r, i in enumerate(ids) if text[i] in {c for c, s in CHAT if s == "D1"}]
    d2 = [x[r] for r, i in enumerate(ids) if text[i] in {c for c, s in CHAT if s == "D2"}]
    assert d1 and d2
    assert d1[0][col["session_rank"]] < d2[0][col["session_rank"]]  # the shelter's session first


def test_recall_re_ranks_its_top_and_says_so(chat_store, tmp_path):
    hits = chat_store.recall("What did Anna name her kitten?", k=3)
    assert "Mochi" in hits[0].memory.text
    assert all("rerank" in h.why for h in hits)
    # Off: the fused order alone, no re-ranking.
    with Memory.open(chat_store.path, ranker="off") as off:
        hits = off.recall("Anna's kitten", k=3, floor=False)
        assert len(hits) == 3 and all("rerank" not in h.why for h in hits)
    mem = Memory(chat_store.records, ranker="off")  # the constructor reads a choice alike
    assert mem.retriever.ranker is None
    assert Memory(chat_store.records).retriever.ranker is ranker.configured()


def test_a_ranker_turns_the_order_it_is_given(chat_store, tmp_path, monkeypatch):
    """A hand-made model that prefers questions: the order follows the model, the scores keep
    the fused scale, and $LOCALMEM_RANKER picks the file."""
    col = FEATURES.index("is_question")
    tree = {"feature": [col], "threshold": [0.5], "left": [-1], "right": [-2], "leaf": [0.0, 5.0]}
    path = tmp_path / "questions-first.json"
    path.write_text(json.dumps({"format": ranker.FORMAT, "features": list(FEATURES),
                                "trees": [tree]}))  # fmt: skip
    monkeypatch.setenv(ranker.RANKER_ENV, str(path))
    with Memory.open(chat_store.path) as mem:
        hits = mem.recall("Anna shelter kitten", k=4, floor=False)
    with Memory.open(chat_store.path, ranker="off") as off:
        fused = [h.score for h in off.recall("Anna shelter kitten", k=4, floor=False)]
    assert hits[0].memory.text.endswith("?") and not fused_first_is_question(chat_store)
    assert sorted((h.score for h in hits), reverse=True) == [h.score for h in hits]
    assert max(h.score for h in hits) == pytest.approx(max(fused))


def fused_first_is_question(mem: Memory) -> bool:
    with Memory.open(mem.path, ranker="off") as off:
        return off.recall("Anna shelter kitten", k=1, floor=False)[0].memory.text.endswith("?")


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_damaged_model_file_is_refused_whole_or_scores_as_walked(tmp_path_factory, data):
    """A ranker file is untrusted input: cut, with bytes changed, values of the wrong JSON
    type anywhere, nested deep — it loads and scores exactly as its trees say, or it is
    refused with CorruptFileError (or InvalidArgumentError when what is left is a valid
    model for other features). Never another exception."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    doc = model(rng, trees=2, leaves=5)
    how = data.draw(st.sampled_from(["bytes", "cut", "type", "deep"]))
    raw = json.dumps(doc).encode()
    if how == "bytes":
        for _ in range(data.draw(st.integers(1, 5))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1 :]
    elif how == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "deep":
        raw = b"[" * 100_000 + b"]" * 100_000
    else:
        junk = data.draw(st.sampled_from([True, None, "", {}, [], "x", 1e308, -1, [1, 2]]))
        t = doc["trees"][data.draw(st.integers(0, 1))]
        where = data.draw(st.sampled_from(["tree", "field", "item", "top"]))
        if where == "tree":
            doc["trees"][0] = junk
        elif where == "field":
            t[data.draw(st.sampled_from(list(t)))] = junk
        elif where == "item":
            f = data.draw(st.sampled_from([k for k in t if t[k]]))
            t[f][data.draw(st.integers(0, len(t[f]) - 1))] = junk
        else:
            doc[data.draw(st.sampled_from(["format", "features", "trees"]))] = junk
        raw = json.dumps(doc).encode()
    path = tmp_path_factory.mktemp("rk") / "ranker.json"
    path.write_bytes(raw)
    try:
        r = TreeRanker.load(path)
    except (CorruptFileError, InvalidArgumentError):
        return
    x = rng.normal(size=(6, NF))
    assert np.allclose(r.score(x), walk(json.loads(raw), x), atol=1e-9)


def test_a_lightgbm_dump_converts_to_the_same_trees():
    """``from_lightgbm`` on a hand-written dump in LightGBM's layout (one split tree, one
    leaf-only tree): the scores are the trees' sums."""
    leaf = {"leaf_index": 0, "leaf_value": 0.25}
    split = {
        "split_feature": 2, "threshold": 0.5, "decision_type": "<=", "missing_type": "None",
        "left_child": {"leaf_value": -1.0},
        "right_child": {"split_feature": 0, "threshold": 3.0, "decision_type": "<=",
                        "missing_type": "None", "left_child": {"leaf_value": 2.0},
                        "right_child": {"leaf_value": 5.0}},
    }  # fmt: skip
    dump = {"tree_info": [{"tree_structure": split}, {"tree_structure": leaf}]}
    r = TreeRanker.from_json(ranker.from_lightgbm(dump, list(FEATURES)), "dump")
    x = np.zeros((3, NF))
    x[1, 2] = 1.0
    x[2, 2], x[2, 0] = 1.0, 4.0
    assert r.score(x).tolist() == [-0.75, 2.25, 5.25]
    assert r.score(np.full((1, NF), np.nan)).tolist() == [-0.75]  # NaN counts as 0
    split["missing_type"] = "NaN"
    with pytest.raises(ValueError, match="missing"):
        ranker.from_lightgbm(dump, list(FEATURES))


def test_neighbours_of_many_ids_in_one_statement_agree_with_one_at_a_time(tmp_path):
    with Memory.open(tmp_path / "s", sync="off") as mem:
        ms = mem.remember_many(
            [{"text": f"turn {i} of session {i % 3}", "session": f"S{i % 3}"} for i in range(700)]
        )
        mem.forget(ms[9].id)  # a forgotten turn is nobody's neighbour
        cat = mem.catalog
        wanted = [(m.id, m.session) for m in ms if m.id != ms[9].id]
        many = cat.session_neighbours_many(wanted, 2)
        assert len(many) == len(wanted) > 400  # past one statement's 200 pairs
        for i, s in wanted:
            assert sorted(many[i]) == sorted(cat.session_neighbours(i, s, 2))
            assert ms[9].id not in many[i]
        assert cat.session_neighbours_many([(ms[0].id, "no such session")], 2) == {ms[0].id: []}


FACTS = ["My sister Ana lives in Lisbon.", "I am allergic to peanuts.", "My dog is called Rex.",
         "The quarterly report is due on Friday.", "I started learning the violin in March.",
         "My manager is Priya Raman."]  # fmt: skip
ASKED = ["What am I allergic to?", "Which foods should I avoid?", "What is my pet called?",
         "When is the report due?", "Who is my boss?", "What instrument do I play?",
         "Where does my sister live?"]  # fmt: skip


def test_facts_told_outside_a_conversation_keep_their_fused_order(tmp_path):
    """The ranker learned from conversations; on facts with no session it preferred names
    and long texts to the meaning ("Which foods should I avoid?" -> the manager, "What
    instrument do I play?" -> the sister). Such memories keep the fused order."""
    with Memory.open(tmp_path / "s", sync="off") as mem:
        mem.remember_many([{"text": t} for t in FACTS])
    with Memory.open(tmp_path / "s") as on, Memory.open(tmp_path / "s", ranker="off") as off:
        for q in ASKED:
            got = [h.memory.id for h in on.recall(q, k=6, floor=False)]
            assert got == [h.memory.id for h in off.recall(q, k=6, floor=False)], q
        assert "peanuts" in on.recall("Which foods should I avoid?", k=1)[0].memory.text
        assert "violin" in on.recall("What instrument do I play?", k=1)[0].memory.text
