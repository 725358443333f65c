"""The ``localmem`` commands on single memories: remember, recall, forget, list, pin, unpin,
edit, stats. Those that only read (or act on memories that must already be there) never
create a store: a mistyped ``--store`` says so instead of reporting an empty one."""

from __future__ import annotations

import json
import shutil
from typing import Any

import click

from localmem.cli.common import encryption_line, memory, store_option


def item_line(m: Any, *, full: bool = False, width: int | None = None) -> str:
    """A memory on one line: id, date, kind, tier, tags and its text (a pinned one marked
    ``*``); the text cut to the terminal's width unless ``full``."""
    tags = f" [{', '.join(m.tags)}]" if m.tags else ""
    pin = "*" if m.pinned else " "
    head = f"#{m.id}{pin} {m.when:%Y-%m-%d}  {m.kind:<10} {m.tier:<9}{tags}  "
    text = str(m.text)
    if full:
        return head + text
    text = " ".join(text.split())  # one line: newlines and runs of spaces folded
    room = max(20, (width or shutil.get_terminal_size((100, 24)).columns) - len(head))
    return head + (text if len(text) <= room else text[: room - 1] + "…")


@click.command()
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
    """Store TEXT as a memory; prints its id (creates the store if there is none)."""
    with memory(store) as mem:
        m = mem.remember(text, kind=kind, tags=tags, importance=importance, when=when,
                         pinned=pin, source="api")  # fmt: skip
        click.echo(f"remembered #{m.id}")


@click.command()
@click.argument("query")
@click.option("-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many at most.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON list, for scripts.")
@click.option("--all", "no_floor", is_flag=True, help="Always k results, relevant or not.")
@click.option("--include-replies", is_flag=True,
              help="Also the assistant's past replies (context of their conversation, not "
              "knowledge: left out by default).")  # fmt: skip
@store_option
def recall(
    query: str, k: int, as_json: bool, no_floor: bool, include_replies: bool, store: str | None
) -> None:
    """The memories that best answer QUERY, best first, with why each was found."""
    if not query.strip():
        raise click.UsageError('give the words to look for: localmem recall "my sister"')
    with memory(store, create=False) as mem:
        hits = mem.recall(query, k=k, floor=not no_floor, include_replies=include_replies)
        if as_json:
            out = [h.as_dict() for h in hits]
            click.echo(json.dumps(out, ensure_ascii=False, indent=1))
            return
        if not hits:
            click.echo("nothing relevant")
        for h in hits:
            click.echo(f"{h.score:6.3f}  {item_line(h.memory)}\n        {h.explain()}")


@click.command()
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--restore", is_flag=True, help="Undo: bring forgotten memories back.")
@store_option
def forget(ids: tuple[int, ...], restore: bool, store: str | None) -> None:
    """Forget memories by id (undo with --restore within 30 days)."""
    failed = []
    with memory(store, create=False) as mem:
        for id in ids:
            if not restore:
                mem.forget(id)
                click.echo(f"forgot #{id} (localmem forget --restore {id} undoes it)")
                continue
            tier = mem.get(id).tier
            if tier == "hot":
                click.echo(f"#{id} is not forgotten: nothing to restore", err=True)
                failed.append(id)
                continue
            mem.restore(id)
            click.echo(f"restored #{id}" + ("" if tier == "forgotten" else f" (it was {tier})"))
    if failed:
        raise SystemExit(1)


@click.command(name="list")
@click.option("--kind", default=None, help="Only this kind.")
@click.option("--tag", default=None, help="Only memories with this tag.")
@click.option("--tier", default=None, help="hot, warm, cold or forgotten.")
@click.option("-n", "--limit", type=click.IntRange(1, 1_000_000), default=20, show_default=True,
              help="How many, newest first.")  # fmt: skip
@click.option("--full", is_flag=True, help="Whole texts (default: cut to one line).")
@click.option("--json", "as_json", is_flag=True)
@store_option
def list_(
    kind: str | None, tag: str | None, tier: str | None, limit: int, full: bool, as_json: bool,
    store: str | None,
) -> None:  # fmt: skip
    """The newest memories, one line each; * marks a pinned one."""
    with memory(store, create=False) as mem:
        items = mem.list(kind=kind, tag=tag, tier=tier, limit=limit)
        if as_json:
            click.echo(json.dumps([m.as_dict() for m in items], ensure_ascii=False, indent=1))
            return
        for m in items:
            click.echo(item_line(m, full=full))


def _pin(ids: tuple[int, ...], store: str | None, pinned: bool) -> None:
    with memory(store, create=False) as mem:
        for id in ids:
            was = mem.get(id).pinned
            mem.pin(id, pinned)
            word = "pinned" if pinned else "unpinned"
            click.echo(f"#{id} {'was already ' if was == pinned else ''}{word}")


@click.command()
@click.argument("ids", nargs=-1, type=int, required=True)
@store_option
def pin(ids: tuple[int, ...], store: str | None) -> None:
    """Pin memories by id: they never fade (localmem unpin undoes it)."""
    _pin(ids, store, True)


@click.command()
@click.argument("ids", nargs=-1, type=int, required=True)
@store_option
def unpin(ids: tuple[int, ...], store: str | None) -> None:
    """Let pinned memories fade again, from now on."""
    _pin(ids, store, False)


@click.command()
@click.argument("id", type=int)
@click.argument("text", required=False)
@click.option("--tag", "tags", multiple=True, help="Replace its tags (repeatable).")
@click.option("--undo", is_flag=True, help="Bring back the text it had before the last edit.")
@store_option
def edit(id: int, text: str | None, tags: tuple[str, ...], undo: bool, store: str | None) -> None:
    """Correct memory ID: new TEXT (and/or --tag). The old text is kept in its history:
    `localmem edit ID --undo` brings it back."""
    if undo and (text is not None or tags):
        raise click.UsageError("--undo takes no TEXT or --tag")
    if not undo and text is None and not tags:
        raise click.UsageError("give the new TEXT, --tag, or --undo")
    with memory(store, create=False) as mem:
        if undo:
            m = mem.undo_edit(id)
            click.echo(f"#{id} is back to: {m.text}")
            return
        before = mem.get(id).text
        mem.update(id, text=text, tags=tags or None)
        changed = text is not None and text != before
        how = f" (localmem edit {id} --undo brings the old text back)" if changed else ""
        click.echo(f"edited #{id}{how}" if changed or tags else f"#{id} already says that")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@store_option
def stats(as_json: bool, store: str | None) -> None:
    """What the store holds."""
    from localmem.cli.sync import sync_line

    with memory(store, create=False) as mem:
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


COMMANDS = [remember, recall, forget, list_, pin, unpin, edit, stats]
