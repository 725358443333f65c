"""The chat loop with a fake engine (fast): recall into the prompt, reinforcement,
write-back, extraction, context limits, cancellation. The real model runs the same loop in
tests/test_assistant_model.py."""

from __future__ import annotations

import threading

import pytest

from localmem import Memory, errors
from localmem.assistant import MESSAGE_HEAD, NOTE_HEAD, Assistant
from localmem.testing import EchoEngine, HashEmbedder


@pytest.fixture
def mem(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as m:
        yield m


def test_recalled_memories_go_in_the_prompt_dated_and_are_reinforced(mem):
    fact = mem.remember("Priya is allergic to peanuts", kind="fact", when="2026-03-01")
    mem.remember("the bus to work was late again", kind="episodic")
    eng = EchoEngine()
    bot = Assistant(mem, eng)
    turn = bot.chat("is Priya allergic to peanuts?")
    assert turn.text() == "echo: is Priya allergic to peanuts?"
    sent = eng.prompts[-1]
    # The notes come with the message, before it: the message is the prompt's last words.
    assert sent[-1]["role"] == "user" and sent[-1]["content"].startswith(NOTE_HEAD)
    assert f"\n\n{MESSAGE_HEAD} is Priya allergic to peanuts?\n" in sent[-1]["content"]
    assert "1 March 2026:\n- Priya is allergic to peanuts" in turn.note
    assert turn.note in sent[-1]["content"]
    assert turn.memories[0].memory.id == fact.id
    assert mem.get(fact.id).recalls == 1  # used, so reinforced


def test_the_turn_is_written_back_with_the_facts_it_states(mem):
    bot = Assistant(mem, EchoEngine(), session="s1")
    turn = bot.chat("Hello! My sister is called Ana and I prefer short answers.")
    turn.text()
    got = {m.text: m for m in (mem.get(i) for i in turn.stored)}
    user = got["Hello! My sister is called Ana and I prefer short answers."]
    assert user.kind == "episodic" and user.source == "chat" and "user" in user.tags
    reply = got["echo: Hello! My sister is called Ana and I prefer short answers."]
    assert "assistant" in reply.tags and reply.session == "s1"
    assert got["My sister is called Ana."].kind == "fact"
    assert got["I prefer short answers."].kind == "preference"
    assert {f.text for f in turn.facts} == {"My sister is called Ana.", "I prefer short answers."}
    # The next turn finds the fact, and not the assistant's own reply as if the user said it.
    nxt = bot.chat("what is my sister called?")
    assert "My sister is called Ana." in nxt.note and "echo:" not in nxt.note
    nxt.text()


def test_each_prompt_extends_the_last_up_to_its_memory_note(mem):
    mem.remember("Marco plays the cello", kind="fact")
    eng = EchoEngine()
    bot = Assistant(mem, eng)
    for q in ("who plays the cello?", "does Marco play anything?", "tell me about Marco"):
        assert bot.chat(q).text()
    p1, p2, p3 = eng.prompts
    assert all(p[-1]["content"].startswith(NOTE_HEAD) for p in (p1, p2, p3))
    # Everything before a turn's message starts the next prompt: the KV cache is reused;
    # the message stays, without its notes, and the reply follows it.
    assert p2[: len(p1) - 1] == p1[:-1] and p3[: len(p2) - 1] == p2[:-1]
    assert p2[len(p1) - 1 : len(p1) + 1] == [
        {"role": "user", "content": "who plays the cello?"},
        {"role": "assistant", "content": "echo: who plays the cello?"},
    ]
    convo = p3[len(p1) - 1 :]  # after the system prompt and the worked example
    assert sum(m["content"].startswith(NOTE_HEAD) for m in convo) == 1  # old notes are dropped


def test_after_each_reply_the_engine_is_readied_for_the_next_prompt(mem, caplog):
    mem.remember("Marco plays the cello", kind="fact")
    eng = EchoEngine()
    bot = Assistant(mem, eng, remember=False)
    bot.chat("who plays the cello?").text()
    bot.wait_ready()  # it runs in a thread of its own, while the user reads
    # The conversation so far, without the note: what the next prompt starts with.
    assert eng.prepared == eng.prompts[-1][:-1] + bot.history
    assert eng.prepared[-1] == {"role": "assistant", "content": "echo: who plays the cello?"}
    ahead = eng.prepared
    bot.chat("and the piano?").text()
    assert eng.prompts[-1][: len(ahead)] == ahead

    def fails(messages):
        raise errors.LocalmemError("llama.cpp failed reading the conversation ahead")

    eng.prepare = fails  # a failure there costs the next turn time, not the reply
    with caplog.at_level("WARNING", logger="localmem.assistant"):
        assert bot.chat("and the drums?").text() == "echo: and the drums?"
        bot.wait_ready()
    assert "could not ready the model" in caplog.text
    assert bot.chat("and the flute?").text()  # the conversation goes on


def test_a_reply_closed_early_frees_the_engine_for_what_follows(mem):
    eng = EchoEngine()
    bot = Assistant(mem, eng, llm_extract=True)  # finishing the turn runs the engine again
    it = iter(bot.chat("My sister is called Ana and she lives in Porto."))
    assert next(it) == "echo:"
    it.close()  # the reader stops: the engine's stream must let go before the turn finishes
    bot.wait_ready()
    assert eng.prompts[-1][-1]["content"].endswith(
        "Message: My sister is called Ana and she lives in Porto."
    )  # extraction ran
    assert eng.prepared[-1] == {"role": "assistant", "content": "echo:"}
    assert bot.chat("and my brother?").text() == "echo: and my brother?"


class OrderedEngine(EchoEngine):
    """Records the order of calls; its read-ahead starts late, as a busy thread would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.late = threading.Event()

    def generate(self, messages, **kw):
        self.calls.append("generate")
        return super().generate(messages, **kw)

    def prepare(self, messages):
        self.late.wait(2)
        self.calls.append("prepare")
        return super().prepare(messages)


def test_the_next_turn_waits_for_the_read_ahead_of_the_last(mem):
    eng = OrderedEngine()
    bot = Assistant(mem, eng)
    bot.chat("first").text()
    threading.Timer(0.3, eng.late.set).start()
    bot.chat("second").text()  # would generate before the late read-ahead without waiting
    bot.wait_ready()
    assert eng.calls == ["generate", "prepare", "generate", "prepare"]


def test_a_turn_finishes_when_no_thread_can_read_ahead_or_the_stream_fails_to_close(
    mem, monkeypatch, caplog
):
    import localmem.assistant as assistant_mod

    class NoThread(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")

    bot = Assistant(mem, EchoEngine())
    monkeypatch.setattr(assistant_mod.threading, "Thread", NoThread)
    with caplog.at_level("WARNING", logger="localmem.assistant"):
        assert bot.chat("one").text() == "echo: one"
    assert "can't start new thread" in caplog.text
    monkeypatch.undo()
    assert bot.chat("two").text() == "echo: two"  # not stuck on a thread never started

    class BadClose:
        def __init__(self, pieces):
            self.pieces = iter(pieces)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.pieces)

        def close(self):
            raise OSError("the engine's stream failed to close")

    eng = EchoEngine()
    eng.generate = lambda messages, **kw: BadClose(["a", " reply"])
    bot = Assistant(mem, eng, session="s2")
    with pytest.raises(OSError):
        bot.chat("three").text()
    assert bot.history[-1] == {"role": "assistant", "content": "a reply"}  # finished anyway
    assert mem.list(session="s2")  # and written back
    with pytest.raises(OSError):  # not InvalidArgumentError: "a reply is still streaming"
        bot.chat("four").text()
    assert bot.history[-2] == {"role": "user", "content": "four"}


def test_a_turn_keeps_its_own_stats_when_another_generation_follows_at_once(mem):
    eng = EchoEngine()
    real = eng.generate

    def generate(messages, **kw):
        stream = real(messages, **kw)

        class Handover:  # the moment the stream lets go, someone else generates
            def __iter__(self):
                return self

            def __next__(self):
                return next(stream)

            def close(self):
                stream.close()
                "".join(real([{"role": "user", "content": "another caller"}]))

        return Handover()

    eng.generate = generate
    bot = Assistant(mem, eng, remember=False, read_ahead=False)
    turn = bot.chat("a message of six words here")
    assert turn.text() == "echo: a message of six words here"
    assert turn.stats is not None and turn.stats.generated_tokens == 7  # not the other's 3
    assert eng.last_stats.generated_tokens == 3


def test_oldest_turns_go_first_when_the_context_fills(mem):
    eng = EchoEngine(n_ctx=200)
    bot = Assistant(mem, eng, max_tokens=40, remember=False)
    for i in range(30):
        bot.chat(f"message number {i} with a few more words in it").text()
        assert eng.count_tokens(eng.prompts[-1]) + 40 <= 200
    assert eng.prompts[-1][0]["content"] == bot.system  # the system prompt always stays
    assert "message number 29" in eng.prompts[-1][-1]["content"]
    assert not any("number 0 " in m["content"] for m in eng.prompts[-1])
    with pytest.raises(errors.InvalidArgumentError, match="does not fit"):
        bot.chat("word " * 500)


def test_memory_budget_limits_what_is_placed(mem):
    for i in range(30):
        mem.remember(f"fact {i}: the garden gnome number {i} is painted red", kind="fact")
    eng = EchoEngine()
    bot = Assistant(mem, eng, memory_tokens=40, recall_k=30)
    turn = bot.chat("which garden gnome is painted red?")
    lines = turn.note.splitlines()[1:]
    assert len(lines) >= 2 and sum(eng.count_text_tokens(x) + 1 for x in lines) <= 40
    assert sum(x.endswith(":") for x in lines) == 1  # one date, said once
    turn.text()
    assert Assistant(mem, eng, recall_k=0).chat("which gnome?").note == ""


def test_cancel_stops_the_reply_and_keeps_what_was_said(mem):
    stop = threading.Event()
    bot = Assistant(mem, EchoEngine(), session="c")
    turn = bot.chat("one two three four five six seven", cancel=stop)
    got = []
    for piece in turn:
        got.append(piece)
        if len(got) == 3:
            stop.set()
    assert "".join(got) == "echo: one two"
    texts = {mem.get(i).text: mem.get(i) for i in turn.stored}
    assert "cancelled" in texts["echo: one two"].tags
    # Closing the stream early also ends the turn and frees the conversation.
    t2 = bot.chat("alpha beta gamma")
    it = iter(t2)
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert bot.chat("again").text() == "echo: again"


def test_one_reply_at_a_time_and_bad_input(mem):
    bot = Assistant(mem, EchoEngine())
    turn = bot.chat("first")
    with pytest.raises(errors.InvalidArgumentError, match="still streaming"):
        bot.chat("second")
    turn.text()
    for bad in ("", "   ", None, 3, "x" * 40_000):
        with pytest.raises(errors.InvalidArgumentError):
            bot.chat(bad)  # type: ignore[arg-type]
    for kw in ({"memory_tokens": -1}, {"recall_k": 1.5}, {"max_tokens": 0}):
        with pytest.raises(errors.InvalidArgumentError):
            Assistant(mem, EchoEngine(), **kw)  # type: ignore[arg-type]
    assert bot.chat("still works").text() == "echo: still works"


def test_remember_false_leaves_memory_unchanged(mem):
    m = mem.remember("Lena collects stamps", kind="fact")
    bot = Assistant(mem, EchoEngine(), remember=False)
    bot.chat("My sister is called Ana. Does Lena collect stamps?").text()
    assert len(mem) == 1 and mem.get(m.id).recalls == 0


def test_llm_extraction_asks_the_model_after_the_reply(mem):
    eng = EchoEngine()
    bot = Assistant(mem, eng, llm_extract=True)
    turn = bot.chat("My sister is called Ana.")
    turn.text()
    assert len(eng.prompts) == 2 and "lasting fact" in eng.prompts[1][0]["content"]
    assert [f.text for f in turn.facts] == ["My sister is called Ana."]  # echo adds nothing


def test_the_note_groups_memories_under_their_dates(mem):
    mem.remember("Priya is allergic to peanuts", kind="fact", when="2026-03-01")
    mem.remember("Priya avoids peanut butter too", kind="fact", when="2026-03-01")
    mem.remember("Priya carries an epipen for peanuts", kind="fact", when="2025-07-14")
    note = Assistant(mem, EchoEngine()).chat("what about Priya and peanuts?").note
    lines = note.splitlines()
    assert lines[0] == NOTE_HEAD
    assert sorted(x for x in lines[1:] if x.endswith(":")) == ["1 March 2026:", "14 July 2025:"]
    day = lines.index("1 March 2026:")
    got = lines[day + 1 : day + 3]
    assert sorted(got) == ["- Priya avoids peanut butter too", "- Priya is allergic to peanuts"]
