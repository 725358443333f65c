"""``localmem mcp``: the memory as an MCP server for editors and coding agents.

One ``MCPServer`` whose lifespan opens the store once and closes it on exit (or when the
client goes away); typed tools whose docstrings are their descriptions. Every localmem
error comes back as a tool error with its message, never a crashed server. The store may
be open in the chat at the same time: writes from both are serialized by the store's lock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from localmem import Memory
from localmem.errors import LocalmemError

log = logging.getLogger("localmem")
T = TypeVar("T")
Kind = Literal["episodic", "fact", "preference", "note"]

INSTRUCTIONS = (
    "localmem is the user's long-term memory, kept on their own machine. Call `recall` "
    "before answering anything that may depend on what the user told you earlier "
    "(preferences, people, projects, decisions). Call `remember` for durable facts and "
    "preferences the user states, one memory each. `forget` is undoable with `restore`."
)


@dataclass
class State:
    memory: Memory
    syncing: Any = None  # Memory.background_sync's, while the server runs


def build_server(store: str | Path | None = None, **open_options: Any) -> MCPServer[State]:
    """The server over the store at ``store`` (default: ``$LOCALMEM_STORE`` or the user
    data dir); ``open_options`` go to ``Memory.open`` (tests pass a fake embedder)."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[State]) -> AsyncIterator[State]:
        mem = Memory.open(store, **open_options)
        try:
            syncing = mem.background_sync()  # a device that syncs stays in step
        except LocalmemError as e:  # the tools still serve this device's memories
            log.warning("sync is off for this session: %s", e)
            syncing = None
        try:
            yield State(mem, syncing)
        finally:
            if syncing is not None:
                syncing.stop()
            mem.close()

    server: MCPServer[State] = MCPServer(
        "localmem",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        version=_version(),
        log_level="WARNING",
    )

    def memory(ctx: Context) -> Memory:
        state: Any = ctx.request_context.lifespan_context
        m: Memory = state.memory
        return m

    def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return fn(*args, **kw)
        except LocalmemError as e:
            raise ToolError(str(e)) from None
        except (TypeError, ValueError) as e:
            raise ToolError(f"bad arguments: {e}") from None

    @server.tool()
    def remember(
        text: str,
        ctx: Context,
        kind: Kind = "note",
        tags: list[str] | None = None,
        importance: float = 0.5,
        when: str | None = None,
    ) -> dict[str, Any]:
        """Stores one memory: a fact, preference, note or conversation turn, in the user's
        words. kind: fact / preference / note / episodic; tags: labels to filter by later;
        importance: 0-1 (how long it should last); when: ISO date or time the event happened
        (default now). Returns the stored memory with its id."""
        m = call(
            memory(ctx).remember, text, kind=kind, tags=tags or (), importance=importance,
            when=when, source="mcp",
        )  # fmt: skip
        return m.as_dict()

    @server.tool()
    def recall(
        query: str,
        ctx: Context,
        k: int = 5,
        kind: Kind | None = None,
        session: str | None = None,
        include_replies: bool = False,
    ) -> list[dict[str, Any]]:
        """The memories that best answer query, best first (at most k, none when nothing is
        relevant), each with its id, dates, score and why (the retrieval channels that found
        it: keyword, semantic, entity, time, session, speaker). Time words in the query ("last
        May", "two weeks ago") narrow by date. The assistant's own past replies are left out
        (they are not the user's word) unless include_replies is true."""
        if not isinstance(k, int) or not 1 <= k <= 100:
            raise ToolError("k must be an integer from 1 to 100")
        hits = call(
            memory(ctx).recall, query, k=k, kind=kind, session=session,
            include_replies=bool(include_replies),
        )  # fmt: skip
        return [h.as_dict() for h in hits]

    @server.tool()
    def forget(id: int, ctx: Context) -> str:
        """Forgets memory id: it leaves every index at once; `restore` brings it back
        during a 30-day grace period, after which its text is purged."""
        call(memory(ctx).forget, id)
        return f"forgot memory {id}; restore({id}) undoes it within 30 days"

    @server.tool()
    def restore(id: int, ctx: Context) -> dict[str, Any]:
        """Undoes a forget (or a demotion) of memory id."""
        return call(memory(ctx).restore, id).as_dict()

    @server.tool()
    def update(
        id: int, ctx: Context, text: str | None = None, tags: list[str] | None = None
    ) -> dict[str, Any]:
        """Corrects memory id: new text and/or new tags (its dates and history stay)."""
        return call(memory(ctx).update, id, text=text, tags=tags).as_dict()

    @server.tool()
    def list_memories(
        ctx: Context,
        limit: int = 20,
        kind: Kind | None = None,
        tag: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recent memories, newest first: filtered by kind, tag, and a time range (since /
        until: ISO dates) of when they happened."""
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            raise ToolError("limit must be an integer from 1 to 500")
        page = call(memory(ctx).list, kind=kind, tag=tag, since=since or None,
                    until=until or None, limit=limit)  # fmt: skip
        return [m.as_dict() for m in page]

    @server.tool()
    def memory_stats(ctx: Context) -> dict[str, Any]:
        """What the store holds: memories by kind and by tier, the embedding model, where
        it lives on disk, whether it is encrypted at rest (null if not; else the cipher
        and what holds the key: a passphrase, the OS keyring), and its sync with the
        user's other devices (null if it does not sync; else devices, last sync, counts)."""
        st = call(memory(ctx).stats)
        keys = ("path", "memories", "by_kind", "by_tier", "model", "encryption", "sync")
        return {k: st[k] for k in keys}

    return server


def _version() -> str:
    from localmem import __version__

    return __version__


def serve(store: str | Path | None = None, *, http_port: int | None = None) -> None:
    """Runs the server on stdio until the client disconnects, or with ``http_port`` on
    streamable HTTP bound to 127.0.0.1 only (this machine's clients, nobody else's)."""
    server = build_server(store)
    if http_port is None:
        anyio.run(_serve_stdio, server)
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)


async def _serve_stdio(server: MCPServer[State]) -> None:
    """``server.run("stdio")`` on localmem's own stdio transport, which answers malformed
    lines with JSON-RPC errors where the SDK's drops them (see ``localmem.mcp.guard``)."""
    from localmem.mcp.guard import stdio_server

    lowlevel = server._lowlevel_server  # no public accessor; the SDK's own Client uses it too
    async with stdio_server() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
