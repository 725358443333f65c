"""Unit tests of the temporal and entity channels' parsers."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from localmem.text import entities, timeexpr

NOW = datetime(2023, 7, 15, 12, 0)


def window(q: str) -> list[tuple[date, date]]:
    return [
        (datetime.fromtimestamp(w.start).date(), datetime.fromtimestamp(w.end).date())
        for w in timeexpr.find(q, NOW)
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What did I do last May?", [(date(2023, 5, 1), date(2023, 6, 1))]),
        ("what happened last August", [(date(2022, 8, 1), date(2022, 9, 1))]),
        ("anything in 2022?", [(date(2022, 1, 1), date(2023, 1, 1))]),
        ("what happened on 8 May, 2023", [(date(2023, 5, 8), date(2023, 5, 9))]),
        ("May 8, 2023 events", [(date(2023, 5, 8), date(2023, 5, 9))]),
        ("plans for 2023-05-08", [(date(2023, 5, 8), date(2023, 5, 9))]),
        ("in May 2023", [(date(2023, 5, 1), date(2023, 6, 1))]),
        ("yesterday", [(date(2023, 7, 14), date(2023, 7, 15))]),
        ("what did I say last week", [(date(2023, 7, 3), date(2023, 7, 10))]),
        ("two weeks ago", [(date(2023, 6, 28), date(2023, 7, 5))]),
        ("you may go now", []),
        ("no time here at all", []),
        ("31 February 2023", [(date(2023, 2, 1), date(2023, 3, 1))]),  # bad day: month only
    ],
)
def test_time_windows(query, expected):
    assert window(query) == expected


def test_entities_skip_function_words_and_keep_speakers():
    assert entities.extract("Caroline: I went to the LGBTQ group in New York.") == [
        "Caroline",
        "LGBTQ",
        "New York",
    ]
    assert entities.extract("When did Melanie paint a sunrise?") == ["Melanie"]
    assert entities.extract("What did Caroline's mom give her?") == ["Caroline"]
    assert entities.extract("what is the time") == []
    assert entities.keys(["New York"]) == ["new york", "new", "york"]
