"""``FlashEngine``: localmem's own forward pass for llama-architecture GGUF models.

The weights are read by the native core (``csrc/core/llm``): its GGUF reader, its
dequantize-and-dot kernels (AVX2 or scalar, chosen at run time like the vector index's) and
its Llama decoder, on a team of threads that spins between the steps of one token. The
tokenizer and the chat template are the model's own, read through llama-cpp-python's
vocabulary (``vocab_only``: no weights loaded twice). Three modes: dense (every weight
used in place in the file's mmap); under a memory budget (``memory_budget``: what does not
fit is read from disk whole on every token, overlapped with compute, output bit-identical);
neuron mode (``sparsity``: only the neurons that matter, their down columns read from disk
or an LRU cache; approximate).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from localmem.errors import (
    CorruptFileError,
    InvalidArgumentError,
    LocalmemError,
    ModelNotFoundError,
)
from localmem.llm import gguf
from localmem.llm.engine import (
    PREPARE_MAX_TOKENS,
    ChatEngine,
    GenerationStats,
    LoadStats,
    Message,
    check_options,
    parse_budget,
)
from localmem.llm.llamacpp import context_size, resolve
from localmem.llm.prompt import ChatPrompt, common_prefix, find_splice, open_vocab
from localmem.machine import available_memory, io_read_bytes, usable_cpus
from localmem.registry import cache_dir


def _core_build_bundle(gguf_path: Path, out: Path) -> None:
    from localmem import _core

    _core.build_ffn_bundle(str(gguf_path), str(out))


# The sampling llama-cpp-python's create_completion uses by default, so that the two
# engines answer alike: repetition penalty over the last 64 tokens, top-k, top-p, min-p.
REPEAT_PENALTY, REPEAT_LAST_N, TOP_K, TOP_P, MIN_P = 1.1, 64, 40, 0.95, 0.05


def sample(
    logits: np.ndarray, recent: Sequence[int], temperature: float, rng: np.random.Generator
) -> int:
    """One token from ``logits`` (float32, n_vocab): greedy at temperature 0."""
    z = logits.astype(np.float64)
    if recent:
        ids = np.unique(np.asarray(recent[-REPEAT_LAST_N:], dtype=np.int64))
        v = z[ids]
        z[ids] = np.where(v > 0, v / REPEAT_PENALTY, v * REPEAT_PENALTY)
    if temperature <= 0:
        return int(np.argmax(z))
    top = np.argpartition(-z, TOP_K)[:TOP_K]
    top = top[np.argsort(-z[top])]
    p = np.exp((z[top] - z[top[0]]) / temperature)
    p /= p.sum()
    keep = min(int(np.searchsorted(np.cumsum(p), TOP_P)) + 1, len(p))
    keep = min(keep, int(np.count_nonzero(p >= MIN_P * p[0])))
    p = p[: max(keep, 1)]
    return int(top[rng.choice(len(p), p=p / p.sum())])


class FlashEngine(ChatEngine):
    """One GGUF chat model (llama architecture) run by localmem's native engine.
    ``model``: None (the embedded SmolLM2-135M-Instruct), a registry name or a .gguf path;
    ``n_ctx``: context tokens (default from the model and this machine's memory);
    ``threads``: default, the CPUs this process may use. Calls are serialized by a lock.
    ``memory_budget``: the memory the weights may use ("60%", 0.6, "512MB", bytes): what
    does not fit is read from the file on every token, exactly (see ``plan()``);
    ``sparsity`` (with ``neuron_cache``, ``cache_bias``, ``neuron_rule``): neuron mode,
    approximate (see ``_start_neuron_mode``); ``direct_io``: read past the page cache."""

    ENGINE = "flash"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        seed: int = 0,
        memory_budget: int | float | str | None = None,
        sparsity: float | None = None,
        neuron_cache: float = 0.5,
        cache_bias: float = 0.3,
        neuron_rule: str = "activation",
        direct_io: bool = True,
    ) -> None:
        super().__init__()
        check_options(n_ctx, threads)
        self.name, self.path = resolve(model)
        try:
            import llama_cpp
        except ImportError as e:  # pragma: no cover - a dependency
            raise ModelNotFoundError(
                f"llama-cpp-python (for the tokenizer) is not installed ({e})"
            ) from e
        from localmem import _core

        threads = threads or usable_cpus()
        io0, t0 = io_read_bytes(), time.perf_counter()
        # Keys and values are f16, as llama.cpp's: the same context fits the same memory.
        n_ctx = context_size(gguf.read_metadata(self.path), n_ctx, available_memory())
        self._model = _core.LlamaModel(str(self.path), n_ctx, threads)
        self._vocab = open_vocab(self.path)
        self._prompt = ChatPrompt(self._vocab, self.path)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self.n_ctx = int(self._model.n_ctx)
        extra: dict[str, Any] = {"mode": "dense"}
        if memory_budget is not None and sparsity is not None:
            raise InvalidArgumentError("give memory_budget or sparsity (neuron mode), not both")
        if memory_budget is not None:
            extra = self._plan_memory(memory_budget, direct_io)
        elif sparsity is not None:
            extra = self._start_neuron_mode(
                sparsity, neuron_cache, cache_bias, neuron_rule, direct_io
            )
        self.load_stats = LoadStats.since(
            self.path, t0, io0, self.n_ctx, int(self._model.threads),
            engine="flash", kernel=self._model.kernel,
            weight_bytes=int(self._model.weight_bytes), **extra,
        )  # fmt: skip
        self._cached: list[int] = []  # the tokens whose keys and values the cache holds
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ memory budget

    def _plan_memory(self, budget: int | float | str, direct_io: bool) -> dict[str, Any]:
        """Fits the weights into ``budget`` (see ``parse_budget``): embeddings/head, norms,
        attention and as many whole FFN tensors as fit are copied into memory the kernel
        cannot evict; the other FFN tensors are read from the GGUF on every token, whole and
        in the file's own layout (so the output is the dense one's, bit for bit), by an I/O
        thread that reads ahead of the computation."""
        m = self._model
        value = parse_budget(budget)
        total = int(m.weight_bytes)
        nbytes = int(value * total) if isinstance(value, float) else value
        try:
            plan = m.plan_memory(nbytes, direct_io)
        except InvalidArgumentError as e:  # the budget: say which model it is too small for
            raise InvalidArgumentError(f"{self.path.name}: {e}") from e
        return {"mode": "planned" if plan["slots"] else "pinned", "plan": dict(plan)}

    @property
    def weight_bytes(self) -> int:
        """The bytes of the model's weights."""
        return int(self._model.weight_bytes)

    @property
    def least_budget(self) -> int:
        """The smallest memory budget this model runs in (bytes): embeddings/head, norms,
        attention and the read buffers."""
        return int(self._model.min_budget)

    def plan(self) -> dict[str, Any]:
        """What the memory budget bought ({} in dense mode): ``budget``, ``pinned_bytes``,
        ``streamed_bytes`` (read per token), ``slots`` x ``slot_bytes`` (read buffers),
        ``ffn_pinned``/``ffn_streamed`` (tensor counts), ``direct_io``, ``streamed`` (names)."""
        return dict(self._model.plan())

    def plan_summary(self, *, brief: bool = False) -> str:
        """One line for doctor (or, ``brief``, a few words for the chat's status bar): what
        is pinned, what streams per token, in reads of what size."""
        p = self.plan()
        if not p:
            return "all weights mmap'd"
        mb = 1e6
        pinned = f"{p['pinned_bytes'] / mb:.0f} MB pinned"
        if not p["slots"]:
            return pinned if brief else f"budget {p['budget'] / mb:.0f} MB: {pinned} (every weight)"
        if brief:
            return (
                f"{pinned}, {p['streamed_bytes'] / mb:.0f} MB/token streamed in "
                f"{p['slot_bytes'] / 1024:.0f} KiB reads"
            )
        return (
            f"budget {p['budget'] / mb:.0f} MB: {pinned}, {p['streamed_bytes'] / mb:.0f} MB/token "
            f"streamed ({p['ffn_streamed']} FFN tensors, reads of {p['slot_bytes'] / 1024:.0f} "
            f"KiB{', O_DIRECT' if p['direct_io'] else ''}, {p['slots']} buffers)"
        )

    def weight_stream_stats(self) -> dict[str, Any]:
        """Bytes, reads and waits of the weight stream since the last reset ({} if none)."""
        return dict(self._model.weight_stream_stats())

    # ------------------------------------------------------------------ streaming

    def _start_neuron_mode(
        self, sparsity: float, cache: float, bias: float, rule: str, direct_io: bool
    ) -> dict[str, Any]:
        """Neuron mode: per token and layer, the ``1 - sparsity`` share of the FFN's neurons
        with the largest |SiLU(g)*u| (``rule="activation"``: gate and up stay in memory) or
        |SiLU(g)| (``rule="gate"``: up rows are read too) are used, and their down columns
        are read from the bundled file (derived from the GGUF once, down requantized to
        Q8_0) unless an LRU cache of ``cache`` x n_ff neurons per layer holds them; a
        cached neuron's score counts ``1 + bias`` times. Approximate: see bench/flash.py."""
        m = self._model
        rules = {"activation": 0, "gate": 1}
        if rule not in rules:
            raise InvalidArgumentError(f"neuron_rule must be one of {sorted(rules)}, got {rule!r}")
        limits = (("sparsity", sparsity, 0.0, 0.99), ("neuron_cache", cache, 0.0, 1.0),
                  ("cache_bias", bias, 0.0, 10.0))  # fmt: skip
        for name, v, lo, hi in limits:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise InvalidArgumentError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        n_ff = int(m.config["n_ff"])
        bundle = self._bundle_path()
        for attempt in (0, 1):
            if not bundle.exists():
                bundle.parent.mkdir(parents=True, exist_ok=True)
                _core_build_bundle(self.path, bundle)
            try:
                m.enable_streaming(str(bundle), direct_io, 1.0 - sparsity, rules[rule],
                                   int(cache * n_ff), bias)  # fmt: skip
                break
            except CorruptFileError:
                if attempt:
                    raise
                bundle.unlink(missing_ok=True)  # damaged: rebuilt from the GGUF
        return {
            "mode": "neuron",
            "sparsity": sparsity,
            "neuron_rule": rule,
            "neuron_cache": cache,
            "cache_bias": bias,
            "resident_bytes": int(m.resident_weight_bytes),
            "bundle": str(bundle),
            "direct_io": direct_io,
        }

    def _bundle_path(self) -> Path:
        st = self.path.stat()
        return cache_dir() / "bundles" / f"{self.path.stem}-{st.st_size}-{st.st_mtime_ns}.ffn"

    def stream_stats(self) -> dict[str, Any]:
        """Neuron mode's reads since the last reset ({} in other modes): ``bytes_read``,
        ``reads``, ``neurons_active``/``missing``/``read`` summed over ``token_layers``."""
        return dict(self._model.stream_stats())

    # ------------------------------------------------------------------ prompt

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """The token ids of ``text`` (special tokens such as ``<|im_start|>`` parsed)."""
        return self._prompt.text_tokens(text, special=special)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position of ``tokens`` evaluated from an empty cache
        (n, n_vocab), for quality checks (agreement, perplexity). Resets the cache."""
        with self._lock:
            self._check_open()
            self._model.truncate(0)
            self._cached = []
            out = self._model.eval(np.asarray(tokens, dtype=np.int32), all_logits=True)
            self._model.truncate(0)
            return out

    # ------------------------------------------------------------------ generation

    def _stream(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event | None,
    ) -> Iterator[str]:
        with self._lock:
            toks = self._prompt_tokens(messages, max_tokens)
            spliced = self._splice(toks)
            keep = min(common_prefix(self._cached, toks), len(toks) - 1)
            self._model.truncate(keep)
            del self._cached[keep:]
            st = GenerationStats(prompt_tokens=len(toks), reused_tokens=keep, spliced=spliced)
            self.last_stats = st
            io0, t0 = io_read_bytes(), time.perf_counter()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._vocab.vocab
            try:
                logits = self._model.eval(np.asarray(toks[keep:], dtype=np.int32))[0]
                self._cached = list(toks)
                recent = list(toks[-REPEAT_LAST_N:])
                t_first = t0
                for i in range(max_tokens):
                    tok = sample(logits, recent, temperature, self._rng)
                    now = time.perf_counter()
                    if i == 0:
                        t_first, st.ttft = now, now - t0
                    if self._is_eog(vocab, tok):
                        st.stop_reason = "stop"
                        break
                    st.generated_tokens += 1
                    st.generation_seconds = now - t_first
                    piece = decoder.decode(self._vocab.detokenize([tok]))
                    if piece:
                        yield piece
                    if cancel is not None and cancel.is_set():
                        st.cancelled, st.stop_reason = True, "cancelled"
                        break
                    if i == max_tokens - 1:
                        st.stop_reason = "length"
                        break
                    recent.append(tok)
                    logits = self._model.eval(np.asarray([tok], dtype=np.int32))[0]
                    self._cached.append(tok)
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
            except GeneratorExit:
                st.cancelled, st.stop_reason = True, "cancelled"
                raise
            except LocalmemError:
                raise
            except Exception as e:
                raise LocalmemError(f"generation failed in the flash engine: {e}") from e
            finally:
                # The cache holds what was evaluated, whatever stopped the loop.
                self._cached = self._cached[: int(self._model.n_past)]
                st.read_bytes = io_read_bytes() - io0

    def _prepare(self, toks: list[int]) -> int:
        self._splice(toks)
        keep = common_prefix(self._cached, toks)
        tail = toks[keep:]
        if not tail or len(tail) > PREPARE_MAX_TOKENS:
            return 0
        self._model.truncate(keep)
        del self._cached[keep:]
        try:
            self._model.eval(np.asarray(tail, dtype=np.int32))
        except Exception as e:
            self._model.truncate(0)
            self._cached = []
            raise LocalmemError(
                f"the flash engine failed reading the conversation ahead: {e}"
            ) from e
        self._cached += tail
        return len(tail)

    def _splice(self, toks: list[int]) -> int:
        """Cuts an earlier turn's memory note out of the cache (see LlamaCppEngine)."""
        span = find_splice(self._cached, toks)
        if span is None:
            return 0
        begin, end = span
        self._model.remove(begin, end)
        del self._cached[begin:end]
        return end - begin

    def reset(self) -> None:
        """Forgets the KV cache: the next prompt is evaluated from its first token."""
        with self._lock:
            self._check_open()
            self._model.truncate(0)
            self._cached = []

    # ------------------------------------------------------------------ lifetime

    def _release(self) -> None:
        del self._model
        self._vocab.close()
