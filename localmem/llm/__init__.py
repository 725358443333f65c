"""Local LLM engines: a chat model in this process, no server, no network."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localmem.errors import InvalidArgumentError
from localmem.llm.engine import ChatEngine, Engine, GenerationStats, LoadStats, Message
from localmem.llm.flash import FlashEngine
from localmem.llm.llamacpp import LlamaCppEngine

__all__ = [
    "ENGINES",
    "ChatEngine",
    "Engine",
    "FlashEngine",
    "GenerationStats",
    "LlamaCppEngine",
    "LoadStats",
    "Message",
    "open_engine",
]

ENGINE_ENV = "LOCALMEM_ENGINE"  # which engine runs the chat model when none is named
# llama.cpp stays the default until the flash engine beats it (issue 10's must-show).
ENGINES: dict[str, Callable[..., ChatEngine]] = {
    "llama": LlamaCppEngine,
    "flash": FlashEngine,
}

_lock = threading.Lock()
_current: ChatEngine | None = None


def engine_class(engine: str | None) -> Callable[..., ChatEngine]:
    name = engine or os.environ.get(ENGINE_ENV) or "llama"
    if name not in ENGINES:
        raise InvalidArgumentError(
            f"unknown engine {name!r}: choose one of {', '.join(ENGINES)} "
            f"(--engine, or ${ENGINE_ENV})"
        )
    return ENGINES[name]


def open_engine(
    model: str | Path | None = None, *, engine: str | None = None, **options: Any
) -> ChatEngine:
    """The process's one chat model: loaded on first use, shared by later calls naming the
    same model and engine with the same options; naming another closes the previous one
    first (two models' weights and KV caches in one process is rarely what anyone wants).
    ``engine``: "llama" (llama.cpp, the default) or "flash" (localmem's own)."""
    global _current
    from localmem.llm.llamacpp import resolve

    cls = engine_class(engine)
    with _lock:
        _, path = resolve(model)
        cur = _current
        if cur is not None and not cur._closed:
            if type(cur) is cls and cur.path == path and cur._options == options:
                return cur
            cur.close()
        _current = cls(model, **options)
        _current._options = options
        return _current


@atexit.register
def _close_current() -> None:
    # Before the interpreter tears modules down: llama-cpp-python's finalizers need theirs.
    if _current is not None:
        _current.close()
