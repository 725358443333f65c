"""Durable facts and preferences in what a user says, by rules: the floor that works with no
LLM at all ("my sister is called Ana", "I am allergic to nuts", "I prefer short answers").

Each rule matches a first-person statement at the start of a sentence; questions,
conditionals and reported speech do not start that way, so they are left alone. The memory
keeps the user's own words (a sentence, tidied), which is what the keyword and semantic
channels match best when the user asks about it later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Extracted:
    text: str
    kind: str  # "fact" or "preference"
    importance: float
    key: str  # what it is about ("my sister", "allergy"): a newer statement may replace it


_SENTENCE = re.compile(r"[^.!?\n;]+[.!?]?")
# "My sister is Ana and I prefer tea": two statements.
_CLAUSE = re.compile(r",?\s+(?:and|but|also)\s+(?=(?:i|i'm|i've|my|we)\b)", re.I)
_LEAD = re.compile(r"^(?:(?:oh|well|so|also|btw|by the way|and|but|fyi|ok|okay),?\s+)+", re.I)
_STOP_TAIL = re.compile(r"\s*(?:,\s*(?:by the way|btw|though|too)|\s+(?:btw|though))\s*$", re.I)

_RULES: list[tuple[re.Pattern[str], str, float, str]] = [
    # (pattern, kind, importance, key template: group names in braces)
    (re.compile(r"^(?:please\s+)?(?:always|never)\s+\w+", re.I), "preference", 0.8, "style"),
    (
        re.compile(
            r"^(?:i|we)\s+(?:really\s+|strongly\s+|much\s+|generally\s+|usually\s+)?"
            r"(?P<verb>prefer|like|love|enjoy|hate|dislike|can't stand|cannot stand|"
            r"don't like|do not like|don't eat|do not eat|avoid)\s+(?P<what>.+)",
            re.I,
        ),
        "preference",
        0.7,
        "likes {what}",
    ),
    (re.compile(r"^i(?:'d| would) rather\s+(?P<what>.+)", re.I), "preference", 0.7, "rather"),
    (
        re.compile(r"^(?:my name is|call me|i am called|i'm called)\s+(?P<what>.+)", re.I),
        "fact",
        0.9,
        "my name",
    ),
    (
        re.compile(
            r"^(?:i am|i'm|i have been|i've been)\s+(?:severely\s+|very\s+)?"
            r"allergic\s+to\s+(?P<what>.+)",
            re.I,
        ),
        "fact",
        0.95,
        "allergy {what}",
    ),
    (
        re.compile(
            r"^my\s+(?P<what>(?:\w+['’]?\w*\s+){0,3}?\w+)\s+(?:is|are|was|were|'s)\s+"  # noqa: RUF001
            r"(?!not\b|going\b|coming\b|getting\b|sick\b|tired\b|busy\b)(?P<value>.+)",
            re.I,
        ),
        "fact",
        0.8,
        "my {what}",
    ),
    (
        re.compile(
            r"^(?:i|we)\s+(?P<verb>live|work|study|grew up|was born|were born|moved)\s+"
            r"(?P<prep>in|at|for|as|on|to|from)\s+(?P<what>.+)",
            re.I,
        ),
        "fact",
        0.8,
        "{verb} {prep}",
    ),
    (
        re.compile(
            r"^(?:i am|i'm)\s+(?P<what>(?:a|an)\s+\w+.*|from\s+.+|\d+\s+years?\s+old.*|"
            r"(?:vegan|vegetarian|pescatarian|diabetic|pregnant|married|divorced|single|"
            r"retired|left-handed|right-handed|colou?r-?blind|lactose intolerant)\b.*)",
            re.I,
        ),
        "fact",
        0.8,
        "i am {what}",
    ),
    (
        re.compile(
            r"^(?:i|we)\s+(?:have|own|got)\s+(?P<what>(?:a|an|two|three|four|\d+)\s+.+)", re.I
        ),
        "fact",
        0.7,
        "i have {what}",
    ),
    (
        re.compile(
            r"^(?:please\s+)?(?:remember|note|don't forget|do not forget|keep in mind)"
            r"\s+(?:that\s+)?(?P<what>.+)",
            re.I,
        ),
        "fact",
        0.9,
        "note",
    ),
]


_VAGUE = frozenset("it that this them those these him her one so too".split())  # noqa: SIM905


def _tidy(s: str) -> str:
    s = s.strip().rstrip(".!;,")
    return s[:1].upper() + s[1:] + "."


def _key(template: str, m: re.Match[str]) -> str:
    groups = {k: (v or "").lower() for k, v in m.groupdict().items()}
    words = template.format(**groups).split()
    return " ".join(words[:4])


def extract(message: str) -> list[Extracted]:
    """The durable statements in one user message, in order; none for a question."""
    if not isinstance(message, str):
        return []
    out: dict[str, Extracted] = {}
    clauses = (c for raw in _SENTENCE.findall(message) for c in _CLAUSE.split(raw))
    for raw in clauses:
        s = raw.strip()
        if not s or s.endswith("?") or len(s) > 300:
            continue
        body = _STOP_TAIL.sub("", _LEAD.sub("", s.rstrip(".!"))).strip()
        for pat, kind, importance, key in _RULES:
            m = pat.match(body)
            if m is None:
                continue
            text = body
            if key == "note":  # "remember that X": X is the memory
                text = m.group("what")
            what = (m.groupdict().get("what") or "").strip().lower()
            if what in _VAGUE or len(text.split()) < 2:
                break  # "I like it": nothing to keep
            e = Extracted(_tidy(text), kind, importance, _key(key, m))
            out.setdefault(e.text.lower(), e)
            break
    return list(out.values())


LLM_PROMPT = (
    "Below is a message a user wrote. List every lasting fact or preference the user states "
    "about themselves or their life, each as a short sentence in the user's own words "
    'starting with "I" or "My", one per line. If there is none, write NONE.\n\n'
    "Message: {message}"
)
_WORD = re.compile(r"[a-z0-9']+")
_COMMON = frozenset(
    re.findall(
        r"\S+",
        "i my me a an the is are am was were be to of and or in on at for with that this it "
        "have has had do does did not no so very really just also called named",
    )
)


def content_stems(text: str) -> list[str]:
    """Content words of ``text`` by their first five letters ("allergic" and "allergy" are
    one), the common words left out."""
    return [w[:5] for w in _WORD.findall(text.lower()) if w not in _COMMON and len(w) > 1]


def mostly_within(words: list[str], source: str) -> bool:
    """Whether at least 80% of ``words`` (content stems) are stems of ``source``: how what a
    model restates (here, and in ``summaries``) is held to what the user wrote."""
    have = set(content_stems(source))
    return bool(words) and sum(w in have for w in words) >= max(1, round(0.8 * len(words)))


def grounded(statement: str, message: str) -> bool:
    """Whether a model's restatement says only what the message says: first person, not a
    question, and nearly every content word (compared by its first five letters, so
    "allergic" matches "allergy") found in the message."""
    s = statement.strip()
    if not s or len(s) > 300 or s.endswith("?") or not re.match(r"^(?:i|my|i'm)\b", s, re.I):
        return False
    return mostly_within(content_stems(s), message)


def extract_with_llm(engine: Any, message: str, *, max_tokens: int = 96) -> list[Extracted]:
    """The rules' statements plus the model's restatements of what the rules missed ("Ana,
    my sister, turns 30 in May" → "My sister Ana turns 30 in May."), each kept only if
    ``grounded`` in the message: a small model's inventions are dropped, never stored.
    Costs one more generation, and the conversation's KV cache (the next turn re-reads it)."""
    found = extract(message)
    if not isinstance(message, str) or not message.strip() or message.strip().endswith("?"):
        return found
    prompt = [{"role": "user", "content": LLM_PROMPT.format(message=message[:4000])}]
    reply = "".join(engine.generate(prompt, max_tokens=max_tokens, temperature=0.0))
    seen = {e.text.lower().rstrip(".") for e in found}
    for line in reply.splitlines():
        s = line.strip().lstrip("-*•0123456789.) \t").strip()
        if s.upper().startswith("NONE") or not grounded(s, message):
            continue
        e = Extracted(_tidy(s), "fact", 0.7, " ".join(content_stems(s)[:3]) or "llm")
        if e.text.lower().rstrip(".") not in seen:
            seen.add(e.text.lower().rstrip("."))
            found.append(e)
    return found
