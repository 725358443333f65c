"""Names in a text: the entity channel's keys.

A light, dependency-free extractor: runs of capitalized words that are not sentence-initial
function words, months, weekdays or pronouns ("Caroline", "New York", "LGBTQ"), plus a
"Speaker:" prefix. It over-collects a little; the entity channel only boosts memories that
share a name with the query, so a spurious name costs little and a missed one costs a boost.
"""

from __future__ import annotations

import re

_CAP = re.compile(r"\b([A-Z][\w'’\-]*(?:\s+(?:[A-Z][\w'’\-]*|of|de|van|von|da|del))*)")  # noqa: RUF001
_SPEAKER = re.compile(r"^\s*([A-Z][\w'’\-]*(?:\s+[A-Z][\w'’\-]*)?)\s*:")  # noqa: RUF001
_NOT_NAMES = frozenset(
    """
    i i'm i've i'd i'll me my mine we us our you your he she it they them his her its their
    a an the this that these those there here what when where who whom whose which why how
    is are was were be been am do does did done have has had will would can could should
    shall may might must not no yes yeah yep ok okay oh hey hi hello thanks thank please and
    or but so if then because also just really very well wow great nice sure sorry let let's
    what's that's it's there's here's who's how's where's when's in on at by for from to of
    with about as into over after before since until during all any some many much more most
    other another each every both few one two three monday tuesday wednesday thursday friday
    saturday sunday today tomorrow yesterday january february march april june july august
    september october november december last next ago this year month week day weekend
    morning evening night mr mrs ms dr
    """.split()  # noqa: SIM905
)


def extract(text: str) -> list[str]:
    """Distinct names in ``text``, in order of appearance, as written."""
    out: dict[str, None] = {}
    m = _SPEAKER.match(text)
    if m:
        out[m.group(1)] = None
    for m in _CAP.finditer(text):
        words = m.group(1).split()
        # Drop leading function words ("When Caroline" -> "Caroline").
        while words and words[0].lower().strip("'’") in _NOT_NAMES:  # noqa: RUF001
            words = words[1:]
        while words and words[-1].lower() in ("of", "de", "van", "von", "da", "del"):
            words = words[:-1]
        if not words:
            continue
        name = " ".join(words).strip("'’-")  # noqa: RUF001
        for suffix in ("'s", "’s"):  # noqa: RUF001
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if len(name) < 2 or name.lower() in _NOT_NAMES:
            continue
        out[name] = None
    return list(out)


def speaker(text: str) -> str | None:
    """The "Name:" a chat turn starts with, if any."""
    m = _SPEAKER.match(text)
    return m.group(1) if m else None


def keys(names: list[str]) -> list[str]:
    """Lookup keys: each name lowercased, and each word of a multi-word name."""
    k: dict[str, None] = {}
    for n in names:
        low = n.lower()
        k[low] = None
        for w in low.split():
            if w not in _NOT_NAMES and len(w) > 1:
                k[w] = None
    return list(k)
