"""The ``localmem`` command. Commands are thin: the work lives in the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from localmem.cli.common import (
    budget_option,
    chat_model_option,
    engine_option,
    engine_options,
    keys_call,
    keys_locked_hint,
    memory,
    no_store_replies_option,
    passphrase,
    progress_bar,
    store_option,
)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--version, without loading the package for every other command's --help."""
    if not value or ctx.resilient_parsing:
        return
    from localmem import __version__

    click.echo(f"localmem, version {__version__}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")  # fmt: skip
@click.pass_context
def main(ctx: click.Context) -> None:
    """localmem: on-device memory for LLM assistants. With no command: the chat (at a
    terminal; with none, a question on standard input is answered once, as by `ask`)."""
    if ctx.invoked_subcommand is not None:
        return
    if sys.stdin.isatty() and sys.stdout.isatty():
        ctx.invoke(chat)
        return
    # No terminal (a pipe, a cron job, </dev/null): the chat would draw into nothing and
    # wait forever. A question piped in is answered once; else the help, and done.
    question = _piped_question()
    if question:
        ctx.invoke(ask, message=question)
        return
    click.echo(ctx.get_help())
    click.echo("\n(no terminal: the chat needs one. Pipe a question in to have it answered, "
               "or run `localmem ask QUESTION`.)")  # fmt: skip


def _piped_question(wait: float = 2.0) -> str:
    """What standard input holds when it is a pipe or file with data ready (a pipe kept open
    and empty, as some job runners leave it, is not waited on beyond ``wait`` seconds).
    Read whole (up to 1 MB): one too long for a message is refused by ``ask``, not cut."""
    import os
    import select
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
            return ""
        if stat.S_ISFIFO(mode) and not select.select([sys.stdin], [], [], wait)[0]:
            return ""
        return sys.stdin.read(1_000_000).strip()
    except (OSError, ValueError):  # closed, or not a real file (a test's stand-in)
        return ""


@main.command()
@chat_model_option
@engine_option
@budget_option
@store_option
@click.option("--max-tokens", default=256, show_default=True, help="Longest reply, in tokens.")
@no_store_replies_option
def chat(
    model: str | None = None,
    engine: str | None = None,
    memory_budget: str | None = None,
    store: str | None = None,
    max_tokens: int = 256,
    no_store_replies: bool | None = None,
) -> None:
    """Chat in the terminal with the local model and your memory (F1: help, F2: memory).
    An encrypted store that the OS keyring does not unlock asks for its passphrase."""
    import os

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.ClickException(
            "the chat needs a terminal: run it in one, or `localmem ask QUESTION` from a script"
        )

    from localmem import keys
    from localmem.tui import ChatApp

    info = keys_call(keys.encryption, store)
    secret = None
    if info and not info["keyring_has_key"] and not os.environ.get("LOCALMEM_PASSPHRASE"):
        if not sys.stdin.isatty():
            raise click.ClickException(keys_locked_hint(store))
        secret = passphrase("Passphrase of the encrypted store")
    app = ChatApp(
        model=model, engine_name=engine, engine_options=engine_options(engine, memory_budget),
        store=store, max_tokens=max_tokens, passphrase=secret,
        store_replies=False if no_store_replies else None,
    )  # fmt: skip
    try:
        app.run()
    finally:
        app.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def models(as_json: bool) -> None:
    """List the GGUF chat models on this machine: the embedded ones, Ollama's, LM Studio's,
    the Hugging Face cache's and those in $LOCALMEM_MODELS (used where they lie, never
    copied), with size, architecture, quantization and the engines that can run them."""
    from localmem.llm import installed
    from localmem.machine import available_memory

    found = installed()
    if as_json:
        for m in found:
            click.echo(json.dumps(m.as_dict()))
        return
    if not found:
        click.echo("no GGUF models found (Ollama, LM Studio, Hugging Face cache, $LOCALMEM_MODELS)")
        return
    free = available_memory()
    width = max(len(m.name) for m in found)
    click.echo(f"{'name':<{width}}  {'size':>8}  {'arch':<10} {'quant':<8} {'params':<7} engines")
    for m in found:
        runs = ", ".join(m.engines) if m.engines else f"none: {m.problem}"
        if m.engines and free and m.size > free:
            runs += " (larger than free memory: try --engine flash --memory-budget 50%)"
        click.echo(
            f"{m.name:<{width}}  {m.size / 1e9:>6.2f}GB  {m.architecture or '?':<10} "
            f"{m.quantization or '?':<8} {m.parameters or '?':<7} {runs}"
        )
    click.echo(f"\n{len(found)} models; use one: localmem chat --model NAME (in the chat: /model)")


@main.command()
@store_option
@click.option("--memory-budget", default=None, metavar="SHARE|SIZE",
              help="The flash engine's plan to check (default: 60%).")  # fmt: skip
def doctor(store: str | None, memory_budget: str | None) -> None:
    """Show the SIMD kernel, CPU, store location, and run a quick self-check (the flash
    engine's plan under a memory budget included: what is pinned, what streams)."""
    import os

    from localmem.doctor import BUDGET_ENV, report
    from localmem.paths import STORE_ENV

    if store is not None:
        os.environ[STORE_ENV] = store
    if memory_budget is not None:
        os.environ[BUDGET_ENV] = memory_budget
    if not report(click.echo):
        raise SystemExit(1)


@main.command()
@click.option("--model", required=True, metavar="NAME|PATH",
              help="The ONNX embedding model: a registry name or a file path.")  # fmt: skip
@store_option
def reembed(model: str, store: str | None) -> None:
    """Embed every memory again with another embedding model (vectors never mix)."""
    from localmem import Memory
    from localmem.errors import LocalmemError

    with click.progressbar(length=1, label="re-embedding", file=sys.stderr) as bar:

        def progress(done: int, total: int | None) -> None:
            if total:
                bar.length = total
            bar.update(done - bar.pos)

        try:
            with Memory.open(
                store, model=model, reembed=True, progress=progress, create=False
            ) as mem:
                n = len(mem)
        except LocalmemError as e:
            raise click.ClickException(str(e)) from e
    click.echo(f"{n:,} memories embedded with {model}")


@main.command()
@click.argument("message")
@click.option("--show-memories", is_flag=True, help="Print the memories placed in the prompt.")
@chat_model_option
@engine_option
@budget_option
@store_option
@click.option("--max-tokens", default=256, show_default=True, help="Longest reply, in tokens.")
@click.option("--temperature", default=0.0, show_default=True,
              help="0 answers the same each time (the answer bench's best).")  # fmt: skip
@click.option("--no-remember", is_flag=True, help="Leave memory unchanged (no write-back).")
@no_store_replies_option
@click.option("--stats", is_flag=True, help="Print load and generation figures to stderr.")
def ask(
    message: str,
    show_memories: bool = False,
    model: str | None = None,
    engine: str | None = None,
    memory_budget: str | None = None,
    store: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    no_remember: bool = False,
    no_store_replies: bool | None = None,
    stats: bool = False,
) -> None:
    """Answer MESSAGE once with the local model and what memory recalls, streaming the reply;
    the exchange (and any fact or preference stated in MESSAGE) is remembered."""
    from localmem import Assistant, Memory, keys
    from localmem.errors import LocalmemError
    from localmem.llm import open_engine

    try:
        keys.check_unlocked(store)  # before the model loads
        llm = open_engine(model, engine=engine, **engine_options(engine, memory_budget))
        if llm.notice:
            click.echo(f"note: {llm.notice}", err=True)
        with Memory.open(store) as mem:
            bot = Assistant(
                mem, llm, max_tokens=max_tokens, temperature=temperature,
                remember=not no_remember, read_ahead=False,  # one question: none follows
                # Its own kind of conversation: not the one the chat goes on with.
                session=Assistant.new_session_id().replace("chat-", "ask-", 1),
                store_replies=False if no_store_replies else None,
            )  # fmt: skip
            turn = bot.chat(message)
            if show_memories:
                click.echo(f"recalled {len(turn.memories)} memories:")
                for h in turn.memories:
                    click.echo(f"  [{h.memory.when:%Y-%m-%d}] {h.memory.text}  ({h.explain()})")
                click.echo("")
            if turn.grounding:  # what the reply rests on, before the model's own words
                click.echo(turn.grounding_text() + "\n")
            for piece in turn:
                click.echo(piece, nl=False)
            click.echo("")
            if stats and turn.stats is not None:
                ls, gs = llm.load_stats, turn.stats
                click.echo(
                    f"model {llm.name} ({type(llm).__name__}): load {ls.seconds:.2f} s, "
                    f"read {ls.read_bytes:,} B; "
                    f"prompt {gs.prompt_tokens} tokens ({gs.reused_tokens} cached) "
                    f"{gs.prompt_tokens_per_s:.0f} tok/s, first token {gs.ttft * 1000:.0f} ms; "
                    f"{gs.generated_tokens} tokens at {gs.generation_tokens_per_s:.1f} tok/s",
                    err=True,
                )
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e


@main.command()
@store_option
@click.option("--http", "http_port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve streamable HTTP on 127.0.0.1:PORT instead of stdio.")  # fmt: skip
def mcp(store: str | None, http_port: int | None) -> None:
    """Serve the memory to MCP clients (editors, agents) over stdio."""
    from localmem import keys
    from localmem.mcp.server import serve

    keys_call(keys.check_unlocked, store)  # before serving: an editor shows this on stderr
    serve(store, http_port=http_port)


# ---------------------------------------------------------------------- store commands


@main.command()
@store_option
def repair(store: str | None) -> None:
    """Rebuild the store's catalog (its SQLite index of texts and metadata) from the log,
    for a catalog that reads as damaged; the old one is kept aside. Memories are not
    touched: the log holds them."""
    with memory(store, create=False) as mem, progress_bar("rebuilding the catalog") as progress:
        out = mem.repair(progress)
    click.echo(f"catalog rebuilt: {out['memories']:,} memories ({out['items']:,} items read)")
    for f in out["moved_aside"]:
        click.echo(f"kept aside: {f} (delete it once you no longer need it)")


@main.command()
@click.option("--compact", is_flag=True, help="Also give back freed disk space.")
@click.option(
    "--summarize", is_flag=True,
    help="Also have the chat model summarize conversations that have ended (a few seconds "
    "each).",
)  # fmt: skip
@chat_model_option
@store_option
def consolidate(compact: bool, summarize: bool, model: str | None, store: str | None) -> None:
    """Run upkeep now: demote faded memories, purge expired ones, merge duplicates, mark
    superseded facts; with --summarize, summarize ended conversations."""
    if model is not None and not summarize:
        raise click.UsageError("--model goes with --summarize")
    with memory(store, create=False) as mem:
        if summarize:
            _summarize(mem, model)
        total: dict[str, int] = {}
        n = max(1, mem.stats()["store"]["items"])
        # Each step looks at up to `limit` memories and the next goes on where it stopped:
        # enough steps to pass over the whole store once.
        with click.progressbar(length=n, label="consolidating", file=sys.stderr) as bar:
            seen = 0
            while seen < n:
                step = mem.consolidate(limit=5000)
                for k, v in step.items():
                    if k != "scanned":
                        total[k] = total.get(k, 0) + v
                seen += step.get("scanned") or 5000  # nothing left to look at: done
                bar.update(min(n, seen) - bar.pos)
        done = {k: v for k, v in total.items() if v}
        click.echo(", ".join(f"{k} {v}" for k, v in done.items()) or "nothing to do")
        if compact:
            out = mem.compact()
            click.echo(
                f"arena {out['arena_bytes_before']:,} -> {out['arena_bytes']:,} B; catalog "
                f"{out['catalog']['before']:,} -> {out['catalog']['after']:,} B"
            )


def _summarize(mem: Any, model: str | None) -> None:
    from localmem.errors import LocalmemError
    from localmem.llm import open_engine

    todo = mem.pending_summaries()
    if not todo:
        click.echo("no ended conversation to summarize")
        return
    try:
        llm = open_engine(model)
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e
    n = 0
    try:
        with click.progressbar(length=todo, label="summarizing", file=sys.stderr) as bar:
            # One conversation at a time: the bar moves as each is done.
            n = mem.summarize_ended(llm, limit=todo, progress=lambda d, _: bar.update(d - bar.pos))
    finally:
        llm.close()
    click.echo(f"summaries written: {n} of {todo} ended conversations")


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="-",
              help="File to write (default: standard output).")  # fmt: skip
@click.option("--encrypt", is_flag=True,
              help="Encrypt it with a passphrase, typed twice at the terminal (unechoed) or "
              "taken from $LOCALMEM_EXPORT_PASSPHRASE.")  # fmt: skip
@store_option
def export(output: str, encrypt: bool, store: str | None) -> None:
    """Write every memory as checksummed JSONL (localmem import reads it back).

    With --encrypt the JSONL is encrypted as it is written (XChaCha20-Poly1305, the key
    derived from the passphrase by Argon2id): a backup, or a move to another machine, that
    only the passphrase opens. Nothing in clear is written to disk. It is binary: write it
    to a file (-o) or a pipe, not to the terminal."""
    from localmem.files import private_output
    from localmem.portable import export_encrypted, export_jsonl

    secret = None
    if encrypt:
        if output == "-" and sys.stdout.isatty():
            raise click.ClickException(
                "an encrypted export is binary: write it to a file (-o FILE) or a pipe"
            )
        # Asked before the store opens: a prompt never waits with the store held.
        secret = passphrase(
            "Passphrase for the export", confirm=True, env="LOCALMEM_EXPORT_PASSPHRASE"
        )
    with memory(store, create=False) as mem:
        if secret is not None:
            if output == "-":
                n = export_encrypted(mem, sys.stdout.buffer, secret)
                sys.stdout.buffer.flush()
            else:
                with private_output(Path(output)) as f:  # 0600, like the plain export
                    n = export_encrypted(mem, f.buffer, secret)
        elif output == "-":
            n = export_jsonl(mem, sys.stdout)
        else:
            with private_output(Path(output)) as f:  # 0600: every memory's text is in it
                n = export_jsonl(mem, f)
        click.echo(f"exported {n:,} memories{' (encrypted)' if encrypt else ''}", err=True)
        if not encrypt and mem.stats()["encryption"] is not None:
            click.echo("note: the store is encrypted, this export is not: `localmem export "
                       "--encrypt` keeps it so", err=True)  # fmt: skip


@main.command(name="import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--merge", is_flag=True,
              help="Into a store with memories of its own: new ids, and what the store "
              "already holds folded in (as consolidation folds duplicates).")  # fmt: skip
@store_option
def import_(path: str, merge: bool, store: str | None) -> None:
    """Import PATH: a localmem export (- reads standard input), a ChatGPT
    conversations.json, or Markdown / text notes (a memory per paragraph).

    An encrypted export (export --encrypt) is recognised by its first line; its passphrase
    is asked at the terminal, or taken from $LOCALMEM_EXPORT_PASSPHRASE (needed when it
    comes on standard input). The whole file is decrypted and authenticated in memory before
    anything is imported: a wrong passphrase, or a damaged or cut file, imports nothing."""
    from localmem.portable import import_data, import_file

    def secret() -> str:
        return passphrase("Passphrase of the encrypted export", env="LOCALMEM_EXPORT_PASSPHRASE")

    with memory(store) as mem:
        before = len(mem) if merge else 0  # a merge reports what is new
        with progress_bar("embedding") as progress:
            if path == "-":
                data = sys.stdin.buffer.read()
                what, n = import_data(
                    mem, data, "stdin", None, progress, passphrase=secret, merge=merge
                )
            else:
                what, n = import_file(mem, Path(path), progress, passphrase=secret, merge=merge)
        if merge and what.endswith("export"):
            new = len(mem) - before  # those already here, and duplicates folded, are not new
            click.echo(f"merged {n:,} memories ({what}): {new:,} new, the rest were here",
                       err=True)  # fmt: skip
        else:
            click.echo(f"imported {n:,} memories ({what})", err=True)


# Registered last: they live in modules of their own.
from localmem.cli.keys import encrypt, key  # noqa: E402
from localmem.cli.memories import COMMANDS  # noqa: E402
from localmem.cli.sync import sync  # noqa: E402

for _command in (*COMMANDS, encrypt, key, sync):
    main.add_command(_command)
