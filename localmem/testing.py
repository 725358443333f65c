"""Synthetic data for tests, the doctor's self-check and benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from localmem.store.selfcheck import (  # noqa: F401  (the tests' and benches' vector data)
    cluster_centres,
    clustered_vectors,
    exact_top_k,
    recall_at_k,
)


class HashEmbedder:
    """A fake embedder for fast unit tests: a unit vector per text from hashed words, so
    texts sharing words are similar. Never the only test of a feature (see tests/)."""

    def __init__(self, dim: int = 64, model_id: str = "hash-test") -> None:
        self._dim, self._model_id = dim, model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts, *, progress=None):  # type: ignore[no-untyped-def]
        import hashlib
        import re

        def h(s: str) -> int:
            return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")

        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for r, t in enumerate(texts):
            # Each word adds +-1 in three hashed dimensions (a count sketch): texts sharing
            # words are similar, and one collision does not make two texts identical.
            for w in re.findall(r"\w+", t.lower()):
                for j in range(3):
                    x = h(f"{j}:{w}")
                    out[r, x % self._dim] += 1.0 if (x >> 32) & 1 else -1.0
            if not out[r].any():  # no words, or all cancelled: still a fixed vector per text
                out[r, h(t) % self._dim] = 1.0
            out[r] /= np.linalg.norm(out[r])
        if progress is not None:
            progress(len(texts), len(texts))
        return out


class EchoEngine:
    """A fake chat engine for fast unit tests: replies "echo: <the last user message>" word
    by word (the message the user wrote: after the assistant's "Question:" label when memory
    notes come before it), counts a token per word. Records every prompt it was sent. Never
    the only test of a feature: tests/test_llm.py and tests/test_assistant_model.py run the
    real model."""

    name = "echo"
    notice = ""  # open_engine's word when it chose another engine than the one asked

    def __init__(self, n_ctx: int = 4096, *, delay: float = 0.0) -> None:
        from localmem.llm.engine import GenerationStats, LoadStats

        self.n_ctx, self.delay = n_ctx, delay
        self.load_stats = LoadStats("echo", 0.0, 0, 0, 0, 0, n_ctx, 1)
        self.last_stats = GenerationStats()
        self.prompts: list[list[dict[str, str]]] = []
        self.prepared: list[dict[str, str]] = []  # the last conversation given to prepare()
        # Held while a reply streams, as the real engines hold theirs: a caller that needs
        # the engine while a stream it left open holds it fails here instead of hanging.
        self._lock = threading.Lock()

    def _hold(self) -> None:
        if not self._lock.acquire(timeout=5):
            raise RuntimeError("the engine is held by a reply stream nobody closed")

    def count_text_tokens(self, text: str) -> int:
        return len(text.split())

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(4 + self.count_text_tokens(m["content"]) for m in messages) + 3

    def generate(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        from localmem.llm.engine import GenerationStats

        self.prompts.append([dict(m) for m in messages])
        self.last_stats = st = GenerationStats(prompt_tokens=self.count_tokens(messages))
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        from localmem.assistant import ANSWER_RULE, MESSAGE_HEAD, NOTE_HEAD

        if last.startswith(NOTE_HEAD) and f"\n{MESSAGE_HEAD} " in last:
            last = last.rsplit(f"\n{MESSAGE_HEAD} ", 1)[1].removesuffix(f"\n{ANSWER_RULE}")

        def stream() -> Iterator[str]:
            self._hold()
            try:
                for i, w in enumerate(["echo:", *last.split()][:max_tokens]):
                    if cancel is not None and cancel.is_set():
                        st.cancelled, st.stop_reason = True, "cancelled"
                        return
                    st.generated_tokens += 1
                    if self.delay:
                        time.sleep(self.delay)  # a slow model, to cancel mid-reply
                    yield w if i == 0 else " " + w
                st.stop_reason = "stop"
            finally:
                self._lock.release()

        return stream()

    def prepare(self, messages: Sequence[dict[str, str]]) -> int:
        self._hold()
        try:
            self.prepared = [dict(m) for m in messages]
        finally:
            self._lock.release()
        return 0

    def close(self) -> None:
        pass
