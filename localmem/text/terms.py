"""The words a query or a memory is made of: lower-cased word tokens, less stopwords."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can could did didn't do does doesn't doing don't
    down during each few for from further had has have having he her here hers herself him
    himself his how i if in into is isn't it it's its itself just let's me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same
    she should so some such than that that's the their theirs them themselves then there
    these they this those through to too under until up very was wasn't we were what what's
    when where which while who whom why will with would you your yours yourself yourselves s
    t d ll m re ve
    """.split()  # noqa: SIM905
)


def query_terms(query: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    return [w for w in dict.fromkeys(words) if w not in STOPWORDS and len(w) > 1] or words


def content_words(text: str) -> set[str]:
    """A text's distinct words that carry content (stopwords out)."""
    return {w for w in (x.lower() for x in _WORD.findall(text)) if w not in STOPWORDS}
