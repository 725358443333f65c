"""The terminal chat in everyday use (issue 28), driven by Textual's Pilot with a fake engine:
the inspector's cursor stays put, messages typed during a reply wait their turn, `/` finds
the memory search, the last conversation comes back after a restart, replies can be shown in
memory search or kept out of the store."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from localmem.tui import ChatApp
from localmem.tui.app import FLUSH_SECONDS
from localmem.tui.screens import HELP
from localmem.tui.widgets import ChatMessage, Inspector
from textual.widgets import DataTable, Input, Static

from localmem import Memory
from localmem.testing import EchoEngine, HashEmbedder

from .test_tui import reply_to, send, texts, wait_for


@pytest.fixture
def mem(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as m:
        yield m


async def next_reply(pilot, app, text, timeout=20.0):
    """Sends ``text`` once the app is ready and waits for its whole reply."""
    await wait_for(pilot, app.ready.is_set)
    before = app.last_turn
    await send(pilot, text)
    await wait_for(pilot, lambda: app.last_turn is not before and not app._streaming, timeout)


class GatedEngine(EchoEngine):
    """Holds each reply after its first token until ``gate`` is set: a reply still being
    written, for as long as the test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def generate(self, messages, **kw):
        stream = super().generate(messages, **kw)

        def gated():
            try:
                for i, piece in enumerate(stream):
                    if i == 0:
                        time.sleep(FLUSH_SECONDS * 1.5)  # the first token reaches the screen
                    if i == 1:
                        self.gate.wait(20)
                    yield piece
            finally:
                stream.close()

        return gated()


async def start_held_reply(pilot, app, not_yet=None):
    """Once the app is ready, sends a long message and waits until its reply has begun
    (its first token on screen; ``not_yet``: until the reply box holds other than that)."""
    await wait_for(pilot, app.ready.is_set)
    await send(pilot, "one two three four five six seven eight nine ten eleven")
    if not_yet is None:
        await wait_for(pilot, lambda: texts(app, "assistant") == ["echo:"])
    else:
        await wait_for(pilot, lambda: texts(app, "assistant") != not_yet)


def roles(app):
    return [m.role for m in app.query(ChatMessage) if m.role in ("user", "assistant")]


def test_inspector_actions_keep_the_cursor_on_the_row_acted_on(mem):
    """p, f and u on row 3 act on row 3 and leave the cursor there: pressing p twice pins
    then unpins the same memory (it used to jump back to row 1 and pin another)."""
    mem.remember_many([{"text": f"note number {i}"} for i in range(5)])

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await pilot.press("f2")
            table = app.query_one("#memories", DataTable)
            await wait_for(pilot, lambda: table.row_count == 5)
            table.move_cursor(row=2)
            await pilot.pause()
            id = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

            def shows_pin(want):
                return lambda: table.get_row(str(id))[0].startswith("📌") == want

            await pilot.press("p")
            await wait_for(pilot, shows_pin(True))
            assert table.cursor_row == 2
            await pilot.press("p")  # the same memory again: unpinned
            await wait_for(pilot, shows_pin(False))
            assert table.cursor_row == 2
            assert not any(m.pinned for m in mem.list())
            await pilot.press("f")
            await wait_for(pilot, lambda: table.get_row(str(id))[3] == "forgotten")
            assert table.cursor_row == 2
            await pilot.press("u")
            await wait_for(pilot, lambda: table.get_row(str(id))[3] == "hot")
            assert table.cursor_row == 2
            assert mem.get(id).tier == "hot"
            # A redraw with the row gone (a memory purged meanwhile): the nearest row.
            ins = app.query_one(Inspector)
            ins.show("newest memories", [(m, None, "") for m in mem.list()[:2]], keep_cursor=True)
            assert table.cursor_row == 1

    asyncio.run(go())


def test_messages_typed_while_a_reply_streams_are_queued_and_sent_in_order(mem):
    async def go():
        engine = GatedEngine()
        app = ChatApp(memory=mem, engine=engine)
        async with app.run_test(size=(100, 40)) as pilot:
            await start_held_reply(pilot, app)
            await send(pilot, "second")
            await send(pilot, "third")
            assert app._streaming and texts(app, "assistant") == ["echo:"]  # still the first
            queued = [m for m in app.query(ChatMessage) if m.role == "user"][1:]
            assert [m.source for m in queued] == ["second", "third"]
            assert all(m.border_subtitle == "queued" for m in queued)
            engine.gate.set()
            want = ["echo: one two three four five six seven eight nine ten eleven",
                    "echo: second", "echo: third"]  # fmt: skip
            await wait_for(pilot, lambda: texts(app, "assistant") == want and not app._streaming)
            assert roles(app) == ["user", "assistant"] * 3  # each reply under its message
            assert not any(m.border_subtitle for m in queued)
            assert [t["content"] for t in app.assistant.history[::2]] == [
                "one two three four five six seven eight nine ten eleven", "second", "third"
            ]  # fmt: skip

    asyncio.run(go())


def test_messages_typed_while_the_model_loads_all_go_in_order(mem, monkeypatch):
    """Two messages typed before the model is ready: both answered, in order (the second
    used to be dropped, the first reply being under way when it came to be sent)."""
    import localmem.tui.app as tui_app

    loaded = threading.Event()
    real = tui_app.last_conversation

    def slow(m):
        loaded.wait(20)  # the store is open; the model "loads" until the test says so
        return real(m)

    monkeypatch.setattr(tui_app, "last_conversation", slow)

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await send(pilot, "first")
            await send(pilot, "second")
            assert not app.ready.is_set()
            waiting = [m for m in app.query(ChatMessage) if m.role == "user"]
            assert [m.border_subtitle for m in waiting] == ["queued", "queued"]
            loaded.set()
            want = ["echo: first", "echo: second"]
            await wait_for(pilot, lambda: texts(app, "assistant") == want and not app._streaming)
            assert roles(app) == ["user", "assistant"] * 2

    asyncio.run(go())


def test_a_queued_message_goes_once_esc_stops_the_reply(mem):
    async def go():
        engine = GatedEngine()
        app = ChatApp(memory=mem, engine=engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await start_held_reply(pilot, app)
            await send(pilot, "and then")
            await pilot.press("escape")
            engine.gate.set()  # the reply goes on to its next token, and sees it was stopped
            await wait_for(pilot, lambda: texts(app, "assistant")[-1:] == ["echo: and then"], 30)
            first = next(m for m in app.query(ChatMessage) if m.role == "assistant")
            assert first.border_subtitle == "stopped" and not first.source.endswith("eleven")

    asyncio.run(go())


def test_a_message_still_queued_when_the_chat_quits_is_kept(mem):
    """Quitting while a message waits its turn keeps what the user typed (and its facts):
    the next start shows it in the conversation."""

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine(delay=0.2))  # a reply of seconds
        async with app.run_test(size=(100, 30)) as pilot:
            await start_held_reply(pilot, app, [""])
            await send(pilot, "I am allergic to peanuts.")
            assert len(app._queue) == 1
            await pilot.press("ctrl+q")  # quits mid-reply: the queued message never went
        app.close()  # as `localmem chat` does once run() returns
        turns = mem.list(session=app.assistant.session, newest_first=False)
        assert "I am allergic to peanuts." in [m.text for m in turns if "user" in m.tags]
        assert not any("peanuts" in m.text for m in turns if m.is_reply)  # it got no reply
        assert any(m.kind == "fact" and "peanuts" in m.text for m in mem.list(kind="fact"))

    asyncio.run(go())


def test_slash_focuses_the_memory_search_unless_a_text_box_has_focus(mem):
    mem.remember_many([{"text": f"note number {i}"} for i in range(3)])

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            ins = app.query_one(Inspector)
            search = app.query_one("#search", Input)
            # From the inspector's table: / goes to its search box, and typing searches.
            await pilot.press("f2")
            assert isinstance(app.focused, DataTable)
            assert {"p", "f", "u", "r", "slash"} <= set(app.screen.active_bindings)  # footer
            await pilot.press("/")
            assert app.focused is search and search.value == ""
            assert "p" not in app.screen.active_bindings  # text in the search box
            for ch in "number 2":
                await pilot.press("space" if ch == " " else ch)
            table = app.query_one("#memories", DataTable)
            await wait_for(pilot, lambda: table.get_row_at(0)[0] == "note number 2")
            # In the message box / is only a character: slash commands still work.
            await pilot.press("f2")  # closes the inspector, back to the message box
            await send(pilot, "/stats")
            await wait_for(pilot, lambda: any("memories (" in t for t in texts(app, "system")))
            assert not ins.has_class("-visible")
            # With the inspector closed and the focus on the conversation, / opens it.
            app.query_one("#chat").focus()
            await pilot.press("/")
            assert ins.has_class("-visible") and app.focused is search

    asyncio.run(go())
    assert "| / |" in HELP and "/new" in HELP and "| r |" in HELP


def test_r_shows_the_assistants_replies_in_memory_search(mem):
    mem.remember_many(
        [
            {"text": "what colour is the sky", "kind": "episodic", "source": "chat",
             "session": "chat-a", "tags": ["user"], "when": 1_700_000_000},
            {"text": "the sky is blue today", "kind": "episodic", "source": "chat",
             "session": "chat-a", "tags": ["assistant"], "when": 1_700_000_001},
        ]
    )  # fmt: skip

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await pilot.press("f2")
            table = app.query_one("#memories", DataTable)
            title = app.query_one("#inspector-title", Static)
            await pilot.click("#search")
            for ch in "sky":
                await pilot.press(ch)
            await wait_for(pilot, lambda: "recall" in str(title.render()))
            shown = lambda: [table.get_row_at(i)[0] for i in range(table.row_count)]  # noqa: E731
            assert shown() == ["what colour is the sky"]
            assert "replies hidden" in str(title.render())
            table.focus()
            await pilot.press("r")
            await wait_for(pilot, lambda: "the sky is blue today" in shown())
            assert "replies shown" in str(title.render())
            await pilot.press("r")
            await wait_for(pilot, lambda: shown() == ["what colour is the sky"])
            # What was typed in the search box is shown as typed, never read as markup.
            app.query_one(Inspector).show("recall “[/b] \\ [”: 0", [])
            assert "[/b] \\ [" in str(title.render())

    asyncio.run(go())


def test_the_last_conversation_comes_back_after_a_restart_and_new_starts_afresh(mem):
    async def go():
        first = ChatApp(memory=mem, engine=EchoEngine())
        async with first.run_test(size=(100, 40)) as pilot:
            await reply_to(pilot, first, "my cat is called Tom")
            await next_reply(pilot, first, "she is grey")
        session = first.assistant.session

        engine = EchoEngine()
        app = ChatApp(memory=mem, engine=engine)
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await wait_for(pilot, lambda: len(texts(app, "user")) == 2)
            assert texts(app, "user") == ["my cat is called Tom", "she is grey"]
            assert texts(app, "assistant") == ["echo: my cat is called Tom", "echo: she is grey"]
            assert roles(app) == ["user", "assistant"] * 2
            assert app.assistant.session == session  # the same conversation goes on
            await next_reply(pilot, app, "how old is she")
            prompt = [m["content"] for m in engine.prompts[-1]]
            assert "my cat is called Tom" in prompt and "echo: she is grey" in prompt
            # /new: an empty view, a new conversation, no history in the next prompt.
            await send(pilot, "/new")
            await wait_for(pilot, lambda: not texts(app, "user"))
            assert app.assistant.session != session and app.assistant.history == []
            await next_reply(pilot, app, "hello")
            assert "my cat is called Tom" not in [m["content"] for m in engine.prompts[-1]]
        fresh = app.assistant.session

        again = ChatApp(memory=mem, engine=EchoEngine())
        async with again.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, again.ready.is_set)
            await wait_for(pilot, lambda: texts(again, "user") == ["hello"])
            assert again.assistant.session == fresh

    asyncio.run(go())


def test_the_scrollback_is_the_last_50_turns_of_the_newest_chat(mem):
    items = [
        {"text": f"turn {i}", "kind": "episodic", "source": "chat", "session": "chat-new",
         "tags": ["assistant" if i % 2 else "user"], "when": 1_700_000_000 + i}
        for i in range(60)
    ]  # fmt: skip
    items.append({"text": "older chat", "kind": "episodic", "source": "chat",
                  "session": "chat-old", "tags": ["user"], "when": 1_600_000_000})  # fmt: skip
    items.append({"text": "imported later", "kind": "episodic", "source": "import",
                  "session": "gpt-1", "tags": ["user"], "when": 1_800_000_000})  # fmt: skip
    mem.remember_many(items)

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await wait_for(pilot, lambda: len(roles(app)) == 50)
            shown = [m.source for m in app.query(ChatMessage) if m.role in ("user", "assistant")]
            assert shown == [f"turn {i}" for i in range(10, 60)]
            assert app.assistant.session == "chat-new" and len(app.assistant.history) == 50

    asyncio.run(go())


def test_store_replies_false_keeps_the_replies_out_of_the_store(mem):
    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine(), store_replies=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await reply_to(pilot, app, "hello there")
            assert texts(app, "assistant") == ["echo: hello there"]
        assert [m.text for m in mem.list(kind="episodic")] == ["hello there"]
        again = ChatApp(memory=mem, engine=EchoEngine(), store_replies=False)
        async with again.run_test(size=(100, 30)) as pilot:  # the scrollback: the user's part
            await wait_for(pilot, lambda: texts(again, "user") == ["hello there"])
            assert texts(again, "assistant") == []

    asyncio.run(go())


def test_memory_texts_with_brackets_show_in_the_inspector_as_they_are(mem):
    m = mem.remember("arrays start with a [ in C:\\[tmp]", kind="note")

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await pilot.press("f2")
            table = app.query_one("#memories", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1)
            detail = app.query_one("#detail", Static)
            await wait_for(pilot, lambda: m.text in str(detail.render()))

    asyncio.run(go())
