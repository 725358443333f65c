"""``ChatApp``: the terminal chat.

The window paints at once; the memory store and the model load in a worker thread behind a
loading state (messages typed meanwhile wait for them); then the same worker has the model
summarize conversations that ended since the last run. The newest conversation comes back as
scrollback and goes on (``conversation``); /new starts another. Each reply runs in a worker
thread: recall, prompt, stream (tokens batched onto the UI every few tens of milliseconds, so
typing stays responsive), write-back. A message sent while a reply streams waits in a queue
and goes when the reply ends. Esc or Ctrl+C stops a reply; F2 opens the memory inspector.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Input

from localmem.errors import LocalmemError

from .commands import USAGE, memory_command
from .conversation import last_conversation, scrollback
from .screens import HelpScreen, ModelPicker
from .widgets import (
    ChatMessage,
    Inspector,
    PromptBox,
    StatusBar,
    encryption_label,
    model_label,
    sync_label,
    why_text,
)

if TYPE_CHECKING:
    from localmem import Assistant, Memory, MemoryItem, Turn
    from localmem.llm import Engine

FLUSH_SECONDS = 0.04  # how often streamed tokens reach the screen
log = logging.getLogger("localmem.tui")


class ChatApp(App[None]):
    TITLE = "localmem"
    CSS_PATH = "app.tcss"
    SUMMARIES_PER_START = 2  # ended conversations summarized when the app starts
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop reply"),
        Binding("ctrl+c", "cancel", "Stop reply", show=False, priority=True),
        Binding("f2", "toggle_inspector", "Memory"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit"),
        # Reaches the app only when the focused widget does not take "/" as text (the message
        # box and the search box do): from the conversation or the inspector's table.
        Binding("slash", "search_memory", "Search memory", show=False, key_display="/"),
    ]

    def __init__(
        self,
        *,
        memory: Memory | None = None,
        engine: Engine | None = None,
        store: str | Path | None = None,
        model: str | None = None,
        engine_name: str | None = None,
        engine_options: dict[str, Any] | None = None,
        max_tokens: int = 256,
        passphrase: str | None = None,
        store_replies: bool | None = None,
    ) -> None:
        super().__init__()
        self._store_replies = store_replies  # Assistant's: None, $LOCALMEM_STORE_REPLIES
        self._passphrase = passphrase  # of an encrypted store the keyring does not unlock
        self._engine_name = engine_name  # "llama" / "flash" / None: $LOCALMEM_ENGINE
        self._engine_options = engine_options or {}
        self._memory, self._engine = memory, engine
        self._own_memory = memory is None
        self._store, self._model, self._max_tokens = store, model, max_tokens
        self.assistant: Assistant | None = None
        # Messages waiting for the model to load or for the reply being written, in order,
        # each with its box in the conversation (marked "queued" until it goes).
        self._queue: list[tuple[str, ChatMessage]] = []
        self._cancel = threading.Event()
        self._acting = threading.Lock()  # the inspector's p / f / u, in the order pressed
        self._streaming = False
        self._resume = True  # go on with the newest conversation (/new while loading: not)
        self._convo: tuple[str, list[MemoryItem]] | None = None  # the one shown as scrollback
        self._replies = False  # the inspector's searches show the assistant's replies (r)
        self._last_forgotten: int | None = None
        self._view: tuple[str, list[tuple[int, float | None, str]]] = ("", [])
        self._search_timer: Any = None
        self.last_turn: Turn | None = None
        self.ready = threading.Event()
        self._syncing: Any = None  # Memory.background_sync's, for a store that syncs
        self.last_sync: dict[str, Any] | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> Any:
        with Horizontal(id="main"):
            yield VerticalScroll(id="chat")
            yield Inspector()
        yield PromptBox(id="prompt")
        self._status_bar = StatusBar(id="status")
        yield self._status_bar
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptBox).focus()
        self.status.set(
            model=f"loading {self._model or 'the embedded model'}…", speed="", store="", rss=""
        )
        self._loading = self._say(
            "system", "Loading the memory store and the model… type away meanwhile."
        )
        self.load()

    @property
    def status(self) -> StatusBar:
        # Held, not queried: a worker may update it while another screen is on top (help,
        # the model picker) or while the app is closing, where a query finds no status bar.
        return self._status_bar

    # ------------------------------------------------------------------ loading

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        try:
            from localmem import Assistant

            if self._memory is None:
                from localmem import Memory

                self._memory = Memory.open(self._store, key=self._passphrase)
                self._passphrase = None
            self._find_conversation()
            if self._engine is None:
                from localmem.llm import open_engine

                self._engine = open_engine(
                    self._model, engine=self._engine_name, **self._engine_options
                )
            self.assistant = Assistant(
                self._memory,
                self._engine,
                max_tokens=self._max_tokens,
                store_replies=self._store_replies,
            )
        except LocalmemError as e:
            self.call_from_thread(self._say, "system", f"**Cannot start:** {e}")
            self.call_from_thread(self.status.set, model="not loaded")
            return
        self.call_from_thread(self._loaded)
        self._summarize_ended()

    def _find_conversation(self) -> None:
        """Shows the newest conversation as soon as the store is open, while the model loads
        (``_loaded`` then has the assistant go on with it)."""
        assert self._memory is not None
        try:
            convo = last_conversation(self._memory) if self._resume else None
        except LocalmemError as e:  # the chat works without it: a fresh conversation
            log.warning("could not read the last conversation: %s", e)
            return
        if convo is not None:
            self.call_from_thread(self._show_scrollback, *convo)

    def _show_scrollback(self, session: str, turns: list[MemoryItem]) -> None:
        if not self._resume or not turns:  # /new came first
            return
        self._convo = (session, turns)
        shown = scrollback(turns)
        # Before what is on screen already: the loading note, messages typed meanwhile.
        chat = self.query_one("#chat", VerticalScroll)
        first = next(iter(chat.query_children(ChatMessage)), None)
        if first is not None:
            chat.mount_all(shown, before=first)
        else:
            chat.mount_all(shown)
        chat.scroll_end(animate=False)

    def _summarize_ended(self) -> None:
        """Summaries of conversations that ended since the last run, while the first message
        is being typed: a second or two each with the embedded model."""
        assert self._memory is not None and self._engine is not None
        try:
            if not self._memory.pending_summaries(limit=1):
                return
            self.call_from_thread(self.status.set, work="summarizing earlier conversations")
            self._memory.consolidate(
                llm=self._engine, sessions=self.SUMMARIES_PER_START, cancel=self._cancel
            )
        except LocalmemError as e:
            log.warning("session summaries failed: %s", e)
        finally:
            self.call_from_thread(self.status.set, work="")
        self.call_from_thread(self.refresh_stats)

    def _loaded(self) -> None:
        assert self._engine is not None
        assert self.assistant is not None
        self.status.set(model=model_label(self._engine))
        if self._loading.parent is not None:
            self._loading.remove()
        if self._resume and self._convo is not None:
            self.assistant.resume(self._convo[1], self._convo[0])
        if self._engine.notice:  # the engine asked for could not run here
            self._say("system", f"**Note:** {self._engine.notice}")
        self.ready.set()
        self.refresh_stats()
        self.start_sync()
        self._next()

    # ------------------------------------------------------------------ chat

    def on_prompt_box_submitted(self, event: PromptBox.Submitted) -> None:
        self.send(event.text)

    def send(self, text: str) -> None:
        if text.startswith("/"):
            self.command(text)
            return
        shown = self._say("user", text)
        if self.assistant is None or self._streaming or self._queue:
            shown.border_subtitle = "queued"
            self._queue.append((text, shown))
            if self._streaming and len(self._queue) == 1:
                self.notify("Queued: it goes when this reply ends (Esc stops the reply).")
            return
        self._start(text, shown)

    def _next(self) -> None:
        """Sends the oldest queued message, if the model is free for it."""
        if self._queue and not self._streaming and self.assistant is not None:
            self._start(*self._queue.pop(0))

    def _start(self, text: str, shown: ChatMessage) -> None:
        shown.border_subtitle = ""
        reply = ChatMessage("", role="assistant")
        reply.border_subtitle = "writing…"
        chat = self.query_one("#chat", VerticalScroll)
        # Right under its message: messages queued after it are on screen already.
        if shown.parent is chat:
            chat.mount(reply, after=shown)
        else:
            chat.mount(reply)
        chat.scroll_end(animate=False)
        self._streaming = True
        self._cancel.clear()
        self.status.set(speed="writing a reply…")  # the status bar is always in view
        self.reply(text, reply)

    def _say(self, role: str, text: str) -> ChatMessage:
        m = ChatMessage(text, role=role)
        chat = self.query_one("#chat", VerticalScroll)
        chat.mount(m)
        chat.scroll_end(animate=False)
        return m

    @work(thread=True, group="reply")
    def reply(self, text: str, widget: ChatMessage) -> None:
        assert self.assistant is not None
        turn: Turn | None = None
        try:
            turn = self.assistant.chat(text, cancel=self._cancel)
            self.call_from_thread(self._show_recalled, turn, widget)
            buf, last = "", time.monotonic()
            for piece in turn:
                buf += piece
                if time.monotonic() - last >= FLUSH_SECONDS:
                    self.call_from_thread(self._append, widget, buf)
                    buf, last = "", time.monotonic()
            if buf:
                self.call_from_thread(self._append, widget, buf)
        except LocalmemError as e:
            self.call_from_thread(self._append, widget, f"\n\n*error: {e}*")
            turn = None
        finally:
            self.call_from_thread(self._done, turn, widget)

    async def _append(self, widget: ChatMessage, text: str) -> Any:  # (None reads as Never)
        await widget.append(text)  # awaited by call_from_thread: tokens arrive in order
        # Scrolled once the text is in, not before: the end of the growing reply (and its
        # "writing…" mark) stays in view instead of one batch of tokens below it.
        self.query_one("#chat", VerticalScroll).scroll_end(animate=False)

    def _done(self, turn: Turn | None, widget: ChatMessage) -> None:
        self._streaming = False
        self.last_turn = turn
        widget.border_subtitle = ""
        speed = ""
        if turn is not None and turn.stats is not None:
            st = turn.stats
            if st.cancelled:
                widget.border_subtitle = "stopped"
            speed = f"{st.generation_tokens_per_s:.0f} tok/s, first in {st.ttft * 1000:.0f} ms"
        self.status.set(speed=speed)
        self.refresh_stats()
        self._next()

    def action_cancel(self) -> None:
        if self._streaming:
            self._cancel.set()

    # ------------------------------------------------------------------ inspector

    def action_toggle_inspector(self) -> None:
        ins = self.query_one(Inspector)
        ins.toggle_class("-visible")
        if ins.has_class("-visible"):
            ins.query_one(DataTable).focus()
            if not self._view[1]:  # no reply yet: the newest memories
                self.search("")
        else:
            self.query_one(PromptBox).focus()

    def action_search_memory(self) -> None:
        """``/`` outside a text box: the inspector's search box (the inspector opened)."""
        ins = self.query_one(Inspector)
        if not ins.has_class("-visible"):
            self.action_toggle_inspector()
        ins.query_one("#search", Input).focus()

    def toggle_replies(self) -> None:
        """``r`` in the inspector: whether its searches show the assistant's replies (off by
        default: they are context of their conversation, not what the user said)."""
        self._replies = not self._replies
        self.query_one(Inspector).replies = self._replies
        self.notify(f"Memory search {'shows' if self._replies else 'hides'} the replies.")
        query = self.query_one("#search", Input).value.strip()
        if query or self._view[0] == "newest memories":  # not the memories a reply was given
            self.search(query)

    def _show_recalled(self, turn: Turn, reply: ChatMessage | None = None) -> None:
        block = turn.grounding_text()
        if block and reply is not None:  # before the reply, set apart from the model's words
            head, _, quotes = block.partition("\n")
            m = ChatMessage(f"**{head}**\n\n" + quotes.replace("\n", "\n\n"), role="grounding")
            self.query_one("#chat", VerticalScroll).mount(m, before=reply)
        rows: list[tuple[int, float | None, str]] = [
            (h.memory.id, h.score, _why(h)) for h in turn.memories
        ]
        self._view = (f"recalled for “{turn.message[:40]}”: {len(rows)}", rows)
        self.query_one(Inspector).show_hits(self._view[0], turn.memories)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "search":
            return
        if self._search_timer is not None:
            self._search_timer.stop()
        query = event.value.strip()
        self._search_timer = self.set_timer(0.25, lambda: self.search(query))

    @work(thread=True, exclusive=True, group="search")
    def search(self, query: str) -> None:
        mem = self._memory
        if mem is None:
            return
        rows: list[tuple[int, float | None, str]]
        replies = self._replies
        if query:
            hits = mem.recall(query, k=20, floor=False, include_replies=replies)
            rows = [(h.memory.id, h.score, _why(h)) for h in hits]
            title = f"recall “{query[:40]}”: {len(rows)}"
        else:
            newest = [m for m in mem.list(limit=100) if replies or not m.is_reply]
            rows = [(m.id, None, "") for m in newest[:50]]
            title = "newest memories"
        self._view = (title, rows)
        self._redraw_view()

    def _redraw_view(self, *, keep_cursor: bool = False) -> None:
        """Re-reads the memories on show (from a worker thread) and redraws the table
        (``keep_cursor``: on the row it was on, after an action on it)."""
        mem = self._memory
        if mem is None:
            return
        title, rows = self._view
        items = []
        for id, score, why in rows:
            try:
                items.append((mem.get(id), score, why))
            except LocalmemError:
                continue  # purged meanwhile
        self.call_from_thread(self.query_one(Inspector).show, title, items, keep_cursor=keep_cursor)

    def on_inspector_key(self, event: Inspector.Key) -> None:
        """p, f or u in the inspector: on the memory under the cursor; r: replies or not."""
        if event.key == "r":
            self.toggle_replies()
        else:
            self.memory_action(event.key, self.query_one(Inspector).selected_id())

    @work(thread=True, group="memory")
    def memory_action(self, key: str, id: int | None) -> None:
        with self._acting:  # one at a time: a second p reads what the first one did
            self._memory_action(key, id)

    def _memory_action(self, key: str, id: int | None) -> None:
        mem = self._memory
        if mem is None:
            return
        try:
            if key == "u":
                if self._last_forgotten is None:
                    self.call_from_thread(self.notify, "Nothing to undo.")
                    return
                id, self._last_forgotten = self._last_forgotten, None
                mem.restore(id)
                msg = f"Restored memory {id}."
            elif id is None:
                return
            elif key == "f":
                mem.forget(id)
                self._last_forgotten = id
                msg = f"Forgot memory {id} (u undoes it)."
            else:
                m = mem.pin(id, not mem.get(id).pinned)
                msg = f"{'Pinned' if m.pinned else 'Unpinned'} memory {id}."
        except LocalmemError as e:
            msg = str(e)
        self.call_from_thread(self.notify, msg)
        self._redraw_view(keep_cursor=True)
        self.refresh_stats()

    # ------------------------------------------------------------------ commands

    def command(self, line: str) -> None:
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name == "help":
            self.action_help()
            return
        if name == "new":
            self.new_conversation()
            return
        self._say("user", line)
        self.run_command(name, arg)

    @work(thread=True, group="memory")
    def run_command(self, name: str, arg: str) -> None:
        mem, eng = self._memory, self._engine
        out: str
        try:
            if mem is None:
                out = "The store is still loading."
            elif (done := memory_command(mem, name, arg)) is not None:
                out, forgot = done
                if forgot is not None:
                    self._last_forgotten = forgot
            elif name == "model" and arg:
                if self._streaming:
                    out = "A reply is being written: stop it (Esc) before changing the model."
                else:
                    from localmem.llm import current_engine, open_engine

                    self.call_from_thread(self.status.set, model=f"loading {arg}…")
                    try:
                        new = open_engine(arg, engine=self._engine_name, **self._engine_options)
                    except LocalmemError:
                        if getattr(self._engine, "_closed", False):  # closed for the switch:
                            self._use_engine(current_engine())  # the one reopened in its place
                        raise
                    self._use_engine(new)
                    out = f"Now chatting with {new.name} ({new.path})."
                    if new.notice:
                        out += f"\n\n**Note:** {new.notice}"
            elif name == "model":
                from localmem.llm import installed

                now = "still loading"
                if eng is not None:
                    ls = eng.load_stats
                    now = (
                        f"{eng.name} ({ls.path}, context {eng.n_ctx:,} tokens, {ls.threads} "
                        f"threads, loaded in {ls.seconds:.2f} s)"
                    )
                picker = ModelPicker(now, installed())
                self.call_from_thread(self.push_screen, picker, self._picked)
                return
            else:
                out = f"Unknown or incomplete command `/{name} {arg}`: {USAGE}"
        except LocalmemError as e:
            out = f"**{type(e).__name__}:** {e}"
        self.call_from_thread(self._say, "system", out)
        self.refresh_stats()

    def new_conversation(self) -> None:
        """``/new``: a new conversation (a new session, no history for the model) in a
        cleared view; the earlier ones stay in memory, to be recalled."""
        if self._streaming:
            self.notify("A reply is being written: Esc stops it, then /new.", severity="warning")
            return
        # Messages still queued (the model loading) go in the new conversation.
        keep = {id(w) for _, w in self._queue} | {id(self._loading)}
        for m in list(self.query(ChatMessage)):
            if id(m) not in keep:
                m.remove()
        self._resume, self._convo = False, None  # a conversation still loading is not resumed
        if self.assistant is not None:
            self.assistant.new_conversation()
        self._say("system", "A new conversation. What you told me before stays in memory.")

    def _use_engine(self, engine: Engine | None) -> None:
        """Chats with `engine` from now on (None: none is open, the next message says so)."""
        if engine is None:
            self.call_from_thread(self.status.set, model="no model")
            return
        self._engine = engine
        if self.assistant is not None:
            self.assistant.engine = engine
        self.call_from_thread(self.status.set, model=model_label(engine))

    def _picked(self, name: str | None) -> None:
        if name:
            self.command(f"/model {name}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # ------------------------------------------------------------------ status

    @work(thread=True, exclusive=True, group="stats")
    def refresh_stats(self) -> None:
        from localmem.machine import rss_bytes

        mem = self._memory
        if mem is None:
            return
        st = mem.stats()
        n, size = st["memories"], st["bytes"]
        self.call_from_thread(
            self.status.set,
            store=f"{n:,} memories, {size / 1e6:.1f} MB, {encryption_label(st['encryption'])}",
            rss=f"RSS {rss_bytes() / 2**20:.0f} MiB",
        )

    @work(thread=True, exclusive=True, group="sync")
    def start_sync(self) -> None:
        """A store that syncs with the user's other devices stays in step while the chat
        runs (``Memory.background_sync``): the status bar says how it goes."""
        mem = self._memory
        if mem is None:
            return
        try:
            st = mem.sync_status()
        except LocalmemError as e:
            st = {"error": str(e)}
        if st is None:
            return
        if "error" in st:
            self.call_from_thread(self.status.set, sync="sync off: its state is damaged")
            return
        self.call_from_thread(self.status.set, sync="syncing…")
        self._syncing = mem.background_sync(
            on_step=lambda report: self.call_from_thread(self._synced, report)
        )

    def _synced(self, report: dict[str, Any]) -> None:
        self.last_sync = report
        self.status.set(sync=sync_label(report))
        if report.get("imported"):
            self.refresh_stats()

    def on_unmount(self) -> None:
        self._cancel.set()  # a reply being written stops at its next token

    def close(self) -> None:
        """Closes the store this app opened (after ``run()`` returns)."""
        if self._syncing is not None:
            self._syncing.stop()  # a step in progress ends before the store closes
        if self.assistant is not None:
            self.assistant.wait_ready()  # not exit with the model mid-read (64 tokens at most)
        unsent, self._queue = [text for text, _ in self._queue], []
        try:  # what the user typed is not lost for quitting before its turn came
            if self.assistant is not None:
                self.assistant.keep_unanswered(unsent)
            elif unsent and self._memory is not None:  # the model never came
                from localmem import Assistant

                convo = self._convo[0] if self._resume and self._convo else None
                session = convo or Assistant.new_session_id()
                Assistant.store_unanswered(self._memory, unsent, session, time.time())
        except LocalmemError as e:
            log.warning("could not keep %d queued message(s): %s", len(unsent), e)
        if self._own_memory and self._memory is not None:
            self._memory.close()


def _why(h: Any) -> str:
    return why_text(h.why)
