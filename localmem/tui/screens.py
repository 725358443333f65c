"""The help screen."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# localmem chat

Talk with the local model; it recalls what you told it before, and remembers this chat.

| key | what it does |
|---|---|
| Enter | send the message |
| Ctrl+J | new line in the message |
| Esc, Ctrl+C | stop the reply being written |
| F2 | show / hide the memory inspector |
| p / f / u | in the inspector: pin (or unpin), forget, undo the last forget |
| F1 | this help |
| Ctrl+P | command palette (themes for light and dark terminals) |
| Ctrl+Q | quit |

| command | what it does |
|---|---|
| `/remember TEXT` | store TEXT as a note |
| `/forget ID`, `/restore ID` | forget a memory; bring it back (until the purge) |
| `/pin ID`, `/unpin ID` | keep a memory from fading; let it fade again |
| `/stats` | what the store holds |
| `/model` | the model, its context and load figures |
| `/model PATH` | chat with another GGUF model (or a registry name) |
| `/help` | this help |

The inspector shows, for the last reply, each memory recalled: its score and the channels
that found it (`key`word, `sem`antic, `ent`ity, `tem`poral, `ses`sion), its retention
(how much is left of it on the forgetting curve), its tier and its age. Type in its search
box to run a recall live; empty, it lists the newest memories.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> Any:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
