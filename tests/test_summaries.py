"""Session summaries: an ended conversation gets one summary from the chat model that names
every turn; what the model invents is dropped; each session once, even after the catalog is
rebuilt; the Assistant replaces its conversation's earlier summary; the CLI reports. A fake
engine drives the rules; the last tests run the embedded GGUF model and the real embedder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from localmem import Memory
from localmem.assistant import Assistant
from localmem.cli import main
from localmem.errors import InvalidArgumentError
from localmem.lifecycle import summaries
from localmem.testing import EchoEngine, HashEmbedder

T0 = 1_760_000_000.0
HOUR = 3600.0
TURNS = [
    ("user", "My sister is called Ana and she lives in Porto."),
    ("assistant", "That sounds lovely! Do you visit her often?"),
    ("user", "Yes, every summer. I am allergic to nuts, so I bring my own food."),
    ("assistant", "Good idea to be careful."),
    ("user", "I started learning the cello last month."),
    ("assistant", "How exciting! Music is a great hobby."),
]


class ScriptedEngine(EchoEngine):
    """Replies with ``reply`` whatever it is asked; records the prompts."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def generate(self, messages: Sequence[dict[str, str]], **kw: Any) -> Iterator[str]:
        from localmem.llm.engine import GenerationStats

        self.prompts.append([dict(m) for m in messages])
        self.last_stats = GenerationStats(generated_tokens=1, stop_reason="stop")
        return iter([self.reply])


def conversation(mem: Memory, session: str, start: float, turns=TURNS) -> list[int]:
    items = [
        {"text": t, "kind": "episodic", "source": "chat", "session": session, "tags": [who],
         "when": start + 60 * i}
        for i, (who, t) in enumerate(turns)
    ]  # fmt: skip
    return [m.id for m in mem.remember_many(items)]


@pytest.fixture
def clock():
    return [T0]


@pytest.fixture
def mem(tmp_path, clock):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), clock=lambda: clock[0]) as m:
        yield m


DISTRACTORS = [
    "The train to Madrid leaves at nine.", "Bruno fixed the kitchen sink on Tuesday.",
    "The quarterly report is due in March.", "Our team won the football match 3-1.",
    "The library closes at six on Saturdays.", "Paula bought a new bicycle.",
    "The dentist appointment moved to Friday.", "Rain is expected all weekend.",
]  # fmt: skip
SUMMARY = (
    "The user's sister Ana lives in Porto. The user owns a purple spaceship on Mars. "
    "They are allergic to nuts and started learning the cello."
)


def test_an_ended_conversation_gets_one_summary_naming_its_turns(mem, clock):
    ids = conversation(mem, "s1", T0)
    conversation(mem, "short", T0, TURNS[:2])  # too few turns to summarize
    llm = ScriptedEngine(SUMMARY)
    clock[0] = T0 + 2 * HOUR  # not ended yet: six hours without a turn end a conversation
    assert mem.consolidate(llm=llm)["summarized"] == 0 and not llm.prompts
    clock[0] = T0 + 7 * HOUR
    assert [s for s, _ in summaries.pending(mem.records)] == ["s1"]
    assert mem.consolidate(llm=llm)["summarized"] == 1
    # The prompt holds what the user said, and not the assistant's side.
    (prompt,) = llm.prompts
    assert all(t in prompt[-1]["content"] for who, t in TURNS if who == "user")
    assert not any(t in prompt[-1]["content"] for who, t in TURNS if who == "assistant")
    (s,) = mem.list(kind="fact")
    # The invented sentence is dropped; what the conversation says stays.
    assert s.text == (
        "The user's sister Ana lives in Porto. "
        "They are allergic to nuts and started learning the cello."
    )
    assert s.tags == ("summary",) and s.key == "summary:s1" and s.session == "s1"
    assert [x["id"] for x in s.sources] == ids
    assert s.when.timestamp() == pytest.approx(T0 + 60 * 5)
    # Once: the store says which conversations have their summary (no cursor to lose).
    assert summaries.pending(mem.records) == [] and mem.consolidate(llm=llm)["summarized"] == 0
    assert len(llm.prompts) == 1
    # Recall finds it like any memory.
    assert any(h.memory.id == s.id for h in mem.recall("Ana lives in Porto", k=5, floor=False))


def test_a_summary_the_conversation_does_not_support_is_not_stored(mem, clock):
    conversation(mem, "s1", T0)
    clock[0] = T0 + 7 * HOUR
    llm = ScriptedEngine("User: My friend Max lives in New York. How about you?")
    assert mem.consolidate(llm=llm)["summarized"] == 0
    assert mem.list(kind="fact") == [] and len(llm.prompts) == 1
    # ... and the session is not asked about again until it goes on.
    assert summaries.pending(mem.records) == [] and mem.consolidate(llm=llm)["summarized"] == 0
    assert len(llm.prompts) == 1
    conversation(mem, "s1", T0 + 8 * HOUR, TURNS[:2])
    clock[0] = T0 + 15 * HOUR
    assert [s for s, _ in summaries.pending(mem.records)] == ["s1"]


def test_a_conversation_that_goes_on_and_an_import_of_old_ones_get_summaries(mem, clock):
    llm = ScriptedEngine("The user's sister Ana lives in Porto.")
    conversation(mem, "s1", T0)
    clock[0] = T0 + 7 * HOUR
    assert mem.consolidate(llm=llm)["summarized"] == 1
    (first,) = mem.list(kind="fact")
    # The conversation goes on a day later and ends again: a new summary replaces the first.
    conversation(mem, "s1", T0 + 24 * HOUR, TURNS[4:])
    clock[0] = T0 + 31 * HOUR
    llm.reply = "The user's sister Ana lives in Porto and they started learning the cello."
    assert mem.consolidate(llm=llm)["summarized"] == 1
    (second,) = mem.list(kind="fact")
    assert second.id != first.id and len(second.sources) == 8
    assert mem.get(first.id).tier == "forgotten"
    # Conversations imported later but dated earlier than every summary are found too.
    conversation(mem, "imported", T0 - 400 * 24 * HOUR)
    assert [s for s, _ in summaries.pending(mem.records)] == ["imported"]
    assert mem.consolidate(llm=llm)["summarized"] == 1


def test_summaries_neither_merge_nor_supersede(tmp_path):
    """A summary is written hours or days after its conversation under a new id: it must
    not pass for the newer of two statements (superseding a fact stated since), and an
    extracted fact saying the same must not swallow it (real embedder: real cosines)."""
    clock = [T0]
    with Memory.open(tmp_path / "m", clock=lambda: clock[0]) as mem:
        conversation(mem, "s1", T0)
        said = mem.remember("My sister Ana lives in Porto.", kind="fact", session="s1", when=T0)
        clock[0] = T0 + 24 * HOUR
        moved = mem.remember("Ana lives in Lisbon now.", kind="fact", when=T0 + 24 * HOUR)
        clock[0] = T0 + 48 * HOUR
        llm = ScriptedEngine("The user's sister Ana lives in Porto.")
        assert mem.consolidate(llm=llm)["summarized"] == 1
        (s,) = [m for m in mem.list(kind="fact") if "summary" in m.tags]
        clock[0] = T0 + 49 * HOUR
        mem.consolidate()
        assert mem.get(moved.id).superseded_by is None
        assert mem.get(s.id).merged_into is None and mem.get(said.id).merged_into is None
        assert mem.get(s.id).key == "summary:s1" and len(mem.get(s.id).sources) == 6


def test_supported_sentences():
    said = "My sister is called Ana and she lives in Porto. I am allergic to nuts."
    assert summaries.supported("The user's sister Ana lives in Porto.", said)
    assert summaries.supported("They are allergic to nuts.", said)
    assert not summaries.supported("The user lives in Lisbon with a dog.", said)
    assert not summaries.supported("Does Ana live in Porto?", said)
    assert not summaries.supported("Ana.", said)  # one content word says nothing
    assert not summaries.supported("", said)


def test_the_assistant_summarizes_its_conversation_in_place_of_the_earlier_summary(mem):
    llm = ScriptedEngine("The user's sister Ana lives in Porto and they are allergic to nuts.")
    bot = Assistant(mem, llm, session="chat-1", recall_k=0)
    bot.ask("My sister is called Ana and she lives in Porto.")
    assert bot.summarize() is None  # 2 turns stored (message and reply): too few
    bot.ask("I am allergic to nuts.")
    first = bot.summarize()
    assert first is not None and first.key == "summary:chat-1"
    assert len(first.sources) == 4
    bot.ask("I started learning the cello.")
    llm.reply = "The user's sister Ana lives in Porto and they are learning the cello."
    second = bot.summarize()
    assert second is not None and second.id != first.id and len(second.sources) == 6
    assert mem.get(first.id).tier == "forgotten"  # replaced, restorable
    assert [m.id for m in mem.list(kind="fact") if "summary" in m.tags] == [second.id]
    with pytest.raises(InvalidArgumentError):
        mem.consolidate(llm=llm, sessions=-1)
    quiet = Assistant(mem, llm, session="chat-2", recall_k=0, remember=False)
    assert quiet.summarize() is None


# ------------------------------------------------------------------ the real parts


def test_the_embedded_model_summarizes_an_ended_conversation(tmp_path):
    """The embedded SmolLM2 and the real ONNX embedder: the stored summary is non-empty,
    says only what the conversation supports, names every turn, and recall finds it."""
    from localmem.llm import open_engine

    clock = [T0]
    with Memory.open(tmp_path / "m", clock=lambda: clock[0]) as mem:
        ids = conversation(mem, "s1", T0)
        clock[0] = T0 + 7 * HOUR
        assert mem.consolidate(llm=open_engine())["summarized"] == 1
        (s,) = mem.list(kind="fact")
        said = " ".join(t for _, t in TURNS)
        assert s.text and all(
            summaries.supported(x, said) for x in summaries._SENTENCE.split(s.text)
        )
        assert [x["id"] for x in s.sources] == ids and "summary" in s.tags
        mem.remember_many([{"text": t, "kind": "fact", "when": T0} for t in DISTRACTORS])
        top = mem.recall("Where does my sister live?", k=3)
        assert s.id in [h.memory.id for h in top]


def test_cli_consolidate_summarize(tmp_path, monkeypatch):
    """``localmem consolidate --summarize`` loads the chat model and reports what it wrote."""
    store = tmp_path / "cli"
    with Memory.open(store) as mem:
        conversation(mem, "s1", T0)  # long ago: ended
    r = CliRunner().invoke(main, ["consolidate", "--summarize", "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert "summaries written: 1 of 1 ended conversations" in r.output
    r = CliRunner().invoke(main, ["consolidate", "--summarize", "--store", str(store)])
    assert r.exit_code == 0 and "no ended conversation to summarize" in r.output
    with Memory.open(store) as mem:
        assert [m.key for m in mem.list(kind="fact")] == ["summary:s1"]
    r = CliRunner().invoke(main, ["consolidate", "--model", "x.gguf", "--store", str(store)])
    assert r.exit_code == 2 and "--model goes with --summarize" in r.output
