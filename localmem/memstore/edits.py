"""Changing a stored memory safely when more than one writer may touch it.

A change to a memory reads it, changes it and writes it back. The chat's background sync
imports other devices' changes while the chat itself reinforces, pins and forgets, and
the MCP server may do either in another process: without a lock, one writer's read-change-
write would silently undo the other's. ``EditLock`` makes each read-change-write whole:
an in-process lock for threads and a ``flock`` on ``<store>/EDIT.lock`` for processes.
It is held for the read and the write, and for what a local change embeds between them
(one memory's new text, a promotion); an import embeds before it takes the lock.

Also here: ``relinked`` (a memory's references to others under new ids) and
``LOCAL_DROP``, the log record that marks a deletion as this device's own business (a
memory that faded here, a renumbered copy), which sync does not send as a purge.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localmem.errors import InvalidArgumentError
from localmem.store import records as rec
from localmem.text.validate import MAX_SOURCES, check_text

LOCAL_DROP = rec.FIRST_USER_TYPE + 1  # payload: <q id>: the DELETE after it is not a purge
_ID = struct.Struct("<q")


def local_drop(id: int) -> bytes:
    return _ID.pack(id)


def local_drop_id(payload: bytes) -> int | None:
    return _ID.unpack(payload)[0] if len(payload) == _ID.size else None


class EditLock:
    """Reentrant; exclusive across threads and processes (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mu = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> EditLock:
        self._mu.acquire()
        try:
            if self._depth == 0:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._mu.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mu.release()

    def close(self) -> None:
        with self._mu:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def relinked(meta: dict[str, Any], new: Mapping[int, int]) -> dict[str, Any]:
    """``meta`` with its references to other memories (superseded_by, merged_into, the ids
    in sources) moved to their new ids; a reference to a memory not renumbered is dropped
    (it named a memory of the old numbering, now someone else's id)."""
    out = dict(meta)
    for ref in ("superseded_by", "merged_into"):
        if out.get(ref) is not None:
            out[ref] = new.get(out[ref])
    if out.get("sources"):
        out["sources"] = [
            dict(s, id=new.get(s["id"])) if isinstance(s, dict) and "id" in s else s
            for s in out["sources"]
        ]
    return out


def with_version(meta: Mapping[str, Any], old: str, new: str, now: float) -> list[dict[str, Any]]:
    """``meta``'s sources with ``old`` kept as the version an edit to ``new`` replaces
    (``{"edited": time, "text": old, "to": digest of new}``: an undo checks the text is
    still the edit's). Past ``MAX_SOURCES`` entries the oldest go, never this one."""
    kept = [*meta.get("sources", []), {"edited": now, "text": old, "to": _digest(new)}]
    return kept[-MAX_SOURCES:]


def last_version(meta: Mapping[str, Any], text: str) -> tuple[str, list[dict[str, Any]]]:
    """The text before the last edit of a memory whose text is ``text``, and its sources
    without that version. InvalidArgumentError when there is none to go back to: never
    edited, changed since (a duplicate merged into it), or a version entry that is not one
    (sources come from imports and other devices too)."""
    kept = list(meta.get("sources", []))
    last = max(
        (i for i, s in enumerate(kept) if isinstance(s, dict) and "edited" in s), default=None
    )
    if last is None:
        raise InvalidArgumentError("it was never edited: there is nothing to undo")
    entry = kept.pop(last)
    if entry.get("to") != _digest(text):
        raise InvalidArgumentError(
            "its text changed since its last edit (a duplicate was merged into it): edit it "
            "to the text you want instead"
        )
    try:
        old = check_text(entry.get("text"))
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"its last version is damaged ({e})") from None
    return old, kept


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
