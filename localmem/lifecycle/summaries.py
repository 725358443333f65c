"""Session summaries: once a conversation has ended, the local LLM writes what the user said
in it that is worth keeping, as one memory that names every turn it came from.

Optional, and only with a chat engine — ``Memory.consolidate(llm=...)``, ``localmem
consolidate --summarize``, ``Assistant.summarize()`` — since rules cannot summarize. A session
has ended when its last turn is ``IDLE_S`` old; one of fewer than ``MIN_TURNS`` turns says
too little to summarize. The summary is a fact of its session (tag ``summary``, key
``summary:<session>``, dated at the last turn) whose ``sources`` are the turns' ids, and it
fades like any memory unless used.

The prompt gives the model the user's side of the conversation only: with both sides, the
embedded 135M model continues the dialogue instead of summarizing it. It still invents. Each
sentence it writes is kept only if nearly all its content words are words the user wrote
(the test LLM extraction uses, without its first-person rule: a summary speaks of "the
user"), and a summary left with no sentence is not stored. That drops what the user never
mentioned, not a wrong combination of what they did ("their sister is allergic to nuts"
from "my sister ... I am allergic to nuts"): a summary is the model's reading, marked as
such (tag ``summary``), and its sources say what it read.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING

from localmem.catalog import Row
from localmem.items import REPLY_TAG, MemoryItem, Progress
from localmem.memstore import MemoryStore
from localmem.text import extract
from localmem.text.validate import check_item

if TYPE_CHECKING:
    from localmem.llm.engine import Engine

IDLE_S = 6 * 3600.0  # a conversation with no turn for six hours has ended
MIN_TURNS = 4
MAX_TOKENS = 96  # two sentences, with room
TURN_CHARS = 400  # a long turn is cut: the summary needs its gist, the budget every turn
TAG = "summary"
PROMPT = (
    "Here is what a user wrote in a chat:\n\n{messages}\n\n"
    "Summarize it in two sentences about the user."
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Words a summary uses to speak of the user that the user never wrote (first five letters,
# as extract.content_stems gives them).
_GLUE = frozenset(
    {
        *("user", "users", "they", "they'", "their", "them", "he", "she", "his", "her"),
        *("who", "which", "about", "now", "share", "said", "menti", "told", "talke", "as"),
        *("also", "both", "while"),
    }
)


def key(session: str) -> str:
    return f"summary:{session}"


def supported(sentence: str, transcript: str) -> bool:
    """Whether a sentence of a summary says only what the conversation says: not a question,
    at least two content words, and at least 80% of them (by their first five letters) in
    the conversation."""
    s = sentence.strip()
    if not s or len(s) > 300 or s.endswith("?"):
        return False
    words = [w for w in extract.content_stems(s) if w not in _GLUE]
    return len(words) >= 2 and extract.mostly_within(words, transcript)


def summarize_session(
    records: MemoryStore,
    llm: Engine,
    session: str,
    now: float,
    *,
    min_turns: int = MIN_TURNS,
    cancel: threading.Event | None = None,
) -> MemoryItem | None:
    """Writes the summary of ``session`` now (whether or not it has ended), in place of
    every earlier summary of it (forgotten, so restorable): the stored memory, or None when
    the session has fewer than ``min_turns`` live turns, the model said nothing the user's
    words support (remembered: the session is not tried again until it goes on), or
    ``cancel`` was set."""
    turns = records.catalog.session_turns(session)
    said = [_text(r) for r in turns if not _by_assistant(r)]
    if len(turns) < min_turns:
        return None
    if not said:  # the assistant's side only: nothing the user said to summarize
        _tried(records, session, float(turns[-1].event_time))
        return None
    messages = "\n".join(f"- {x}" for x in _fit(llm, said))
    reply = "".join(
        llm.generate(
            [{"role": "user", "content": PROMPT.format(messages=messages)}],
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            cancel=cancel,
        )
    )
    if cancel is not None and cancel.is_set():
        return None
    last = float(turns[-1].event_time)
    what = "\n".join(said)
    kept = [s.strip() for s in _SENTENCE.split(reply.strip()) if supported(s, what)]
    if not kept:
        _tried(records, session, last)
        return None
    (item,) = records.write([
        check_item(
            " ".join(kept), kind="fact", session=session, tags=[TAG], importance=0.6,
            source="chat", key=key(session), when=last,
        )
    ])  # fmt: skip
    sources = [
        {"id": int(r.id), "session": session, "created": float(r.created_time)} for r in turns
    ]
    records.rewrite({item.id: ("hot", {"sources": sources})}, now)
    # Looked up after writing, not before generating: a step in another thread or process
    # may have summarized the same conversation meanwhile.
    records.sync()
    for r in records.catalog.others_keyed(session, key(session), item.id):
        records.rewrite({int(r.id): ("forgotten", {})}, records.clock())
        records.sync()
    return records.get(item.id)


def pending(
    records: MemoryStore, now: float | None = None, limit: int = 100_000
) -> list[tuple[str, float]]:
    """(session, time of its last turn) of the conversations that ended by ``now`` (default:
    the store's clock) and have no summary of their last turn yet, oldest first: what the
    next steps summarize. Found by what the store holds, not by a cursor, so that an import
    of old conversations and a conversation that goes on get theirs too."""
    tried = _tried_map(records)
    found = records.catalog.ended_sessions(records.now(now) - IDLE_S, MIN_TURNS, limit + len(tried))
    todo = [(s, t) for s, t in found if tried.get(s, -1.0) < t]
    out = []
    for s, t in todo:
        if _had_here(records, s):
            out.append((s, t))
        else:  # another device's to summarize: not looked at again until it goes on
            _tried(records, s, t)
    return out[:limit]


def _had_here(records: MemoryStore, session: str) -> bool:
    """Whether the conversation's last turn was written on this device (each device that
    syncs issues ids from a range of its own). A device that syncs summarizes its own
    conversations only: the others get the summary with the turns (two devices summarizing
    one conversation would store two summaries of it)."""
    span = records.id_span
    if span is None:
        return True
    turns = records.catalog.session_turns(session)
    return not turns or span[0] <= int(turns[-1].id) < span[1]


def step(
    records: MemoryStore,
    llm: Engine,
    now: float,
    limit: int,
    *,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> int:
    """Summarizes up to ``limit`` of the ``pending`` conversations, oldest first; returns
    how many summaries it stored. ``cancel`` stops it after the current generation;
    ``progress(done, total)`` is called after each conversation."""
    done = 0
    todo = pending(records, now, limit)
    for n, (session, _) in enumerate(todo, 1):
        if cancel is not None and cancel.is_set():
            break
        done += summarize_session(records, llm, session, now, cancel=cancel) is not None
        if progress is not None:
            progress(n, len(todo))
    return done


_TRIED = "summary_tried"  # catalog state: {session: last turn} the model had nothing for
_TRIED_MAX = 1000


def _tried_map(records: MemoryStore) -> dict[str, float]:
    got: dict[str, float] = records.catalog.state_json(_TRIED, dict)
    return got


def _tried(records: MemoryStore, session: str, last: float) -> None:
    """Remembers a conversation the model had nothing supported to say about, up to its
    last turn (a view's state: lost with a rebuilt catalog, which costs one more try)."""
    tried = _tried_map(records)
    tried.pop(session, None)
    tried[session] = last
    records.catalog.set_state(_TRIED, json.dumps(dict(list(tried.items())[-_TRIED_MAX:])))


def _by_assistant(row: Row) -> bool:
    return REPLY_TAG in row.tag_list


def _text(row: Row) -> str:
    return " ".join(str(row.text or "").split())[:TURN_CHARS]


def _fit(llm: Engine, lines: list[str]) -> list[str]:
    """The newest lines that fit in half the model's context (at most 3,000 tokens)."""
    budget = min(llm.n_ctx // 2, 3000)
    out: list[str] = []
    for x in reversed(lines):
        budget -= llm.count_text_tokens(x) + 3
        if budget < 0:
            break
        out.append(x)
    return out[::-1]
