"""Issue 26 in the faces: the MCP server (a real client over stdio) and the chat (Pilot)
sync in the background, and say so: ``memory_stats`` and the status bar."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from localmem.tui import ChatApp
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from localmem import Memory
from localmem.testing import EchoEngine, HashEmbedder
from tests.test_mcp import call


def test_the_mcp_server_syncs_in_the_background(tmp_path):
    with Memory.open(tmp_path / "a") as a:
        a.remember("Priya's flight lands at 6pm on Friday")
        code = a.sync_init(tmp_path / "folder")
    with Memory.open(tmp_path / "b") as b:
        b.sync_join(tmp_path / "folder", code)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "localmem", "mcp", "--store", str(tmp_path / "b")],
        env=dict(os.environ, LOCALMEM_SYNC_INTERVAL="0.5"),
    )  # fmt: skip

    async def until(c, query, text, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hits = await call(c, "recall", query=query, k=3)
            if any(h["text"] == text for h in hits):
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"{text!r} never arrived")

    async def go():
        async with Client(params) as c:
            st = await call(c, "memory_stats")
            assert st["sync"]["folder_reachable"] and len(st["sync"]["devices"]) == 1
            with Memory.open(tmp_path / "a") as a:  # the other device, while it runs
                a.remember("The spare key is under the blue flower pot")
                a.sync()
            await until(c, "where is the spare key?", "The spare key is under the blue flower pot")
            await call(c, "remember", text="Dentist appointment moved to Tuesday 9am")
            end = time.monotonic() + 30
            while time.monotonic() < end:  # its background step exports it; a imports it
                with Memory.open(tmp_path / "a") as a:
                    a.sync()
                    if any("Dentist" in m.text for m in a.list()):
                        break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError("the server never exported its memory")

    asyncio.run(go())


def test_the_chat_syncs_in_the_background_and_shows_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALMEM_SYNC_INTERVAL", "0.3")
    emb = HashEmbedder(384)
    with Memory.open(tmp_path / "a", embedder=emb, forgetting=False) as a:
        code = a.sync_init(tmp_path / "folder")
    mem = Memory.open(tmp_path / "b", embedder=emb, forgetting=False)
    mem.sync_join(tmp_path / "folder", code)

    async def go():
        app = ChatApp(memory=mem, engine=EchoEngine())
        async with app.run_test(size=(120, 30)) as pilot:
            for _ in range(200):
                if app.last_sync is not None:
                    break
                await pilot.pause(0.05)
            assert "synced" in app.status._parts["sync"]
            with Memory.open(tmp_path / "a", embedder=emb, forgetting=False) as a:
                a.remember("Ana's birthday is May 3")
                a.sync()
            for _ in range(200):
                if "+1 in" in app.status._parts.get("sync", ""):
                    break
                await pilot.pause(0.05)
            assert "+1 in" in app.status._parts["sync"], app.status._parts
            assert [m.text for m in mem.list()] == ["Ana's birthday is May 3"]
        app.close()

    try:
        asyncio.run(go())
    finally:
        mem.close()
