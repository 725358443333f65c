"""``Assistant``: the chat loop — recall, prompt, stream, write back.

Each turn recalls the memories that best answer the message, places the best of them
(dated) within a token budget in a note before the message, in the same user turn, marks
them used (reinforcing them), streams the model's reply, then stores the user's turn and the
reply as episodic memories and the durable statements in the message (``extract``) as facts
and preferences. The memories recall is sure answer the message are the turn's grounding:
shown with the reply, quoted and dated, whatever the model makes of them.

The prompt keeps the conversation so far — the user's messages and the replies — but not the
memory notes of earlier turns: a note is about its own message, and twenty recalled
memories a turn would fill the context with stale ones in a few turns. Each prompt therefore
starts with the previous one up to its last message, and the engine's KV cache evaluates
only the rest (the previous message without its note, its reply, the new message and note),
never the whole history. The cut and
the reply's end are done as soon as the reply is written back (``Engine.prepare``), while
the user reads it: the next turn waits only for its message and memories.
When the context fills, the oldest turns go first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from localmem.errors import InvalidArgumentError
from localmem.items import REPLY_TAG, Hit, MemoryItem
from localmem.llm.engine import Engine, GenerationStats, Message
from localmem.text import extract
from localmem.text.terms import query_terms

if TYPE_CHECKING:
    from localmem.memory import Memory

SYSTEM = (
    "You are a helpful assistant running on the user's own computer. You remember what the "
    "user told you: notes from your memory come with their dates. Answer from them in one "
    "short sentence; if they do not say, say you don't know."
)
NOTE_HEAD = "Notes from your memory, under their dates:"
# The message comes after the notes, labelled, with the instruction last, where a small
# model attends best. Tuned on the LoCoMo dev split with bench/answers.py (80 questions,
# F1 with memory): notes in a system message after the message 0.07; "Message: ... Reply in
# one short sentence." 0.07; this 0.11; this with a second worked example 0.12, but twice
# the F1 with no memory too (the example teaches the model to guess).
MESSAGE_HEAD = "Question:"
ANSWER_RULE = "Answer in one short sentence."
GROUNDING_HEAD = "From what you told me:"
GROUNDING_COS, GROUNDING_COS_ALONE, GROUNDING_MARGIN = 0.4, 0.7, 0.08
GROUNDING_MAX = 2  # memories quoted with a reply: the one that answers, and a second at most
MAX_MESSAGE_CHARS = 32_000
#: ``0``/``no``/``false`` keeps the model's replies out of the store (``store_replies``).
STORE_REPLIES_ENV = "LOCALMEM_STORE_REPLIES"

log = logging.getLogger("localmem.assistant")


@dataclass
class Turn:
    """One exchange. Iterate it to stream the reply; when the stream ends (or is closed
    early) the turn is written to memory."""

    message: str
    memories: list[Hit]  # placed in the prompt, best first
    messages: list[Message]  # what was sent to the model
    note: str = ""  # the memory note in the prompt ("" if none)
    grounding: list[Hit] = field(default_factory=list)  # shown with the reply (``grounding_text``)
    reply: str = ""
    stored: list[int] = field(default_factory=list)  # ids written back
    facts: list[extract.Extracted] = field(default_factory=list)
    stats: GenerationStats | None = None
    _stream: Iterator[str] | None = None
    _finish: Any = None
    _engine: Any = None

    def __iter__(self) -> Iterator[str]:
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        done = False
        try:
            for piece in stream:
                self._take_stats()
                self.reply += piece
                yield piece
            done = True
        finally:
            self._take_stats()
            try:
                # Closed first: a stream left open early (the reader stopped) still holds
                # the engine, which finishing the turn may need (extraction, read-ahead).
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            finally:
                if self._finish is not None:
                    self._finish(self, complete=done)

    def _take_stats(self) -> None:
        # The engine's figures for this reply, taken while its stream holds the engine:
        # once it lets go, another caller's generation may replace them.
        if self.stats is None and self._engine is not None:
            self.stats = self._engine.last_stats

    def text(self) -> str:
        """Consumes the stream; the whole reply."""
        for _ in self:
            pass
        return self.reply

    def grounding_text(self) -> str:
        """The memories the reply rests on, quoted and dated, as a "From what you told me:"
        block ("" when recall found none it is sure of): shown before the model's text, so
        that a reply is never worse than the memory it was given."""
        if not self.grounding:
            return ""
        lines = [f'> "{h.memory.text.strip()}" ({_date(h)})' for h in self.grounding]
        return GROUNDING_HEAD + "\n" + "\n".join(lines)


class Assistant:
    """Chats with ``engine`` over ``memory``. ``session``: this conversation's id (a new
    one by default); ``memory_tokens``: the budget for recalled memories per turn;
    ``recall_k``: how many memories to consider; ``remember=False`` leaves memory
    unchanged (no write-back, no reinforcement); ``llm_extract=True`` also asks the model
    for the facts in each message (``extract.extract_with_llm``: a second generation a
    turn), beside the rules, which always run; ``read_ahead=False`` leaves the engine as the
    reply left it (for one question: nothing comes next).

    The model's replies are context for their own conversation, not knowledge: stored
    (tagged ``assistant``) so the conversation can be shown and resumed, but never placed in
    a memory note and left out of ``Memory.recall`` unless asked for. ``store_replies=False``
    (default: ``$LOCALMEM_STORE_REPLIES``, else True) keeps them out of the store entirely."""

    def __init__(
        self,
        memory: Memory,
        engine: Engine,
        *,
        session: str | None = None,
        system: str = SYSTEM,
        memory_tokens: int = 512,
        recall_k: int = 4,  # a 135M model answers better from 4 notes than from 8 (answers.py)
        max_tokens: int = 256,
        temperature: float = 0.0,  # greedy: answers from memory, not variety (bench/answers.py)
        remember: bool = True,
        llm_extract: bool = False,
        read_ahead: bool = True,
        store_replies: bool | None = None,
        clock: Any = time.time,
    ) -> None:
        for name, v, lo in (
            ("memory_tokens", memory_tokens, 0),
            ("recall_k", recall_k, 0),
            ("max_tokens", max_tokens, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InvalidArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
        self.memory = memory
        self.engine = engine
        self.session = session or new_session_id()
        self.system = system
        self.memory_tokens = memory_tokens
        self.recall_k = recall_k
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.remember = remember
        self.llm_extract = llm_extract
        self.read_ahead = read_ahead
        self.store_replies = store_replies_default() if store_replies is None else store_replies
        self.clock = clock
        self.history: list[Message] = []  # earlier messages and replies, oldest first
        self._busy = threading.Lock()
        self._ahead: threading.Thread | None = None

    def new_conversation(self) -> str:
        """Starts a fresh conversation (a new session id, no history); returns its id."""
        self.resume([], new_session_id())
        return self.session

    def resume(self, turns: list[MemoryItem], session: str) -> None:
        """Goes on with conversation ``session`` whose stored turns (oldest first) are
        ``turns``: the user's messages and the replies become the history the next prompt
        starts with (the oldest go first when the context fills)."""
        self.session = session
        self.history = [
            {"role": "assistant" if m.is_reply else "user", "content": m.text}
            for m in turns
            if m.session == session and ("user" in m.tags or m.is_reply)
        ]

    # ------------------------------------------------------------------ a turn

    def chat(
        self,
        message: str,
        *,
        cancel: threading.Event | None = None,
        recall_k: int | None = None,
        memories: list[Hit] | None = None,
    ) -> Turn:
        """Starts a turn: recalls and builds the prompt now; iterate the result to stream
        the reply (``turn.text()`` waits for all of it). ``memories``: these, best first,
        instead of recall (the caller knows what the message is about); they are also the
        turn's grounding, as far as ``GROUNDING_MAX`` goes."""
        if not isinstance(message, str) or not message.strip():
            raise InvalidArgumentError("message must be a non-empty str")
        if len(message) > MAX_MESSAGE_CHARS:
            raise InvalidArgumentError(
                f"message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}"
            )
        self._claim()
        try:
            k = self.recall_k if recall_k is None else recall_k
            if memories is not None:
                hits = list(memories)
            else:
                hits = self.memory.recall(message, k=2 * k, now=self.clock()) if k > 0 else []
            placed = self._budget(_distinct(hits)[: len(hits) if memories is not None else k])
            placed, messages = self._fit(placed, message)
            note = f"{NOTE_HEAD}\n{_note(placed)}" if placed else ""
            if self.remember and placed:
                self.memory.reinforce([h.memory.id for h in placed], now=self.clock())
            sure = placed if memories is not None else grounding_for(placed, message)
            turn = Turn(
                message=message,
                memories=placed,
                messages=messages,
                note=note,
                grounding=sure[:GROUNDING_MAX],
            )
            turn._stream = self.engine.generate(
                messages, max_tokens=self.max_tokens, temperature=self.temperature, cancel=cancel
            )
            turn._finish, turn._engine = self._finish, self.engine
        except BaseException:
            self._busy.release()
            raise
        return turn

    def ask(self, message: str) -> str:
        """One turn, the whole reply."""
        return self.chat(message).text()

    def summarize(self) -> MemoryItem | None:
        """Writes the summary of this conversation now, in place of an earlier one
        (``Memory.summarize_session``): for when it ends. None when nothing is written: memory
        is left unchanged (``remember=False``), fewer than four turns are stored,
        or the model said nothing the conversation supports. Costs one generation; the next
        turn reads its prompt again (the KV cache held the summary's)."""
        if not self.remember:
            return None
        self._claim()
        try:
            return self.memory.summarize_session(self.engine, self.session, now=self.clock())
        finally:
            self._busy.release()

    # ------------------------------------------------------------------ prompt

    def _budget(self, hits: list[Hit]) -> list[Hit]:
        """The best hits whose lines fit in ``memory_tokens``."""
        out, used, days = [], 0, set()
        for h in hits:
            day = _date(h)
            n = self.engine.count_text_tokens(f"- {h.memory.text}") + 1
            n += 0 if day in days else self.engine.count_text_tokens(f"{day}:") + 1
            if used + n > self.memory_tokens:
                continue  # a shorter one further down may still fit
            days.add(day)
            out.append(h)
            used += n
        return out

    def _prefix(self) -> list[Message]:
        """What every prompt of this conversation starts with: the system prompt and one
        worked example (a 135M model copies the shape of an answer far better than it
        follows a description of it; the KV cache keeps both after the first turn)."""
        return [{"role": "system", "content": self.system}, *EXAMPLE]

    def _messages(self, message: str, placed: list[Hit]) -> list[Message]:
        """The prompt: the conversation so far, then the message with this turn's notes
        before it. Earlier turns keep their messages without notes (see the module's
        docstring)."""
        content = with_notes(_note(placed), message) if placed else message
        return [*self._prefix(), *self.history, {"role": "user", "content": content}]

    def _fit(self, placed: list[Hit], message: str) -> tuple[list[Hit], list[Message]]:
        """Drops the oldest turns, then the memories, until the prompt and a reply fit: the
        memories kept and the prompt."""
        msgs = self._messages(message, placed)
        room = self.engine.n_ctx - self.max_tokens
        while self.engine.count_tokens(msgs) > room:
            if self.history:
                # The oldest turn: up to and including its assistant reply.
                cut = next(
                    (i + 1 for i, m in enumerate(self.history) if m["role"] == "assistant"),
                    len(self.history),
                )
                del self.history[:cut]
                msgs = self._messages(message, placed)
            elif placed:
                placed = placed[:-1]
                msgs = self._messages(message, placed)
            else:
                raise InvalidArgumentError(
                    f"the message does not fit the model's context of {self.engine.n_ctx} "
                    f"tokens with room for a {self.max_tokens}-token reply: shorten it"
                )
        return placed, msgs

    # ------------------------------------------------------------------ write-back

    def keep_unanswered(self, messages: list[str], *, timeout: float = 10.0) -> None:
        """Stores messages the user sent that got no reply (the chat closed while they
        waited their turn), after the turn in progress is written back (``timeout``
        seconds at most): see ``store_unanswered``."""
        if not self.remember:
            return
        if self._busy.acquire(timeout=timeout):  # the reply being written goes first
            self._busy.release()
        store_unanswered(self.memory, messages, self.session, self.clock())

    @staticmethod
    def store_unanswered(memory: Memory, messages: list[str], session: str, now: float) -> None:
        """``store_unanswered`` (for a chat whose model never loaded: no Assistant)."""
        store_unanswered(memory, messages, session, now)

    @staticmethod
    def new_session_id() -> str:
        """A new conversation's id (``new_session_id``)."""
        return new_session_id()

    def _finish(self, turn: Turn, *, complete: bool) -> None:
        try:
            if turn.stats is None:
                turn.stats = self.engine.last_stats
            complete = complete and not turn.stats.cancelled
            self.history.append({"role": "user", "content": turn.message})
            self.history.append({"role": "assistant", "content": turn.reply})
            if self.remember:
                self._write_back(turn, complete)
            if self.read_ahead:
                convo = [*self._prefix(), *self.history]
                ahead = threading.Thread(
                    target=self._read_ahead, args=(convo,), name="localmem-read-ahead", daemon=True
                )
                try:
                    ahead.start()
                    self._ahead = ahead
                except RuntimeError as e:  # no thread to be had: the next turn reads it all
                    log.warning("could not ready the model for the next turn: %s", e)
        finally:
            self._busy.release()

    def _claim(self) -> None:
        """Takes the conversation for a turn or a summary (released when it ends), once the
        engine is readied from the last turn."""
        if not self._busy.acquire(blocking=False):
            raise InvalidArgumentError(
                "a reply is still streaming in this conversation: finish or close it first"
            )
        try:
            self.wait_ready()
        except BaseException:
            self._busy.release()
            raise

    def wait_ready(self) -> None:
        """Waits until the engine is readied for the next turn (``read_ahead``: started when
        the last reply ended, in a thread of its own). ``chat`` waits for it by itself."""
        ahead = self._ahead
        if ahead is not None:
            ahead.join()

    def _write_back(self, turn: Turn, complete: bool) -> None:
        turn.facts = (
            extract.extract_with_llm(self.engine, turn.message)
            if self.llm_extract
            else extract.extract(turn.message)
        )
        reply = turn.reply.strip() if self.store_replies else ""
        items = turn_items(turn.message, reply, turn.facts, self.session, self.clock(), complete)
        turn.stored = [m.id for m in self.memory.remember_many(items)]

    def _read_ahead(self, convo: list[Message]) -> None:
        """While the user reads the reply and types: the next prompt will be ``convo``
        (this conversation without this turn's memory note), then a new message. The
        engine cuts the note out of its cache now and reads the turn's end, so the next
        turn's first token waits only for the new message and its memories."""
        prepare = getattr(self.engine, "prepare", None)  # an engine of the user's may lack it
        if prepare is None:
            return
        try:
            prepare(convo)
        except Exception as e:  # the next turn reads its whole prompt: slower, not wrong
            log.warning("could not ready the model for the next turn: %s", e)


def turn_items(
    message: str,
    reply: str,
    facts: list[extract.Extracted],
    session: str,
    now: float,
    complete: bool = True,
) -> list[dict[str, Any]]:
    """What a turn stores: the user's message and the reply (if any) as episodic memories of
    the conversation, and the facts and preferences the message states."""
    items: list[dict[str, Any]] = [
        {"text": message, "kind": "episodic", "source": "chat", "session": session,
         "tags": ["user"], "when": now},
    ]  # fmt: skip
    if reply:
        tags = [REPLY_TAG] if complete else [REPLY_TAG, "cancelled"]
        items.append(
            {"text": reply, "kind": "episodic", "source": "chat", "session": session,
             "tags": tags, "importance": 0.3, "when": now}
        )  # fmt: skip
    for f in facts:
        items.append(
            {"text": f.text, "kind": f.kind, "source": "chat", "session": session,
             "importance": f.importance, "key": f.key, "tags": ["extracted"], "when": now}
        )  # fmt: skip
    return items


def store_unanswered(memory: Memory, messages: list[str], session: str, now: float) -> None:
    """Stores the user's ``messages`` that got no reply as turns of conversation
    ``session``, with the facts they state: what the user typed is never lost because the
    chat closed before its turn came."""
    items = [
        item
        for m in messages
        if isinstance(m, str) and m.strip()
        for item in turn_items(m, "", extract.extract(m), session, now)
    ]
    if items:
        memory.remember_many(items)


def new_session_id() -> str:
    """A new conversation's id: ``chat-<date>-<time>-<6 hex>``."""
    return f"chat-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def store_replies_default() -> bool:
    """``$LOCALMEM_STORE_REPLIES``: whether replies are stored (default: yes)."""
    raw = os.environ.get(STORE_REPLIES_ENV, "").strip().lower()
    if raw in ("", "1", "yes", "true", "on"):
        return True
    if raw in ("0", "no", "false", "off"):
        return False
    raise InvalidArgumentError(f"${STORE_REPLIES_ENV} is {raw!r}: set it to 1 or 0")


def _distinct(hits: list[Hit]) -> list[Hit]:
    """The user's own memories, each statement once: the assistant's past replies stay in
    memory (and in recall) but are not fed back as if the user had said them, and an
    extracted fact and the turn it came from are one note."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.memory.is_reply:
            continue
        norm = " ".join(h.memory.text.lower().strip(" .!").split())
        if norm in seen:
            continue
        seen.add(norm)
        out.append(h)
    return out


def grounding_for(placed: list[Hit], message: str) -> list[Hit]:
    """The memories recall is sure answer the message (at most ``GROUNDING_MAX``): very
    close in meaning; or close and sharing one of its rare words; or the best hit, close,
    and clearly closer than every other — and after the first, only those about as close.
    Words are compared directly: the keyword channel's score is relative to its best
    match, which may be a past reply. (On LoCoMo's conversations no fused score separates
    the answering turn from its neighbours better.) Tuned so that forty facts told ("my
    dog is called Rex", "I grew up in Kraków") are each shown for their question, alone
    (tests/test_tell_then_ask.py)."""
    words = set(query_terms(message))
    statements = [h for h in placed if not h.memory.text.rstrip().endswith("?")]
    cos = [h.cosine if h.cosine is not None else 0.0 for h in statements]
    out: list[Hit] = []
    for i, (h, c) in enumerate(zip(statements, cos, strict=True)):
        shares = bool(words & set(query_terms(h.memory.text)))
        clear = i == 0 and all(c - o >= GROUNDING_MARGIN for o in cos[1:])
        close = not out or c >= (out[0].cosine or 0.0) - GROUNDING_MARGIN  # as sure as the first
        if close and (c >= GROUNDING_COS_ALONE or (c >= GROUNDING_COS and (shares or clear))):
            out.append(h)
    return out[:GROUNDING_MAX]


def _date(h: Hit) -> str:
    """A date as people write it ("8 May 2023"): the model copies it into its answer."""
    w = h.memory.when
    return f"{w.day} {w:%B %Y}"


def with_notes(notes: str, message: str) -> str:
    """A user message as the model gets it when memories were recalled for it."""
    return f"{NOTE_HEAD}\n{notes}\n\n{MESSAGE_HEAD} {message}\n{ANSWER_RULE}"


# The worked example every prompt starts with (see Assistant._prefix): notes with a date,
# a question, an answer of a few words that uses the note and does not recite it.
EXAMPLE: list[Message] = [
    {"role": "user", "content": with_notes(
        "3 March 2024:\n- I parked the car on level 2 of the garage on Elm Street.",
        "Where did I leave the car?")},
    {"role": "assistant", "content": "On level 2 of the Elm Street garage."},
]  # fmt: skip


def _note(placed: list[Hit]) -> str:
    """The memories under their dates, each date once (a date is ~10 tokens: twenty
    memories from one day would spend 200 tokens repeating it); dates in the order of
    their best memory, memories best first."""
    by_day: dict[str, list[str]] = {}
    for h in placed:
        by_day.setdefault(_date(h), []).append(f"- {h.memory.text}")
    return "\n".join(f"{day}:\n" + "\n".join(lines) for day, lines in by_day.items())
