"""The chat's widgets: messages, the prompt box, the memory inspector, the status bar."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual import events
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Markdown, Static, TextArea

if TYPE_CHECKING:
    from localmem import Hit, MemoryItem


class ChatMessage(Markdown):
    """One message; the assistant's grows as tokens stream in."""

    def __init__(self, text: str, *, role: str) -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.border_title = {
            "user": "you",
            "assistant": "assistant",
            "system": "localmem",
            "grounding": "from memory",  # what the reply rests on, quoted (Turn.grounding)
        }[role]


class PromptBox(TextArea):
    """Multi-line input: Enter sends, Ctrl+J starts a new line (paste keeps newlines)."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip()
            if text:
                self.post_message(self.Submitted(text))
                self.clear()
            return
        if event.key == "ctrl+j":
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)


def retention_bar(r: float, width: int = 8) -> str:
    """R as a bar: ``█████░░░ 0.62``."""
    full = max(0, min(width, round(r * width)))
    return "█" * full + "░" * (width - full) + f" {r:.2f}"


def age(seconds: float) -> str:
    for unit, n in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{int(seconds // n)}{unit}"
    return "now"


class Inspector(Vertical):
    """What memory did for the last reply — or a live search, or the newest memories:
    each with its channels and score, retention, tier and age. p pins, f forgets, u undoes
    the last forget."""

    def compose(self) -> Any:
        yield Input(placeholder="search memory (recall)…", id="search")
        yield Static("recalled for the last reply", id="inspector-title")
        table: DataTable[str] = DataTable(id="memories", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="detail")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("memory", "score", "retention", "tier", "age", "why")
        self._items: dict[str, tuple[MemoryItem, float | None, str]] = {}

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is None or key not in self._items:
            return
        m, _, why = self._items[key]
        self.query_one("#detail", Static).update(
            f"[b]#{m.id}[/b] {m.kind}, {m.source}, {m.when:%Y-%m-%d %H:%M}"
            f"{', pinned' if m.pinned else ''}; recalled {m.recalls} times; stability "
            f"{m.stability:.1f} d\n{escape(m.text)}" + (f"\n[dim]{why}[/dim]" if why else "")
        )

    def show(self, title: str, rows: list[tuple[MemoryItem, float | None, str]]) -> None:
        self.query_one("#inspector-title", Static).update(title)
        t = self.query_one(DataTable)
        t.clear()
        self._items = {str(m.id): (m, score, why) for m, score, why in rows}
        self.query_one("#detail", Static).update("")
        now = time.time()
        for m, score, why in rows:
            pin = "📌 " if m.pinned else ""
            text = m.text.replace("\n", " ")
            t.add_row(
                pin + (text if len(text) <= 44 else text[:43] + "…"),
                "" if score is None else f"{score:.2f}",
                retention_bar(m.retention(now)),
                m.tier,
                age(now - m.created.timestamp()),
                why,
                key=str(m.id),
            )

    def show_hits(self, title: str, hits: list[Hit]) -> None:
        self.show(title, [(h.memory, h.score, why_text(h.why)) for h in hits])

    def selected_id(self) -> int | None:
        t = self.query_one(DataTable)
        if t.row_count == 0:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        return int(key) if key is not None else None


def why_text(why: dict[str, float]) -> str:
    """A hit's channels, strongest first: ``key 1.00 sem 0.20``."""
    return " ".join(f"{k[:3]} {v:.2f}" for k, v in sorted(why.items(), key=lambda kv: -kv[1]))


def encryption_label(info: dict[str, Any] | None) -> str:
    """The status bar's word on encryption at rest: ``encrypted (keyring)``."""
    if info is None:
        return "not encrypted"
    held = {"argon2id": "passphrase", "keyring": "keyring"}
    return "encrypted (" + " + ".join(held.get(k, k) for k in info["held_by"]) + ")"


class StatusBar(Static):
    """Model, the last reply's speed, memories and store size, RSS."""

    def set(self, **parts: str) -> None:
        self._parts = {**getattr(self, "_parts", {}), **parts}
        self.update("  │  ".join(v for v in self._parts.values() if v))
