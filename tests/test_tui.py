"""The terminal chat driven by Textual's Pilot: a fake engine for speed, and one test with
the real embedded model and embedder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from localmem.tui import ChatApp
from localmem.tui.screens import ModelPicker
from localmem.tui.widgets import ChatMessage, Inspector, StatusBar
from textual.widgets import OptionList, Static

from localmem import Memory
from localmem.testing import EchoEngine, HashEmbedder


@pytest.fixture
def mem(tmp_path):
    with Memory.open(tmp_path / "m", embedder=HashEmbedder(), sync="off") as m:
        yield m


async def wait_for(pilot, cond, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out")


def texts(app, role):
    return [m.source for m in app.query(ChatMessage) if m.role == role]


async def reply_to(pilot, app, text, *, ready_timeout=20.0, timeout=20.0):
    """Waits for the app to load, sends ``text`` and waits for the whole reply."""
    await wait_for(pilot, app.ready.is_set, ready_timeout)
    await send(pilot, text)
    await wait_for(pilot, lambda: app.last_turn is not None, timeout)


async def send(pilot, text):
    await pilot.click("#prompt")
    for ch in text:
        await pilot.press("space" if ch == " " else ch)
    await pilot.press("enter")


def test_a_message_streams_a_reply_and_the_inspector_shows_what_was_recalled(mem):
    fact = mem.remember("Priya is allergic to peanuts", kind="fact")

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await reply_to(pilot, app, "is Priya allergic?")
            assert texts(app, "user") == ["is Priya allergic?"]
            assert texts(app, "assistant") == ["echo: is Priya allergic?"]
            assert "tok/s" in str(app.query_one(StatusBar).render())
            await pilot.press("f2")
            ins = app.query_one(Inspector)
            assert ins.has_class("-visible")
            table = ins.query_one("#memories")
            assert table.row_count >= 1
            assert table.get_row(str(fact.id))[0] == "Priya is allergic to peanuts"
            # Forget it from the inspector, then undo.
            table.move_cursor(row=table.get_row_index(str(fact.id)))
            await pilot.press("f")
            await wait_for(pilot, lambda: mem.get(fact.id).tier == "forgotten")
            await pilot.press("u")
            await wait_for(pilot, lambda: mem.get(fact.id).tier == "hot")
            await pilot.press("p")
            await wait_for(pilot, lambda: mem.get(fact.id).pinned)

    asyncio.run(go())


@pytest.mark.parametrize("key", ["escape", "ctrl+c"])
def test_escape_or_ctrl_c_stops_a_reply_mid_stream(mem, key):
    async def go():
        # 0.15 s a token: the reply takes 1.8 s, well past the key, on a loaded machine too
        app = ChatApp(memory=mem, engine=EchoEngine(delay=0.15))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await send(pilot, "one two three four five six seven eight nine ten eleven")
            await pilot.pause(0.3)
            await pilot.press(key)
            await wait_for(pilot, lambda: app.last_turn is not None)
            st = app.last_turn.stats
            assert st.cancelled and st.generated_tokens < 12
            reply = texts(app, "assistant")[0]
            assert reply.startswith("echo:") and not reply.endswith("eleven")

    asyncio.run(go())


def test_the_inspector_lists_the_newest_memories_before_any_reply(mem):
    mem.remember_many([{"text": f"note number {i}"} for i in range(5)])

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await pilot.press("f2")
            table = app.query_one("#memories")
            await wait_for(pilot, lambda: table.row_count == 5)
            await pilot.click("#search")
            for ch in "number 3":
                await pilot.press("space" if ch == " " else ch)
            await wait_for(pilot, lambda: table.get_row_at(0)[0] == "note number 3")

    asyncio.run(go())


def test_slash_commands_and_typing_before_the_model_is_ready(mem):
    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(80, 24)) as pilot:
            await send(pilot, "/remember the spare key is under the blue pot")
            await wait_for(pilot, lambda: len(mem) == 1)
            m = mem.list()[0]
            await send(pilot, f"/pin {m.id}")
            await wait_for(pilot, lambda: mem.get(m.id).pinned)
            await send(pilot, "/stats")
            await wait_for(pilot, lambda: any("memories (" in t for t in texts(app, "system")))
            await send(pilot, "/frobnicate")
            await wait_for(pilot, lambda: any("Unknown" in t for t in texts(app, "system")))
            await pilot.press("f1")
            assert app.screen.__class__.__name__ == "HelpScreen"
            await pilot.press("escape")
            assert app.screen.__class__.__name__ != "HelpScreen"

    asyncio.run(go())


def test_the_screens_render_at_80x24(mem, tmp_path):
    mem.remember("Marco plays the cello", kind="fact")

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(80, 24)) as pilot:
            await reply_to(pilot, app, "who plays the cello?")
            chat = app.save_screenshot(path=str(tmp_path), filename="chat.svg")
            await pilot.press("f2")
            await pilot.pause(0.1)
            ins = app.save_screenshot(path=str(tmp_path), filename="inspector.svg")
            return open(chat).read(), open(ins).read()

    chat, ins = asyncio.run(go())
    assert "echo:" in chat and "cello" in chat
    assert "retention" in ins and "Marco" in ins


@pytest.mark.parametrize(
    ("engine", "options"), [("llama", {}), ("flash", {}), ("flash", {"memory_budget": 0.6})]
)
def test_the_real_model_answers_in_the_chat(tmp_path, engine, options):
    # As `localmem chat --engine NAME [--memory-budget 60%]` opens it: the app loads the
    # engine by name, with the options.
    async def go():
        with Memory.open(tmp_path / "real") as m:
            m.remember("My sister is called Ana.", kind="fact")
            app = ChatApp(memory=m, engine_name=engine, engine_options=options, max_tokens=24)
            async with app.run_test(size=(100, 30)) as pilot:
                await reply_to(
                    pilot, app, "What is my sister called?", ready_timeout=60, timeout=120
                )
                assert "My sister is called Ana." in app.last_turn.note
                assert texts(app, "assistant")[0].strip()
                # What the reply rests on, quoted in a block of its own before it.
                shown = [m.role for m in app.query(ChatMessage)]
                assert shown.index("grounding") == shown.index("assistant") - 1
                block = texts(app, "grounding")[0]
                assert "From what you told me" in block and "My sister is called Ana." in block
                assert type(app.assistant.engine).__name__ == {
                    "llama": "LlamaCppEngine", "flash": "FlashEngine"
                }[engine]  # fmt: skip
                status = str(app.status.render())
                if options:  # the engine's plan: what is pinned, what streams, read size
                    assert "MB pinned" in status and "MB/token streamed" in status, status
                    assert "KiB" in status
                    first = app.last_turn
                    await send(pilot, "And where does she live?")
                    await wait_for(pilot, lambda: app.last_turn is not first, 120)
                    assert len(texts(app, "assistant")) == 2
                    assert app.assistant.engine.weight_stream_stats()["bytes_read"] > 0
                else:
                    assert "pinned" not in status
                ahead = app.assistant._ahead  # the model readied for the next message
                assert ahead is not None
            app.close()
            assert not ahead.is_alive()  # nothing left running in the model at exit

    asyncio.run(go())


def test_resizing_to_80x24_and_a_light_theme_keep_everything_on_screen(mem, tmp_path):
    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(140, 45)) as pilot:
            await reply_to(pilot, app, "hello there")
            await pilot.resize_terminal(80, 24)
            app.theme = "textual-light"
            await pilot.press("f2")
            await pilot.pause(0.2)
            for w in ("#prompt", "#status", "#memories"):
                r = app.query_one(w).region
                assert r.width > 0 and r.height > 0 and r.right <= 80 and r.bottom <= 24, w
            shot = app.save_screenshot(path=str(tmp_path), filename="light.svg")
            svg = Path(shot).read_text()
            return svg

    svg = asyncio.run(go())
    assert "echo:" in svg and "hello" in svg


def test_model_command_switches_to_another_gguf(mem, tmp_path):
    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await send(pilot, f"/model {tmp_path / 'missing.gguf'}")
            await wait_for(pilot, lambda: any("no model file" in t for t in texts(app, "system")))
            await send(pilot, "/model")  # the picker, saying which model runs now
            await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
            assert "Now: echo" in str(app.screen.query_one(Static).render())
            await pilot.press("escape")  # keeps it
            await wait_for(pilot, lambda: not isinstance(app.screen, ModelPicker))
            assert app.assistant.engine.name == "echo"

    asyncio.run(go())


def test_a_model_that_fails_to_open_leaves_the_chat_with_the_one_it_had(tmp_path):
    import shutil

    from localmem.llm.llamacpp import resolve

    # A GGUF cut short: its header reads, its tensors do not, so it fails only after the
    # model in use was closed to make room for it.
    bad = tmp_path / "cut.gguf"
    shutil.copyfile(resolve(None)[1], bad)
    os.truncate(bad, bad.stat().st_size // 2)

    async def go():
        with Memory.open(tmp_path / "store") as m:
            app = ChatApp(memory=m, engine_name="flash", engine_options={"memory_budget": 0.6},
                          max_tokens=8)  # fmt: skip
            async with app.run_test(size=(100, 30)) as pilot:
                await wait_for(pilot, app.ready.is_set, 60)
                before = app.assistant.engine
                await send(pilot, f"/model {bad}")
                await wait_for(pilot, lambda: any("Error" in t for t in texts(app, "system")), 60)
                engine = app.assistant.engine
                assert engine is not before and not engine._closed  # reopened in its place
                assert engine.path == before.path and engine.plan()  # with its budget
                await reply_to(pilot, app, "Say hello.", timeout=120)
                assert texts(app, "assistant")[-1].strip()
            app.close()

    asyncio.run(go())


def test_model_picker_lists_the_models_on_this_machine_and_switches_to_one(
    mem, tmp_path, monkeypatch
):
    import shutil

    from localmem import registry

    mine = tmp_path / "models"
    mine.mkdir()
    src = registry.asset(registry.entry(registry.default_name("llm"))["model"]).path()
    shutil.copyfile(src, mine / "my-chat.gguf")  # a copy: the embedded file is listed once
    (mine / "broken.gguf").write_bytes(b"GGUF" + bytes(100))
    monkeypatch.setenv("LOCALMEM_MODELS", str(mine))

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, app.ready.is_set)
            await send(pilot, "/model")
            await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
            options = app.screen.query_one(OptionList)
            ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
            assert "my-chat.gguf" in ids and "broken.gguf" in ids
            broken = options.get_option("broken.gguf")
            assert broken.disabled and "cannot chat" in str(broken.prompt)
            options.highlighted = ids.index("my-chat.gguf")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.assistant.engine.name == "my-chat.gguf", 600)
            await wait_for(pilot, lambda: any("Now chatting with my-chat.gguf" in t
                                              for t in texts(app, "system")))  # fmt: skip
        app.assistant.engine.close()

    asyncio.run(go())


def test_conversations_that_ended_are_summarized_when_the_app_starts(mem):
    """A conversation that ended (its last turn long ago) gets its summary from the model in
    the loading worker; the chat is usable meanwhile."""
    turns = ["My sister is called Ana.", "Lovely!", "I am allergic to nuts.", "Noted."]
    mem.remember_many(
        [
            {"text": t, "kind": "episodic", "source": "chat", "session": "old",
             "tags": ["assistant" if i % 2 else "user"], "when": 1_700_000_000 + i}
            for i, t in enumerate(turns)
        ]
    )  # fmt: skip

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: any("summary" in m.tags for m in mem.list()))
            await reply_to(pilot, app, "hello")
            (s,) = [m for m in mem.list(limit=100) if "summary" in m.tags]
            assert s.key == "summary:old" and len(s.sources) == 4

    asyncio.run(go())


def test_the_status_bar_says_whether_the_store_is_encrypted(tmp_path):
    """An encrypted store the chat opens with its passphrase (as `localmem chat` passes it
    after asking) and a plain one: the status bar says which, and what holds the key."""
    from localmem.store import keyfile

    enc = tmp_path / "enc"
    enc.mkdir()
    keyfile.create(enc, "s", passphrase="pw",
                   params={"time_cost": 1, "memory_kib": 8, "parallelism": 1})  # fmt: skip
    with Memory.open(enc, key="pw") as m:  # the real embedder: the app opens it itself
        m.remember("a secret")
    for path, passphrase, want in ((enc, "pw", "encrypted (passphrase)"),
                                   (tmp_path / "plain", None, "not encrypted")):  # fmt: skip

        async def go(path=path, passphrase=passphrase, want=want):
            app = ChatApp(store=path, passphrase=passphrase, engine=EchoEngine())
            async with app.run_test(size=(120, 30)) as pilot:
                await wait_for(pilot, lambda: want in str(app.status.render()))
            app.close()

        asyncio.run(go())
