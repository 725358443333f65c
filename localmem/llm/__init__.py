"""Local LLM engines: a chat model in this process, no server, no network."""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from localmem.llm.engine import Engine, GenerationStats, LoadStats, Message
from localmem.llm.llamacpp import LlamaCppEngine

__all__ = ["Engine", "GenerationStats", "LlamaCppEngine", "LoadStats", "Message", "open_engine"]

_lock = threading.Lock()
_current: LlamaCppEngine | None = None


def open_engine(model: str | Path | None = None, **options: Any) -> LlamaCppEngine:
    """The process's one chat model: loaded on first use, shared by later calls naming the
    same model with the same options; naming another closes the previous one first (two
    models' weights and KV caches in one process is rarely what anyone wants)."""
    global _current
    from localmem.llm.llamacpp import resolve

    with _lock:
        _, path = resolve(model)
        cur = _current
        if cur is not None and not cur._closed:
            if cur.path == path and cur._options == options:
                return cur
            cur.close()
        _current = LlamaCppEngine(model, **options)
        _current._options = options
        return _current


@atexit.register
def _close_current() -> None:
    # Before the interpreter tears modules down: llama-cpp-python's finalizers need theirs.
    if _current is not None:
        _current.close()
