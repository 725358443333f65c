"""The chat's slash commands on the memory store: plain functions of the store (run in a
worker thread by the app), apart from those that drive the app (/model, /new, /help)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localmem import Memory

USAGE = (
    "try /remember TEXT, /forget ID, /restore ID, /pin ID, /unpin ID, /stats, /model [NAME], "
    "/new, /help."
)


def memory_command(mem: Memory, name: str, arg: str) -> tuple[str, int | None] | None:
    """Runs ``/name arg`` if it is a memory command: the chat's answer, and the id of the
    memory it forgot (for the inspector's undo) or None. None: not a memory command (or one
    without the argument it needs). Errors are the store's ``LocalmemError``."""
    if name == "remember" and arg:
        m = mem.remember(arg, kind="note", source="chat")
        return f"Remembered as memory {m.id}.", None
    if name in ("forget", "restore", "pin", "unpin") and arg.isdigit():
        id = int(arg)
        if name == "forget":
            mem.forget(id)
            return f"Forgot memory {id} (`/restore {id}` undoes it).", id
        if name == "restore":
            return f"Restored memory {id}: {mem.restore(id).text}", None
        m = mem.pin(id, name == "pin")
        return f"Memory {id} is {'pinned' if m.pinned else 'no longer pinned'}.", None
    if name == "stats":
        st = mem.stats()
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(st["by_tier"].items()))
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(st["by_kind"].items()))
        return (
            f"{st['memories']} memories ({kinds}); by tier: {tiers}; "
            f"embedding model {st['model']}; store {st['path']}"
        ), None
    return None
