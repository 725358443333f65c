"""``localmem sync ...``: one person's devices in step through a folder that Syncthing,
Dropbox, iCloud Drive, a share or a USB stick copies (the work is ``Memory.sync*``')."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from localmem.cli.common import memory, store_option

CODE_ENV = "LOCALMEM_SYNC_CODE"


@click.group(invoke_without_command=True)
@store_option
@click.option("--folder", type=click.Path(file_okay=False),
              help="The sync folder's new place, if it moved (remembered).")  # fmt: skip
@click.pass_context
def sync(ctx: click.Context, store: str | None, folder: str | None) -> None:
    """Sync memories between your devices through a shared folder, end-to-end encrypted.
    Without a subcommand: one sync now (export this device's changes, import the other
    devices'). The chat and the MCP server also sync in the background."""
    if ctx.invoked_subcommand is not None:
        return
    with memory(store, create=False) as mem:
        out = _run(mem.sync, folder)
    if out.get("busy"):
        click.echo("another localmem process is syncing this store now; nothing to do")
        return
    click.echo(f"imported {out['imported']:,} and exported {out['exported']:,} change(s)")
    for device, why in out["waiting"].items():
        click.echo(f"  device {device[:8]}: waiting for a segment that is {why} (the sync tool "
                   "has not copied it yet)")  # fmt: skip


def _run(fn: Any, *args: Any) -> Any:
    from localmem.errors import LocalmemError

    try:
        return fn(*args)
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e


@sync.command()
@click.argument("folder", type=click.Path(file_okay=False))
@store_option
def init(folder: str, store: str | None) -> None:
    """Set sync up: FOLDER (empty or new, inside the folder your sync tool shares) gets this
    device's encrypted changes, and this prints the join code your other devices need."""
    with memory(store) as mem:
        code = _run(mem.sync_init, folder)
        n = len(mem)
    click.echo(f"{n:,} memories are in the sync folder {folder} (encrypted).")
    click.echo("On each other device, once the folder is there, run:")
    click.echo(f"  localmem sync join {folder}")
    click.echo("and type this join code (it is the key: give it by hand, never through the "
               "folder or a chat):")  # fmt: skip
    click.echo(f"  {code}")


@sync.command()
@click.argument("folder", type=click.Path(file_okay=False))
@store_option
def join(folder: str, store: str | None) -> None:
    """Join the sync folder another device set up, with the join code it printed (typed at
    the prompt, or ${LOCALMEM_SYNC_CODE} for scripts). This store's own memories are kept
    and synced too."""
    code = os.environ.get(CODE_ENV)
    if not code:
        if not sys.stdin.isatty():
            raise click.ClickException(f"the join code is needed: set ${CODE_ENV}, or run this "
                                       "at a terminal to type it")  # fmt: skip
        code = click.prompt("Join code (localmem sync status --code on a device that syncs)",
                            err=True)  # fmt: skip
    with memory(store) as mem:
        out = _run(mem.sync_join, folder, code)
        n = len(mem)
    click.echo(f"joined: imported {out['imported']:,} and exported {out['exported']:,} "
               f"change(s); {n:,} memories here now")  # fmt: skip


@sync.command()
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--code", "show_code", is_flag=True,
              help="Also print the join code (to add a device; it is the key).")  # fmt: skip
def status(store: str | None, as_json: bool, show_code: bool) -> None:
    """Devices seen, the last import from each, segments waiting, conflicts resolved."""
    with memory(store, create=False) as mem:
        out = _run(mem.sync_status)
        code = _run(mem.sync_code) if show_code and out and "error" not in out else None
    if out is None:
        raise click.ClickException("this store does not sync: `localmem sync init FOLDER` on "
                                   "the first device, `localmem sync join FOLDER` on the "
                                   "others")  # fmt: skip
    if as_json:
        click.echo(json.dumps(dict(out, code=code) if code else out, indent=2))
        return
    if "error" in out:
        raise click.ClickException(out["error"])
    click.echo(
        f"device {out['device'][:8]} (ids from {max(out['slot'] * 10**9, 1):,}), folder "
        f"{out['folder']}" + ("" if out["folder_reachable"] else " — NOT REACHABLE")
    )
    click.echo(f"last sync: {_ago(out['last_sync'])}; exported {out['exported']:,}, imported "
               f"{out['imported']:,}; conflicts resolved {out['conflicts_resolved']:,}; "
               f"segments waiting {out['segments_pending']:,}")  # fmt: skip
    for d, info in out["devices"].items():
        click.echo(f"  device {d[:8]}: {info['segments']:,} segment(s) read, last import "
                   f"{_ago(info['last_import'])}")  # fmt: skip
    if out.get("slot_clash"):
        click.echo("warning: another device announced this device's id range; run `localmem "
                   "sync status --json` and report it", err=True)  # fmt: skip
    if out["rejected"]:
        click.echo(f"warning: {out['rejected']:,} change(s) were refused as damaged", err=True)
    if code:
        click.echo(f"join code: {code}")


def sync_line(st: dict[str, Any] | None) -> str:
    """``localmem stats``' sync line."""
    if st is None:
        return "off (localmem sync init FOLDER / localmem sync join FOLDER)"
    if "error" in st:
        return f"off: {st['error']}"
    where = st["folder"] + ("" if st["folder_reachable"] else " (not reachable)")
    return (f"with {len(st['devices'])} other device(s) through {where}; last sync "
            f"{_ago(st['last_sync'])}")  # fmt: skip


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    s = max(0.0, time.time() - t)
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s / n:.0f} {unit} ago"
    return f"{s:.0f} s ago"
