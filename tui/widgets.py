"""The chat's widgets: messages, the prompt box, the memory inspector, the status bar."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Input, Markdown, Static, TextArea

if TYPE_CHECKING:
    from localmem import Hit, MemoryItem
    from localmem.llm import Engine


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
    the last forget, r shows or hides the assistant's replies, / goes to the search box.

    The keys are bindings of the inspector, not of the app: listed in the footer while the
    inspector's table has the focus; in its search box they are text (and not listed)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "key('p')", "Pin"),
        Binding("f", "key('f')", "Forget"),
        Binding("u", "key('u')", "Undo"),
        Binding("r", "key('r')", "Replies"),
        Binding("slash", "search", "Search", key_display="/"),
    ]

    class Key(Message):
        """p, f, u or r pressed on the inspector: for the app, which holds the memory."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    replies = False  # whether searches show the assistant's replies (the app's toggle, r)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not isinstance(self.app.focused, Input)

    def action_key(self, key: str) -> None:
        self.post_message(self.Key(key))

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

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
        # Content, not markup: a memory's text is shown as it is ("a [ b" broke markup).
        self.query_one("#detail", Static).update(
            Content.assemble(
                (f"#{m.id}", "bold"),
                f" {m.kind}, {m.source}, {m.when:%Y-%m-%d %H:%M}"
                f"{', pinned' if m.pinned else ''}; recalled {m.recalls} times; stability "
                f"{m.stability:.1f} d\n",
                m.text,
                (f"\n{why}" if why else "", "dim"),
            )
        )

    def show(
        self,
        title: str,
        rows: list[tuple[MemoryItem, float | None, str]],
        *,
        keep_cursor: bool = False,
    ) -> None:
        """Lists ``rows`` under ``title``. ``keep_cursor``: the same rows, redrawn after an
        action on one of them: the cursor stays on the row it was on (the nearest one if
        that row is gone), so that p pressed twice acts twice on the same memory."""
        shown = "shown" if self.replies else "hidden"
        # Content, not markup: the title holds what the user typed in the search box.
        self.query_one("#inspector-title", Static).update(
            Content.assemble(title, (f"  · replies {shown} (r)", "dim"))
        )
        t = self.query_one(DataTable)
        row = t.cursor_row
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
        if keep_cursor and t.row_count:
            t.move_cursor(row=min(row, t.row_count - 1), animate=False)

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


def model_label(engine: Engine) -> str:
    """The status bar's model: name, context and, under a memory budget, the engine's plan
    (what is pinned, what streams from disk per token, in reads of what size)."""
    label = f"{engine.name} (ctx {engine.n_ctx:,})"
    summary, stats = getattr(engine, "plan_summary", None), getattr(engine, "load_stats", None)
    if summary is not None and stats is not None and stats.extra.get("plan"):
        label += f" · {summary(brief=True)}"
    return label


def sync_label(report: dict[str, Any]) -> str:
    """The status bar's sync part, from a step's report."""
    if "error" in report:
        return "sync: " + ("folder not reachable" if "not there" in report["error"]
                           else "failed (localmem sync says why)")  # fmt: skip
    if report.get("busy"):
        return "sync: another process is syncing"
    out = f"synced {time.strftime('%H:%M')}"
    if report.get("imported"):
        out += f", +{report['imported']:,} in"
    if report.get("waiting"):
        out += f"; {len(report['waiting'])} device(s) waiting on the folder"
    return out
