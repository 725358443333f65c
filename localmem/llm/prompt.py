"""What every engine does to a conversation before its model sees it: check the messages,
render them with the model's own chat template (from the GGUF metadata, through
llama-cpp-python's vocabulary), tokenize; and what a cached prompt shares with a new one
(a common prefix, or the prefix plus a span cut out — an earlier turn's memory note)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localmem.errors import CorruptFileError, InvalidArgumentError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}

# A cut is worth making when at least this many cached tokens after it are kept.
SPLICE_MIN_TOKENS = 16
# Stands for the next user message when rendering what comes before it (private-use code
# points: no message contains them by accident, and a template copies them as they are).
_NEXT = "\ue000next\ue001"


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def find_splice(cached: Sequence[int], toks: Sequence[int]) -> tuple[int, int] | None:
    """When ``toks`` is ``cached`` with one span ``[begin, end)`` cut out and at least
    ``SPLICE_MIN_TOKENS`` cached tokens after the span kept, that span; else None."""
    n = len(cached)
    lcp = common_prefix(cached, toks)
    if lcp >= n or lcp >= len(toks):
        return None
    head = toks[lcp]
    for k in range(1, n - lcp):
        if cached[lcp + k] == head and (
            common_prefix(cached[lcp + k :], toks[lcp:]) >= SPLICE_MIN_TOKENS
        ):
            return lcp, lcp + k
    return None


def check_messages(messages: Sequence[Message]) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise InvalidArgumentError(
                f"message {i} must be a dict with a str 'content', got {m!r}"
            )
        if m.get("role") not in ("system", "user", "assistant"):
            raise InvalidArgumentError(
                f"message {i} has role {m.get('role')!r}; use system, user or assistant"
            )


class ChatPrompt:
    """Renders and tokenizes with a llama.cpp vocabulary: ``vocab`` is llama-cpp-python's
    ``_internals.LlamaModel`` — a loaded model's, or one opened with ``vocab_only`` when
    another engine runs the weights (no context, no weights). ``template``: a Jinja chat
    template to use instead of the file's (for a base model that carries none)."""

    def __init__(self, vocab: Any, path: Path, *, template: str | None = None) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = template or vocab.metadata().get("tokenizer.chat_template")
        if not template:
            raise CorruptFileError(
                f"{path} has no chat template in its metadata (tokenizer.chat_template): "
                "use an instruction-tuned GGUF that carries one"
            )
        self.vocab = vocab
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(vocab.token_eos()),
            bos_token=vocab.token_get_text(vocab.token_bos()),
            add_generation_prompt=True,
        )

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        check_messages(messages)
        prompt = self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        toks: list[int] = self.vocab.tokenize(prompt.encode("utf-8"), False, True)
        return toks

    def next_turn_prefix(self, messages: Sequence[Message]) -> list[int]:
        """The tokens every prompt that continues ``messages`` with a user message starts
        with: the template up to where that message's text goes, less its last token (which
        the text could merge with). Empty when the template does not place the text after
        the conversation."""
        check_messages(messages)
        msgs = [*messages, {"role": "user", "content": _NEXT}]
        prompt = self._formatter(messages=msgs).prompt  # type: ignore[arg-type]
        cut = prompt.find(_NEXT)
        if cut <= 0:
            return []
        toks: list[int] = self.vocab.tokenize(prompt[:cut].encode("utf-8"), False, True)
        return toks[:-1]

    def text_tokens(self, text: str, *, special: bool = False) -> list[int]:
        toks: list[int] = self.vocab.tokenize(text.encode("utf-8"), False, special)
        return toks


def open_vocab(path: Path) -> Any:
    """llama.cpp's vocabulary of a GGUF file, without its weights or a context."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    try:
        return LlamaModel(path_model=str(path), params=params, verbose=False)
    except ValueError as e:
        raise CorruptFileError(
            f"llama.cpp could not read the vocabulary of {path} ({e}): the file is damaged "
            "or not a chat model; download it again"
        ) from e
