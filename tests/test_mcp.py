"""``localmem mcp`` through the official SDK's client over stdio: the server runs as a
subprocess with the real embedder and a store on disk."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def params(store):
    return StdioServerParameters(
        command=sys.executable, args=["-m", "localmem", "mcp", "--store", str(store)]
    )


async def call(c, tool, **args):
    r = await c.call_tool(tool, args)
    if r.is_error:
        return "ERROR: " + r.content[0].text
    return (
        r.structured_content.get("result", r.structured_content)
        if r.structured_content
        else r.content[0].text
    )


def test_tools_over_stdio(tmp_path):
    async def go():
        async with Client(params(tmp_path / "s")) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == {
                "remember", "recall", "forget", "restore", "update", "list_memories",
                "memory_stats",
            }  # fmt: skip
            assert all(len(t.description or "") > 40 for t in tools.values())  # docstrings
            assert "query" in tools["recall"].input_schema["properties"]
            a = await call(c, "remember", text="Priya is allergic to peanuts", kind="fact",
                           tags=["health"], when="2026-03-01")  # fmt: skip
            b = await call(c, "remember", text="The team offsite is in Lisbon in June")
            assert a["kind"] == "fact" and a["when"].startswith("2026-03-01")
            hits = await call(c, "recall", query="who is allergic to peanuts?", k=3)
            assert hits[0]["id"] == a["id"] and hits[0]["why"]["keyword"] > 0
            assert await call(c, "recall", query="quantum chromodynamics lecture") == []
            assert "forgot" in await call(c, "forget", id=a["id"])
            assert all(h["id"] != a["id"] for h in await call(c, "recall", query="peanuts"))
            assert (await call(c, "restore", id=a["id"]))["tier"] == "hot"
            u = await call(c, "update", id=b["id"], text="The team offsite is in Porto in June")
            assert u["text"].endswith("Porto in June")
            hits = await call(c, "recall", query="where is the offsite?")
            assert hits[0]["text"] == "The team offsite is in Porto in June"
            assert [m["id"] for m in await call(c, "list_memories", tag="health")] == [a["id"]]
            in_march = await call(c, "list_memories", since="2026-02-01", until="2026-03-31")
            assert [m["id"] for m in in_march] == [a["id"]]
            st = await call(c, "memory_stats")
            assert st["memories"] == 2 and st["by_kind"] == {"fact": 1, "note": 1}
            # Errors are tool errors with a message; the server keeps answering.
            assert "empty" in await call(c, "remember", text="   ")
            assert "no memory with id" in await call(c, "forget", id=424242)
            assert "split it" in await call(c, "remember", text="x" * 20_000)
            assert "kind" in await call(c, "remember", text="hi", kind="gossip")
            assert "k must be" in await call(c, "recall", query="x", k=0)
            assert (await call(c, "memory_stats"))["memories"] == 2

    asyncio.run(go())


def test_a_malformed_request_does_not_stop_the_server(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-m", "localmem", "mcp", "--store", str(tmp_path / "s")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def send(obj):
            p.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
            p.stdin.flush()

        send("this is not json {")
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})  # fmt: skip
        replies = []
        while True:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            msg = json.loads(line)
            replies.append(msg)
            if msg.get("id") == 1:
                break
        assert replies[-1]["result"]["serverInfo"]["name"] == "localmem"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "forget", "arguments": {"id": "not a number"}}})  # fmt: skip
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        got = {}
        while 3 not in got:
            msg = json.loads(p.stdout.readline())
            if "id" in msg:
                got[msg["id"]] = msg
        assert got[2].get("error") or got[2]["result"]["isError"]
        assert len(got[3]["result"]["tools"]) == 7
    finally:
        p.stdin.close()  # EOF: the server closes the store and exits
        assert p.wait(timeout=30) == 0


def test_the_chat_and_the_server_share_one_store(tmp_path):
    from localmem import Memory

    store = tmp_path / "shared"
    with Memory.open(store) as chat_side:  # the chat holds the store open meanwhile
        chat_side.remember("Ana's birthday is on May 3", kind="fact")

        async def go():
            async with Client(params(store)) as c:
                hits = await call(c, "recall", query="when is Ana's birthday?")
                assert hits[0]["text"] == "Ana's birthday is on May 3"
                await call(c, "remember", text="Ana likes orchids", kind="preference")
                assert (await call(c, "memory_stats"))["memories"] == 2

        asyncio.run(go())
        assert chat_side.recall("what does Ana like?", k=1)[0].memory.text == "Ana likes orchids"


def test_streamable_http_on_loopback(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(
        [sys.executable, "-m", "localmem", "mcp", "--store", str(tmp_path / "h"),
         "--http", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        async def go():
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                m = await call(c, "remember", text="served over HTTP")
                assert (await call(c, "recall", query="served over HTTP"))[0]["id"] == m["id"]

        asyncio.run(go())
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_malformed_lines_get_json_rpc_errors_and_the_server_keeps_serving(tmp_path):
    import queue
    import threading

    p = subprocess.Popen(
        [sys.executable, "-m", "localmem", "mcp", "--store", str(tmp_path / "s")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8",
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read():  # a thread, so a missing reply fails the test instead of hanging it
        for line in p.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def send(line):
        p.stdin.write(line + "\n")
        p.stdin.flush()

    def reply(timeout=10.0):
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply within {timeout}s") from None
        assert line, f"the server exited: {p.stderr.read()}"
        return json.loads(line)

    def request(id, method, params, timeout=60.0):
        send(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        msg = reply(timeout)
        assert msg["id"] == id, msg
        return msg

    try:
        hello = {"name": "raw", "version": "0"}
        init = request(1, "initialize", {"protocolVersion": "2025-06-18", "clientInfo": hello,
                                         "capabilities": {}})  # fmt: skip
        assert init["result"]["serverInfo"]["name"] == "localmem"
        send('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        malformed = [  # (line, code, id of the reply)
            ('{"jsonrpc": "2.0", "id": 2, "method": "ping"', -32700, None),  # invalid JSON
            ("42", -32600, None),
            ('"x"', -32600, None),
            ("null", -32600, None),
            ('[{"jsonrpc": "2.0", "id": 3, "method": "ping"}]', -32600, None),  # a batch
            ("[]", -32600, None),
            ('{"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": []}', -32602, 4),
            ('{"jsonrpc": "2.0", "id": "5", "method": "tools/list", "params": [1]}', -32602, "5"),
            ('{"jsonrpc": "2.0", "id": 6, "method": 7}', -32600, 6),
            ('{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600, None),  # not an id
            ('{"jsonrpc": "2.0", "id": 8, "method": "ping", "params": NaN}', -32700, None),
        ]  # fmt: skip
        for line, code, id in malformed:
            send(line)
            msg = reply()
            assert msg.get("error", {}).get("code") == code and msg["id"] == id, (line, msg)
        # A malformed notification is never answered, and the server still is.
        send('{"jsonrpc": "2.0", "method": "notifications/progress", "params": [1]}')
        assert request(9, "ping", {})["result"] == {}
        # A lone surrogate (half of an emoji) becomes U+FFFD; the request goes through.
        send('{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": '
             '"remember", "arguments": {"text": "I love caf\\ud800 au lait"}}}')  # fmt: skip
        stored = reply(60.0)
        assert stored["id"] == 10 and not stored["result"].get("isError"), stored
        assert stored["result"]["structuredContent"]["text"] == "I love caf\ufffd au lait"
        send('{"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": '
             '"nope\\udfff", "arguments": {}}}')  # fmt: skip
        unknown = reply()
        assert unknown["id"] == 11 and unknown["result"]["isError"]
        assert "nope\ufffd" in unknown["result"]["content"][0]["text"]
        stats = request(12, "tools/call", {"name": "memory_stats", "arguments": {}})
        assert not stats["result"].get("isError"), stats
        assert stats["result"]["structuredContent"]["memories"] == 1
    finally:
        p.stdin.close()  # EOF: the server closes the store and exits
        assert p.wait(timeout=30) == 0


def test_triage_and_dump_leave_no_request_unanswered():
    from mcp_types import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

    from localmem.mcp.guard import dump, triage

    ok = triage('{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n')
    assert isinstance(ok, JSONRPCRequest) and ok.id == 1
    note = triage('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert isinstance(note, JSONRPCNotification)
    assert triage('{"jsonrpc": "2.0", "method": "x", "params": 1}') is None  # a notification
    assert triage('{"jsonrpc": "2.0", "id": 1, "result": 5}') is None  # a client's response
    # Lone halves of a surrogate pair become U+FFFD, in keys too; whole pairs stay.
    req = triage('{"jsonrpc": "2.0", "id": 2, "method": "x", '
                 '"params": {"\\udc00k": ["\\ud83d\\ude00", "\\ud83d", "\\\\ud800"]}}')  # fmt: skip
    assert isinstance(req, JSONRPCRequest)
    assert req.params == {"\ufffdk": ["\U0001f600", "\ufffd", "\\ud800"]}
    # A reply that cannot be encoded becomes an internal error for its request.
    bad = JSONRPCResponse(jsonrpc="2.0", id=3, result={"text": "\ud800"})
    assert json.loads(dump(bad)) == {
        "jsonrpc": "2.0", "id": 3,
        "error": {"code": -32603, "message": "Internal error: the reply could not be encoded"},
    }  # fmt: skip
