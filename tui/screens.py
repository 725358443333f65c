"""The help screen and the model picker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from localmem.llm import InstalledModel

HELP = """\
# localmem chat

Talk with the local model; it recalls what you told it before, and remembers this chat.
Your last conversation comes back when the chat starts, and goes on: `/new` starts another.

| key | what it does |
|---|---|
| Enter | send the message (while a reply is written: queued, sent when it ends) |
| Ctrl+J | new line in the message |
| Esc, Ctrl+C | stop the reply being written (queued messages still go) |
| F2 | show / hide the memory inspector |
| / | search memory: the inspector's search box (outside the message box) |
| p / f / u | in the inspector: pin (or unpin), forget, undo the last forget |
| r | in the inspector: show / hide the assistant's replies in its lists (hidden at first) |
| F1 | this help |
| Ctrl+P | command palette (themes for light and dark terminals) |
| Ctrl+Q | quit |

| command | what it does |
|---|---|
| `/remember TEXT` | store TEXT as a note |
| `/forget ID`, `/restore ID` | forget a memory; bring it back (until the purge) |
| `/pin ID`, `/unpin ID` | keep a memory from fading; let it fade again |
| `/new` | start a new conversation (the earlier ones stay in memory) |
| `/stats` | what the store holds |
| `/model` | pick another model from those on this machine (Ollama's, LM Studio's, ...) |
| `/model NAME` | chat with another GGUF model: a name `localmem models` lists, or a path |
| `/help` | this help |

The inspector shows, for the last reply, each memory recalled: its score and the channels
that found it (`key`word, `sem`antic, `ent`ity, `tem`poral, `ses`sion), its retention
(how much is left of it on the forgetting curve), its tier and its age. Type in its search
box to run a recall live; empty, it lists the newest memories. The assistant's replies are
context of their conversation, not what you said: recall leaves them out, and so does the
inspector until `r` shows them.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> Any:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)


class ModelPicker(ModalScreen[str | None]):
    """``/model``: the chat models on this machine (``localmem models``); Enter chats with
    the one selected, Esc keeps the current one. Models no engine here can run are listed,
    greyed, with the reason."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Close")]

    def __init__(self, current: str, models: list[InstalledModel]) -> None:
        super().__init__()
        self._current, self._models = current, models

    def compose(self) -> Any:
        options = []
        for m in self._models:
            what = " ".join(x for x in (m.architecture, m.parameters, m.quantization) if x)
            label = Text(m.name)
            label.append(f"  {m.size / 1e9:.2f} GB · {what} · {m.source}", style="dim")
            if m.problem:
                label.append(f"\n  cannot chat: {m.problem}", style="dim")
            options.append(Option(label, id=m.name, disabled=bool(m.problem)))
        with Vertical(id="model-picker"):
            yield Static(f"Now: {self._current}\nEnter: chat with the one selected; Esc: keep it.")
            if options:
                yield OptionList(*options, id="models")
            else:
                yield Static("No GGUF models found (Ollama, LM Studio, Hugging Face cache, "
                             "$LOCALMEM_MODELS).")  # fmt: skip

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
