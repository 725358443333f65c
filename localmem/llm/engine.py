"""The interface every LLM engine offers the assistant, and the figures it reports.

Small on purpose: a chat-templated prompt goes in, text pieces stream out. Two engines
implement it: llama.cpp (``llamacpp.py``, weights mmap'd) and localmem's own flash engine
(``flash.py``, which can hold a model under a memory budget smaller than its weights and
read the rest from disk as it is needed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from localmem.errors import InvalidArgumentError
from localmem.llm.prompt import ChatPrompt, Message
from localmem.machine import io_read_bytes, rss_bytes

__all__ = ["ChatEngine", "Engine", "GenerationStats", "LoadStats", "Message", "parse_budget"]


@dataclass
class GenerationStats:
    """What one generation cost. Times in seconds; bytes from /proc/self/io."""

    prompt_tokens: int = 0  # the whole prompt
    reused_tokens: int = 0  # of which were already in the KV cache (a previous turn's)
    spliced: int = 0  # cached tokens the prompt no longer has, cut out of the KV cache
    generated_tokens: int = 0
    ttft: float = 0.0  # call to first token: the prompt's evaluation and one sample
    generation_seconds: float = 0.0  # first token to last
    read_bytes: int = 0  # from storage during the call (weights paged in, say)
    cancelled: bool = False
    stop_reason: str = ""  # "stop" (end of turn), "length" (max_tokens), "cancelled"

    @property
    def prompt_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.reused_tokens
        return evaluated / self.ttft if self.ttft > 0 else 0.0

    @property
    def generation_tokens_per_s(self) -> float:
        n = self.generated_tokens - 1  # the first token's time is in ttft
        return n / self.generation_seconds if n > 0 and self.generation_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_tokens_per_s"] = self.prompt_tokens_per_s
        d["generation_tokens_per_s"] = self.generation_tokens_per_s
        return d


@dataclass
class LoadStats:
    path: str
    seconds: float
    file_bytes: int
    read_bytes: int  # from storage while loading: mmap'd weights are not read up front
    rss_bytes_after: int
    rss_file_bytes_after: int  # of which mapped file pages (the weights)
    n_ctx: int
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def since(
        cls, path: Path, t0: float, io0: int, n_ctx: int, threads: int, **extra: Any
    ) -> LoadStats:
        """A load that started at ``t0`` (perf_counter) with ``io0`` bytes read so far."""
        return cls(
            path=str(path),
            seconds=time.perf_counter() - t0,
            file_bytes=path.stat().st_size,
            read_bytes=io_read_bytes() - io0,
            rss_bytes_after=rss_bytes(),
            rss_file_bytes_after=rss_bytes("RssFile"),
            n_ctx=n_ctx,
            threads=threads,
            extra=extra,
        )


@runtime_checkable
class Engine(Protocol):
    """A loaded chat model. Implementations serialize calls with a lock: one generation at
    a time per process."""

    name: str
    n_ctx: int
    load_stats: LoadStats
    last_stats: GenerationStats
    notice: str  # why open_engine chose this engine when it was not the one asked for

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of ``messages`` rendered with the model's chat template (with the
        assistant's opening, as ``generate`` would send them)."""
        ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens of plain text (no template), for budgeting parts of a prompt."""
        ...

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Streams the assistant's reply to ``messages`` as text pieces. A prompt sharing a
        prefix with the previous call's prompt and reply reuses their KV cache. Setting
        ``cancel`` (or closing the iterator) stops it after the current token."""
        ...

    def prepare(self, messages: Sequence[Message]) -> int:
        """Readies the KV cache, while the user is still typing, for a prompt that will
        continue ``messages`` with a user message: what the next ``generate`` would do to
        the cache before reading that message, done now. Returns the tokens evaluated."""
        ...

    def close(self) -> None: ...


def check_options(n_ctx: int | None, threads: int | None) -> None:
    """The options every engine takes, checked the same way."""
    if n_ctx is not None and (
        isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or not 256 <= n_ctx <= 1 << 20
    ):
        raise InvalidArgumentError(f"n_ctx must be an int in [256, 1048576], got {n_ctx!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads must be a positive int, got {threads!r}")


def check_generation(max_tokens: int, temperature: float) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgumentError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if not 0.0 <= float(temperature) <= 5.0:
        raise InvalidArgumentError(f"temperature must be in [0, 5], got {temperature!r}")


PREPARE_MAX_TOKENS = 64


_E = TypeVar("_E", bound="ChatEngine")


class ChatEngine:
    """What every engine does the same way around its model: the lock that serializes
    calls, counting tokens, checking a call and its prompt, closing. A subclass loads its
    model (setting ``name``, ``path``, ``n_ctx``, ``load_stats``, ``_prompt``) and
    implements ``_stream`` (called with the checked arguments) and ``_release``."""

    ENGINE = ""  # the name info() reports
    name: str
    path: Path
    n_ctx: int
    load_stats: LoadStats
    _prompt: ChatPrompt

    def __init__(self) -> None:
        self.last_stats = GenerationStats()
        self._lock = threading.Lock()
        self._closed = False
        self._options: dict[str, Any] = {}  # what open_engine was given, to share it
        self.notice = ""  # why open_engine chose this engine when it was not the one asked

    def count_tokens(self, messages: Sequence[Message]) -> int:
        with self._lock:
            self._check_open()
            return len(self._prompt.tokens(messages))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of plain text (no template), for budgeting parts of a prompt."""
        with self._lock:
            self._check_open()
            return len(self._prompt.text_tokens(text))

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Streams the assistant's reply to ``messages`` (see ``Engine.generate``)."""
        check_generation(max_tokens, temperature)
        return self._stream(messages, max_tokens, float(temperature), cancel)

    def _stream(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event | None,
    ) -> Iterator[str]:
        raise NotImplementedError

    def prepare(self, messages: Sequence[Message]) -> int:
        """See ``Engine.prepare``. At most ``PREPARE_MAX_TOKENS`` are evaluated: more means
        the cache holds another prompt (an extraction, a summary), and the next turn reads
        its prompt in any case; holding the model for seconds here would only delay it."""
        with self._lock:
            self._check_open()
            toks = self._prompt.next_turn_prefix(messages)
            return self._prepare(toks) if 0 < len(toks) < self.n_ctx else 0

    def _prepare(self, toks: list[int]) -> int:
        """Makes the cache hold ``toks`` (under the lock); the tokens evaluated."""
        return 0

    def _prompt_tokens(self, messages: Sequence[Message], max_tokens: int) -> list[int]:
        """The prompt's tokens, refused when it and the reply cannot fit the context.
        Called under the lock."""
        self._check_open()
        toks = self._prompt.tokens(messages)
        if len(toks) + max_tokens > self.n_ctx:
            raise InvalidArgumentError(
                f"the prompt is {len(toks)} tokens and the reply may take {max_tokens}: "
                f"more than the model's context of {self.n_ctx}; shorten the conversation "
                "or open the engine with a larger n_ctx"
            )
        return toks

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this engine is closed")

    def _release(self) -> None:
        """Frees the model; called once, under the lock."""
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.ENGINE,
            "model": self.name,
            "path": str(self.path),
            "n_ctx": self.n_ctx,
            "load": self.load_stats.__dict__,
        }


_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "KIB": 1024, "MIB": 1 << 20, "GIB": 1 << 30}  # fmt: skip


def parse_budget(value: int | float | str) -> int | float:
    """A memory budget as a user writes it: ``"60%"`` or ``0.6`` (that fraction of the
    model's weights), ``"512MB"``, ``"1.5G"``, ``"800MiB"`` or an int (bytes). Returns a
    float fraction in (0, 1] or an int byte count."""
    bad = InvalidArgumentError(
        f"a memory budget is a share of the weights (60%, 0.6) or a size (512MB, 1.5GB), "
        f"got {value!r}"
    )
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        try:
            if text.endswith("%"):
                value = float(text[:-1]) / 100
            else:
                num = text.rstrip("BKMGI")
                unit = text[len(num) :]
                if unit not in _UNITS:
                    raise bad
                f = float(num)
        except ValueError:
            raise bad from None
        if not text.endswith("%"):
            if unit == "" and f > 1:  # "2": 2 bytes or 2 GB? Neither is meant: ask
                raise InvalidArgumentError(
                    f"a memory budget needs a unit: {text}% of the weights, or {text}MB / "
                    f"{text}GB? (a bare number is a share up to 1, e.g. 0.6)"
                )
            value = f if unit == "" else int(f * _UNITS[unit])
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise bad
        return value
    if isinstance(value, int) and value > 0:
        return value
    raise bad
