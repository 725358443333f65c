"""The ``localmem`` command. Commands are thin: the work lives in the package."""

from __future__ import annotations

import click

from localmem import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name="localmem")
@click.pass_context
def main(ctx: click.Context) -> None:
    """localmem: on-device memory for LLM assistants. With no command: the chat."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@main.command()
@click.option(
    "--model", default=None, metavar="NAME|PATH",
    help="A GGUF chat model: a registry name or a file path (default: $LOCALMEM_LLM, else "
    "the embedded SmolLM2-135M-Instruct).",
)  # fmt: skip
@click.option(
    "--store", default=None, metavar="PATH",
    help="The memory store (default: $LOCALMEM_STORE, else the user data dir).",
)  # fmt: skip
@click.option("--max-tokens", default=256, show_default=True, help="Longest reply, in tokens.")
def chat(model: str | None = None, store: str | None = None, max_tokens: int = 256) -> None:
    """Chat in the terminal with the local model and your memory (F1: help, F2: memory)."""
    from localmem.tui import ChatApp

    app = ChatApp(model=model, store=store, max_tokens=max_tokens)
    try:
        app.run()
    finally:
        app.close()


@main.command()
def doctor() -> None:
    """Show the SIMD kernel, CPU, store location, and run a quick self-check."""
    from localmem.doctor import report

    if not report(click.echo):
        raise SystemExit(1)


@main.command()
@click.argument("message")
@click.option("--show-memories", is_flag=True, help="Print the memories placed in the prompt.")
@click.option(
    "--model", default=None, metavar="NAME|PATH",
    help="A GGUF chat model: a registry name or a file path (default: $LOCALMEM_LLM, else "
    "the embedded SmolLM2-135M-Instruct).",
)  # fmt: skip
@click.option(
    "--store", default=None, metavar="PATH",
    help="The memory store (default: $LOCALMEM_STORE, else the user data dir).",
)  # fmt: skip
@click.option("--max-tokens", default=256, show_default=True, help="Longest reply, in tokens.")
@click.option("--temperature", default=0.7, show_default=True, help="0 answers the same each time.")
@click.option("--no-remember", is_flag=True, help="Leave memory unchanged (no write-back).")
@click.option("--stats", is_flag=True, help="Print load and generation figures to stderr.")
def ask(
    message: str,
    show_memories: bool,
    model: str | None,
    store: str | None,
    max_tokens: int,
    temperature: float,
    no_remember: bool,
    stats: bool,
) -> None:
    """Answer MESSAGE once with the local model and what memory recalls, streaming the reply;
    the exchange (and any fact or preference stated in MESSAGE) is remembered."""
    from localmem.assistant import Assistant
    from localmem.errors import LocalmemError
    from localmem.llm import open_engine
    from localmem.memory import Memory

    try:
        engine = open_engine(model)
        with Memory.open(store) as mem:
            bot = Assistant(
                mem, engine, max_tokens=max_tokens, temperature=temperature,
                remember=not no_remember,
            )  # fmt: skip
            turn = bot.chat(message)
            if show_memories:
                click.echo(f"recalled {len(turn.memories)} memories:")
                for h in turn.memories:
                    click.echo(f"  [{h.memory.when:%Y-%m-%d}] {h.memory.text}  ({h.explain()})")
                click.echo("")
            for piece in turn:
                click.echo(piece, nl=False)
            click.echo("")
            if stats and turn.stats is not None:
                ls, gs = engine.load_stats, turn.stats
                click.echo(
                    f"model {engine.name}: load {ls.seconds:.2f} s, read {ls.read_bytes:,} B; "
                    f"prompt {gs.prompt_tokens} tokens ({gs.reused_tokens} cached) "
                    f"{gs.prompt_tokens_per_s:.0f} tok/s, first token {gs.ttft * 1000:.0f} ms; "
                    f"{gs.generated_tokens} tokens at {gs.generation_tokens_per_s:.1f} tok/s",
                    err=True,
                )
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e


@main.command()
@click.option(
    "--store", default=None, metavar="PATH",
    help="The memory store (default: $LOCALMEM_STORE, else the user data dir).",
)  # fmt: skip
def mcp(store: str | None) -> None:
    """Serve the memory to MCP clients (editors, agents) over stdio."""
    from localmem.mcp_server import serve

    serve(store)
