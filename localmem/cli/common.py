"""What the ``localmem`` commands share: their options, a progress bar, the store opened with
errors turned into messages, and a passphrase asked for without echo."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

chat_model_option = click.option(
    "--model", default=None, metavar="NAME|PATH",
    help="A GGUF chat model: a registry name, a name `localmem models` lists (Ollama's "
    "llama3.2:3b, ...) or a file path (default: $LOCALMEM_LLM, else the embedded "
    "SmolLM2-135M-Instruct).",
)  # fmt: skip
engine_option = click.option(
    "--engine", type=click.Choice(["auto", "llama", "flash"]), default=None,
    help="What runs the chat model: llama (llama.cpp), flash (localmem's own engine) or auto "
    "(llama.cpp, unless it crashed in its check on this CPU: then flash) "
    "(default: $LOCALMEM_ENGINE, else auto).",
)  # fmt: skip
budget_option = click.option(
    "--memory-budget", "memory_budget", default=None, metavar="SHARE|SIZE",
    help="With --engine flash: the memory the model's weights may use, as a share of them "
    "(60%) or a size (512MB); what does not fit is read from disk as it is needed "
    "(default: all weights mmap'd).",
)  # fmt: skip
no_store_replies_option = click.option(
    "--no-store-replies", is_flag=True, default=None,
    help="Keep the model's replies out of the store (default: $LOCALMEM_STORE_REPLIES, else "
    "stored as context of their conversation, never recalled as knowledge).",
)  # fmt: skip
store_option = click.option(
    "--store", default=None, metavar="PATH",
    help="The memory store (default: $LOCALMEM_STORE, else the user data dir).",
)  # fmt: skip


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress(done, total) callback drawing a bar on stderr from the first report that
    knows its total."""
    bar: Any = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None and total:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def engine_options(engine: str | None, memory_budget: str | None) -> dict[str, Any]:
    """The engine options the flags ask for (a budget streams weights: flash only)."""
    if memory_budget is None:
        return {}
    from localmem.errors import LocalmemError
    from localmem.llm import engine_name, parse_budget

    try:
        if engine_name(engine) != "flash":
            raise click.UsageError("--memory-budget needs --engine flash")
        return {"memory_budget": parse_budget(memory_budget)}
    except LocalmemError as e:
        raise click.BadParameter(str(e), param_hint="--memory-budget") from e


@contextmanager
def memory(store: str | None, *, create: bool = True, **kw: Any) -> Iterator[Any]:
    """The store, with localmem errors turned into messages (exit 1), not tracebacks.
    ``create=False`` for commands that read: no store there is an error, not a new one."""
    from localmem import Memory
    from localmem.errors import LocalmemError

    try:
        with Memory.open(store, create=create, **kw) as mem:
            yield mem
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # a path the user gave: missing, a directory, not writable
        raise click.ClickException(os_message(e)) from e


def passphrase(prompt: str, *, confirm: bool = False, env: str = "LOCALMEM_PASSPHRASE") -> str:
    """A passphrase: ``$LOCALMEM_PASSPHRASE`` (for scripts) or typed, unechoed, at the
    terminal (twice with ``confirm``). Never an argument: those show in ``ps`` and shell
    history."""
    import os

    given = os.environ.get(env)
    if given:
        return given
    if not sys.stdin.isatty():
        raise click.ClickException(
            f"{prompt} is needed: set ${env}, or run this at a terminal to type it"
        )
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    if not value:
        raise click.ClickException("the passphrase must not be empty")
    return value


def encryption_line(info: dict[str, Any] | None) -> str:
    if info is None:
        return "off (plain files: localmem encrypt turns it on)"
    from localmem import keys

    return f"on ({info['cipher']}; key held by {keys.held_by(info)})"


def os_message(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def keys_locked_hint(store: str | None) -> str:
    where = f" --store {store}" if store else ""
    return (f"the store is encrypted and locked: unlock it with `localmem key unlock{where}` "
            "or set LOCALMEM_PASSPHRASE")  # fmt: skip


def keys_call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    from localmem.errors import LocalmemError

    try:
        return fn(*args, **kw)
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(os_message(e)) from e
