"""Checks every chat engine must pass, run on the real model by each engine's tests."""

from __future__ import annotations

from typing import Any

import pytest

from localmem.errors import InvalidArgumentError
from localmem.llm.engine import PREPARE_MAX_TOKENS

NOTE = {
    "role": "system",
    "content": "Notes: " + " ".join(f"fact {i} is {i * 7}." for i in range(40)),
}
ASK = {"role": "user", "content": "Tell me a short story about a fox."}
NEXT = {"role": "user", "content": "Now one about a crow."}


def _two_turns(engine: Any, *, read_ahead: bool) -> tuple[int, str, Any, int]:
    engine.reset()
    reply = "".join(engine.generate([ASK, NOTE], max_tokens=40, temperature=0))
    convo = [ASK, {"role": "assistant", "content": reply}]
    n = engine.prepare(convo) if read_ahead else 0
    second = "".join(engine.generate([*convo, NEXT], max_tokens=24, temperature=0))
    # What the new message adds to the prompt: its text and its template tokens.
    added = engine.count_tokens([*convo, NEXT]) - engine.count_tokens(convo)
    return n, second, engine.last_stats, added


def check_read_ahead(engine: Any) -> None:
    """prepare() cuts the last turn's note out of the cache and reads the turn's end, so
    the next turn evaluates only its new message; and the reply is the one without it."""
    n, second, st, added = _two_turns(engine, read_ahead=True)
    assert 0 < n <= PREPARE_MAX_TOKENS
    assert st.spliced == 0  # the cut was made ahead
    # Evaluated: the message's block and the assistant's opening, less the user opening
    # (read ahead) — the opening is ~4 tokens in any chat template.
    assert st.prompt_tokens - st.reused_tokens <= added + 2
    _, plain_second, plain, _ = _two_turns(engine, read_ahead=False)
    assert plain.spliced > 100 and plain.reused_tokens < st.reused_tokens
    assert second == plain_second and second.strip()
    # A conversation the cache does not hold: too much to read ahead, nothing done.
    engine.reset()
    assert engine.prepare([{"role": "user", "content": "word " * 200}]) == 0
    with pytest.raises(InvalidArgumentError):
        engine.prepare([{"role": "nobody", "content": "x"}])
