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
    encryption_line,
    engine_option,
    engine_options,
    keys_call,
    keys_locked_hint,
    memory,
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
    """localmem: on-device memory for LLM assistants. With no command: the chat."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@main.command()
@chat_model_option
@engine_option
@budget_option
@store_option
@click.option("--max-tokens", default=256, show_default=True, help="Longest reply, in tokens.")
def chat(
    model: str | None = None,
    engine: str | None = None,
    memory_budget: str | None = None,
    store: str | None = None,
    max_tokens: int = 256,
) -> None:
    """Chat in the terminal with the local model and your memory (F1: help, F2: memory).
    An encrypted store that the OS keyring does not unlock asks for its passphrase."""
    import os

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
            with Memory.open(store, model=model, reembed=True, progress=progress) as mem:
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
@click.option("--stats", is_flag=True, help="Print load and generation figures to stderr.")
def ask(
    message: str,
    show_memories: bool,
    model: str | None,
    engine: str | None,
    memory_budget: str | None,
    store: str | None,
    max_tokens: int,
    temperature: float,
    no_remember: bool,
    stats: bool,
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


# ---------------------------------------------------------------------- memory commands


def _item_line(m: Any) -> str:
    tags = f" [{', '.join(m.tags)}]" if m.tags else ""
    return f"#{m.id}  {m.when:%Y-%m-%d}  {m.kind:<10} {m.tier:<9}{tags}  {m.text}"


@main.command()
@click.argument("text")
@click.option("--kind", type=click.Choice(["note", "fact", "preference", "episodic"]),
              default="note", show_default=True)  # fmt: skip
@click.option("--tag", "tags", multiple=True, help="A label (repeatable).")
@click.option("--importance", type=float, default=0.5, show_default=True, help="0 to 1.")
@click.option("--when", default=None, help="When it happened (ISO date or time; default now).")
@click.option("--pin", is_flag=True, help="Never let it fade.")
@store_option
def remember(
    text: str, kind: str, tags: tuple[str, ...], importance: float, when: str | None,
    pin: bool, store: str | None,
) -> None:  # fmt: skip
    """Store TEXT as a memory; prints its id."""
    with memory(store) as mem:
        m = mem.remember(text, kind=kind, tags=tags, importance=importance, when=when,
                         pinned=pin, source="api")  # fmt: skip
        click.echo(f"remembered #{m.id}")


@main.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="How many at most.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list, for scripts.")
@click.option("--all", "no_floor", is_flag=True, help="Always k results, relevant or not.")
@store_option
def recall(query: str, k: int, as_json: bool, no_floor: bool, store: str | None) -> None:
    """The memories that best answer QUERY, best first, with why each was found."""
    with memory(store) as mem:
        hits = mem.recall(query, k=k, floor=not no_floor)
        if as_json:
            out = [h.as_dict() for h in hits]
            click.echo(json.dumps(out, ensure_ascii=False, indent=1))
            return
        if not hits:
            click.echo("nothing relevant")
        for h in hits:
            click.echo(f"{h.score:6.3f}  {_item_line(h.memory)}\n        {h.explain()}")


@main.command()
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--restore", is_flag=True, help="Undo: bring forgotten memories back.")
@store_option
def forget(ids: tuple[int, ...], restore: bool, store: str | None) -> None:
    """Forget memories by id (undo with --restore within 30 days)."""
    with memory(store) as mem:
        for id in ids:
            if restore:
                mem.restore(id)
                click.echo(f"restored #{id}")
            else:
                mem.forget(id)
                click.echo(f"forgot #{id} (localmem forget --restore {id} undoes it)")


@main.command(name="list")
@click.option("--kind", default=None, help="Only this kind.")
@click.option("--tag", default=None, help="Only memories with this tag.")
@click.option("--tier", default=None, help="hot, warm, cold or forgotten.")
@click.option("-n", "--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@store_option
def list_(
    kind: str | None, tag: str | None, tier: str | None, limit: int, as_json: bool,
    store: str | None,
) -> None:  # fmt: skip
    """The newest memories."""
    with memory(store) as mem:
        items = mem.list(kind=kind, tag=tag, tier=tier, limit=limit)
        if as_json:
            click.echo(json.dumps([m.as_dict() for m in items], ensure_ascii=False, indent=1))
        for m in [] if as_json else items:
            click.echo(_item_line(m))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@store_option
def stats(as_json: bool, store: str | None) -> None:
    """What the store holds."""
    with memory(store) as mem:
        st = mem.stats()
        if as_json:
            click.echo(json.dumps(st, indent=1, default=str))
            return
        click.echo(f"store      {st['path']}")
        click.echo(f"memories   {st['memories']:,}  {st['by_kind']}")
        click.echo(f"tiers      {st['by_tier']}")
        click.echo(f"model      {st['model']}")
        click.echo(f"encryption {encryption_line(st['encryption'])}")
        click.echo(f"sync       {sync_line(st['sync'])}")
        click.echo(
            f"log        {st['store']['wal']['bytes']:,} B; arena {st['store']['arena_bytes']:,} B"
        )
        if st["unreadable"]:
            ids = ", ".join(str(x["id"]) for x in st["unreadable"][-10:])
            click.echo(
                f"unreadable {len(st['unreadable'])} item(s) left out, e.g. {ids}: "
                f"{st['unreadable'][-1]['error']} (written by another version of localmem?)"
            )


@main.command()
@store_option
def repair(store: str | None) -> None:
    """Rebuild the store's catalog (its SQLite index of texts and metadata) from the log,
    for a catalog that reads as damaged; the old one is kept aside. Memories are not
    touched: the log holds them."""
    with memory(store) as mem, progress_bar("rebuilding the catalog") as progress:
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
    with memory(store) as mem:
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
    with memory(store) as mem:
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
@store_option
def import_(path: str, store: str | None) -> None:
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
        with progress_bar("embedding") as progress:
            if path == "-":
                data = sys.stdin.buffer.read()
                what, n = import_data(mem, data, "stdin", None, progress, passphrase=secret)
            else:
                what, n = import_file(mem, Path(path), progress, passphrase=secret)
        click.echo(f"imported {n:,} memories ({what})", err=True)


# Registered last: they live in their own module (localmem/cli/keys.py).
from localmem.cli.keys import encrypt, key  # noqa: E402
from localmem.cli.sync import sync, sync_line  # noqa: E402

main.add_command(encrypt)
main.add_command(key)
main.add_command(sync)
