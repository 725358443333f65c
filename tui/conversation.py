"""The conversation the chat goes on with: the newest one in the store, so that a restart
does not lose the thread (the user sees it as scrollback, the model gets it as history)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .widgets import ChatMessage

if TYPE_CHECKING:
    from localmem import Memory, MemoryItem

SCROLLBACK = 50  # turns shown and given back to the model; older ones stay in memory


def is_turn(m: MemoryItem) -> bool:
    """A message of the chat's own: the user's (tagged ``user``) or a reply, not of a
    one-question ``localmem ask`` (its conversations are ``ask-...``)."""
    return (
        m.source == "chat"
        and bool(m.session)
        and not str(m.session).startswith("ask-")
        and ("user" in m.tags or m.is_reply)
    )


def last_conversation(mem: Memory, limit: int = SCROLLBACK) -> tuple[str, list[MemoryItem]] | None:
    """The newest chat conversation: its id and its last ``limit`` turns, oldest first (None
    when the store has none). Imports and the MCP server write episodic memories too; only
    the chat's own turns count, or a ChatGPT export would take over the chat."""
    newest = next(
        (m for m in mem.list(kind="episodic", source="chat", limit=50) if is_turn(m)), None
    )
    if newest is None or newest.session is None:
        return None
    # Newest first, then reversed: the cap keeps the end of the conversation, not its start.
    rows = mem.list(kind="episodic", session=newest.session, source="chat", limit=2 * limit)
    turns = [m for m in rows if is_turn(m)][:limit]
    return newest.session, turns[::-1]


def scrollback(turns: list[MemoryItem]) -> list[ChatMessage]:
    """The boxes that show an earlier conversation, and a last one saying it goes on."""
    shown = []
    for m in turns:
        w = ChatMessage(m.text, role="assistant" if m.is_reply else "user")
        if "cancelled" in m.tags:
            w.border_subtitle = "stopped"
        shown.append(w)
    shown.append(
        ChatMessage(
            f"Your conversation of {turns[-1].when:%Y-%m-%d %H:%M} goes on "
            f"({len(turns)} earlier messages); /new starts a new one.",
            role="system",
        )
    )
    return shown
