"""Time expressions in a query, resolved to a window of event times.

"in 2022", "in May 2023", "last May", "May 8, 2023", "8 May 2023", "last year", "this month",
"last week", "yesterday", "today", "two weeks ago", "3 days ago", "a month ago", "recently".
Relative expressions resolve against ``now`` (the time the question is asked); a bare month
means its most recent occurrence. Each window carries a slack: "two weeks ago" is not exact.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
MONTHS.pop("may", None)
MONTHS["may"] = 5
_NUM = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "few": 3,
    "couple": 2, "several": 3,
}  # fmt: skip
_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_UNIT = {"day": 1, "week": 7, "month": 30.44, "year": 365.25}


@dataclass(frozen=True)
class Window:
    """Event times in [start, end) (unix seconds); ``text`` is the expression matched."""

    start: float
    end: float
    text: str

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def distance(self, t: float) -> float:
        """Seconds from ``t`` to the window (0 inside)."""
        return max(self.start - t, t - self.end, 0.0)


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1)
    end = datetime(year + (month == 12), month % 12 + 1, 1)
    return start, end


def find(query: str, now: datetime) -> list[Window]:
    """Every time window the query names (empty if none)."""
    q = query.lower()
    out: list[Window] = []
    taken: list[tuple[int, int]] = []

    def add(m: re.Match[str], start: datetime, end: datetime) -> None:
        span = m.span()
        if any(a < span[1] and span[0] < b for a, b in taken):
            return
        taken.append(span)
        out.append(Window(start.timestamp(), end.timestamp(), m.group(0).strip()))

    # Full dates: "8 may 2023", "may 8, 2023", "2023-05-08".
    for m in re.finditer(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", q):
        try:
            d = datetime(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            continue
        add(m, d, d + timedelta(days=1))
    for m in re.finditer(
        rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})\b", q
    ):
        try:
            d = datetime(int(m[3]), MONTHS[m[2]], int(m[1]))
        except ValueError:
            continue
        add(m, d, d + timedelta(days=1))
    for m in re.finditer(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", q):
        try:
            d = datetime(int(m[3]), MONTHS[m[1]], int(m[2]))
        except ValueError:
            continue
        add(m, d, d + timedelta(days=1))
    # Month and year: "may 2023", "in may of 2023".
    for m in re.finditer(rf"\b({_MONTH_RE})\.?,?\s+(?:of\s+)?(\d{{4}})\b", q):
        add(m, *_month_window(int(m[2]), MONTHS[m[1]]))
    # "last/this/next may", and a bare "in may".
    for m in re.finditer(rf"\b(last|this|next|in|during|since)\s+({_MONTH_RE})\b", q):
        if m[2] == "may" and m[1] not in ("last", "this", "next"):
            continue  # "in may" is too often the verb ("...in may be")
        month = MONTHS[m[2]]
        year = now.year
        if m[1] == "next":
            year += month <= now.month
        elif (m[1] != "this" and month > now.month) or (m[1] == "last" and month == now.month):
            year -= 1
        add(m, *_month_window(year, month))
    # A year: "in 2022", "2022".
    for m in re.finditer(r"\b(19\d{2}|20\d{2})\b", q):
        y = int(m[1])
        add(m, datetime(y, 1, 1), datetime(y + 1, 1, 1))
    # Relative: "two weeks ago", "3 days ago", "a month ago".
    for m in re.finditer(r"\b(\d+|" + "|".join(_NUM) + r")\s+(day|week|month|year)s?\s+ago\b", q):
        n = int(m[1]) if m[1].isdigit() else _NUM[m[1]]
        days = n * _UNIT[m[2]]
        slack = max(1.0, 0.25 * days)
        centre = now - timedelta(days=days)
        add(m, centre - timedelta(days=slack), centre + timedelta(days=slack))
    today = datetime(now.year, now.month, now.day)
    monday = today - timedelta(days=today.weekday())
    simple = {
        "yesterday": (today - timedelta(days=1), today),
        "today": (today, today + timedelta(days=1)),
        "last week": (monday - timedelta(days=7), monday),
        "this week": (today - timedelta(days=today.weekday()), today + timedelta(days=1)),
        "last month": _month_window(now.year - (now.month == 1), (now.month - 2) % 12 + 1),
        "this month": _month_window(now.year, now.month),
        "last year": (datetime(now.year - 1, 1, 1), datetime(now.year, 1, 1)),
        "this year": (datetime(now.year, 1, 1), datetime(now.year + 1, 1, 1)),
        "recently": (today - timedelta(days=14), today + timedelta(days=1)),
        "lately": (today - timedelta(days=14), today + timedelta(days=1)),
    }  # fmt: skip
    for phrase, (a, b) in simple.items():
        for m in re.finditer(rf"\b{phrase}\b", q):
            add(m, a, b)
    return out
