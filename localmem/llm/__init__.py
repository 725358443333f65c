"""Local LLM engines: a chat model in this process, no server, no network."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localmem.errors import EngineCrashError, InvalidArgumentError, LocalmemError
from localmem.llm.discover import InstalledModel, installed
from localmem.llm.engine import (
    ChatEngine,
    Engine,
    GenerationStats,
    LoadStats,
    Message,
    parse_budget,
)
from localmem.llm.flash import FlashEngine
from localmem.llm.llamacpp import LlamaCppEngine

__all__ = [
    "ENGINES",
    "ChatEngine",
    "Engine",
    "FlashEngine",
    "GenerationStats",
    "InstalledModel",
    "LlamaCppEngine",
    "LoadStats",
    "Message",
    "current_engine",
    "engine_name",
    "installed",
    "open_engine",
    "parse_budget",
]

log = logging.getLogger("localmem.llm")

ENGINE_ENV = "LOCALMEM_ENGINE"  # which engine runs the chat model when none is named
ENGINES: dict[str, Callable[..., ChatEngine]] = {
    "llama": LlamaCppEngine,
    "flash": FlashEngine,
}
# "auto" (the default): llama.cpp, which runs every GGUF architecture and quantization,
# unless it crashed in its check on this CPU (``probe``); then the flash engine.
ENGINE_CHOICES = ("auto", *ENGINES)

_lock = threading.Lock()
_current: ChatEngine | None = None


def engine_name(engine: str | None) -> str:
    """The engine asked for: ``engine``, else ``$LOCALMEM_ENGINE``, else "auto"."""
    name = engine or os.environ.get(ENGINE_ENV) or "auto"
    if name not in ENGINE_CHOICES:
        raise InvalidArgumentError(
            f"unknown engine {name!r}: choose one of {', '.join(ENGINE_CHOICES)} "
            f"(--engine, or ${ENGINE_ENV})"
        )
    return name


def _llama_runs_here(model: Path) -> tuple[bool, str]:
    """Whether llama.cpp survived its check on this CPU (run once per build and CPU, on the
    embedded model when it is installed: it loads in a second), and what happened if not."""
    from localmem import registry
    from localmem.llm import probe
    from localmem.llm.llamacpp import resolve

    with contextlib.suppress(LocalmemError):  # no embedded model: the check runs the user's
        model = resolve(registry.default_name("llm"))[1]
    result = probe.probe(model)
    return not result.crashed, result.detail


def open_engine(
    model: str | Path | None = None, *, engine: str | None = None, **options: Any
) -> ChatEngine:
    """The process's one chat model: loaded on first use, shared by later calls naming the
    same model and engine with the same options; naming another closes the previous one
    first (two models' weights and KV caches in one process is rarely what anyone wants).
    ``engine``: "auto" (the default: llama.cpp unless it crashes on this CPU, then the flash
    engine; ``engine.notice`` says so), "llama" (llama.cpp; ``EngineCrashError`` where it
    crashes) or "flash" (localmem's own)."""
    global _current
    from localmem.llm.llamacpp import resolve
    from localmem.llm.probe import crash_advice, rebuild_advice

    name = engine_name(engine)
    with _lock:
        _, path = resolve(model)
        notice = ""
        if name != "flash":
            runs, detail = _llama_runs_here(path)
            if not runs and name == "llama":
                raise EngineCrashError(f"{detail} when checked on this machine: {crash_advice()}")
            if not runs:
                notice = (
                    f"{detail} when checked on this machine, so localmem's own engine answers "
                    f"(--engine flash); to use llama.cpp, {rebuild_advice()}"
                )
            name = "llama" if runs else "flash"
        fell_back = notice
        big = _too_big(path, options)
        notice = f"{notice}; {big}" if notice and big else notice or big
        cls = ENGINES[name]
        cur, previous = _current, None
        if cur is not None and not cur._closed:
            if type(cur) is cls and cur.path == path and cur._options == options:
                cur.notice = notice  # this call's reason, not the one of the call that opened it
                return cur
            previous = (type(cur), cur.path, cur._options, cur.notice)
            cur.close()
        try:
            _current = cls(model, **options)
        except LocalmemError as e:
            if previous is not None:  # the model in use before stays in use
                _current = _reopen(*previous)
            if fell_back:
                raise EngineCrashError(
                    f"{fell_back}; but the flash engine cannot run it: {e}"
                ) from e
            raise
        _current._options = options
        _current.notice = notice  # the CLI and the chat show it
        if notice:
            log.info("%s", notice)
        return _current


def _reopen(
    cls: Callable[..., ChatEngine], path: Path, options: dict[str, Any], notice: str
) -> ChatEngine | None:
    """The engine that was closed for a model that then failed to open, opened again (None
    if it cannot be: the caller's error stands either way)."""
    try:
        engine = cls(path, **options)
    except LocalmemError as e:
        log.warning("could not reopen %s after a failed switch: %s", path, e)
        return None
    engine._options, engine.notice = options, notice
    return engine


def current_engine() -> ChatEngine | None:
    """The chat model open_engine() holds now, if one is open."""
    return _current if _current is not None and not _current._closed else None


def _too_big(path: Path, options: dict[str, Any]) -> str:
    """A warning when the weights are larger than the memory free now: they would page in
    from disk on every token (mmap), seconds a token; the flash engine streams them under a
    budget instead."""
    from localmem import machine

    if options.get("memory_budget"):
        return ""
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    free = machine.available_memory()
    if not free or size <= free:
        return ""
    return (
        f"{path.name} is {size / 1e9:.1f} GB and {free / 1e9:.1f} GB of memory is free: "
        "it will read its weights from disk again and again and answer slowly; "
        "--engine flash --memory-budget 50% runs it in less memory"
    )


@atexit.register
def _close_current() -> None:
    # Before the interpreter tears modules down: llama-cpp-python's finalizers need theirs.
    if _current is not None:
        _current.close()
