"""``localmem encrypt`` and ``localmem key ...``: encryption at rest from the command line
(the work is ``localmem.keys``')."""

from __future__ import annotations

import click

from localmem.cli.common import (
    encryption_line,
    keys_call,
    passphrase,
    progress_bar,
    store_option,
)


@click.command()
@store_option
@click.option("--keyring/--no-keyring", "use_keyring", default=None,
              help="Also keep the key in the OS keyring, so the store opens with no passphrase "
              "typed (default: when this session has a keyring).")  # fmt: skip
@click.option("--no-passphrase", is_flag=True,
              help="The OS keyring alone holds the key (if the keyring is lost, so is the "
              "store).")  # fmt: skip
def encrypt(store: str | None, use_keyring: bool | None, no_passphrase: bool) -> None:
    """Encrypt the store in place: every memory, vector and index is sealed on disk
    (XChaCha20-Poly1305; the catalog with SQLite3 Multiple Ciphers). Crash-safe: an
    interruption leaves the plain store or the encrypted one. Close the chat and MCP servers
    using the store first."""
    from localmem import keys
    from localmem.errors import LocalmemError

    if use_keyring is None:
        use_keyring = keys.keyring_available()
    if no_passphrase and not use_keyring:
        raise click.ClickException("--no-passphrase needs the OS keyring to hold the key")
    secret = None if no_passphrase else passphrase("New passphrase", confirm=True)
    try:
        with progress_bar("encrypting") as progress:
            out = keys.encrypt(store, passphrase=secret, keyring=use_keyring, progress=progress)
    except LocalmemError as e:
        raise click.ClickException(str(e)) from e
    held = " and ".join(
        ([] if no_passphrase else ["your passphrase"]) + (["the OS keyring"] if use_keyring else [])
    )
    click.echo(f"encrypted {out['path']}: {out['records']:,} log records, {out['blobs']:,} "
               f"blobs; the key is held by {held}")  # fmt: skip
    if out["plaintext_leftovers_dropped"]:
        click.echo(f"dropped {out['plaintext_leftovers_dropped']} plaintext file(s) set aside "
                   "by earlier repairs", err=True)  # fmt: skip


@click.group()
def key() -> None:
    """An encrypted store's key: unlock (keep it in the OS keyring), lock, rotate, status."""


@key.command(name="status")
@store_option
def key_status(store: str | None) -> None:
    """Whether the store is encrypted, and what holds its key."""
    from localmem import keys

    info = keys_call(keys.encryption, store)
    click.echo(encryption_line(info))
    if info is not None:
        import os

        state = "unlocked" if info["keyring_has_key"] else "locked (needs its passphrase)"
        if not info["keyring_has_key"] and os.environ.get("LOCALMEM_PASSPHRASE"):
            state = "locked in the OS keyring; $LOCALMEM_PASSPHRASE is set"
        click.echo(f"this session: {state}")


@key.command(name="unlock")
@store_option
def key_unlock(store: str | None) -> None:
    """Keep the store's key in the OS keyring (asks its passphrase once): then the chat,
    `localmem ask` and MCP servers open it with none typed."""
    from localmem import keys

    keys_call(keys.unlock, store, passphrase("Passphrase"))
    click.echo("unlocked: the OS keyring holds the key")


@key.command(name="lock")
@store_option
def key_lock(store: str | None) -> None:
    """Remove the store's key from the OS keyring: only its passphrase opens it then."""
    from localmem import keys

    keys_call(keys.lock, store)
    click.echo("locked: the passphrase alone opens the store")


@key.command(name="rotate")
@store_option
@click.option("--keyring/--no-keyring", "use_keyring", default=None,
              help="Keep the key in the OS keyring, under a new key (default: as "
              "now).")  # fmt: skip
@click.option("--no-passphrase", is_flag=True, help="The OS keyring alone holds the key.")
def key_rotate(store: str | None, use_keyring: bool | None, no_passphrase: bool) -> None:
    """Change the passphrase (and the keyring's key): the data key is re-wrapped, nothing
    is re-encrypted. Asks the current passphrase unless the keyring holds the key."""
    from localmem import keys

    info = keys_call(keys.encryption, store)
    if info is None:
        raise click.ClickException("the store is not encrypted (localmem encrypt)")
    if use_keyring is None:
        use_keyring = "keyring" in info["held_by"]
    if no_passphrase and not use_keyring:
        raise click.ClickException("--no-passphrase needs the OS keyring to hold the key")
    current = None if info["keyring_has_key"] else passphrase("Current passphrase")
    new = None if no_passphrase else passphrase(
        "New passphrase", confirm=True, env="LOCALMEM_NEW_PASSPHRASE"
    )  # fmt: skip
    if new is not None and new == current:
        raise click.ClickException("the new passphrase is the current one")
    keys_call(keys.rotate_key, store, passphrase=current, new_passphrase=new, keyring=use_keyring)
    click.echo("rotated: the data key is wrapped anew" + (" (and kept by the OS keyring)"
                                                           if use_keyring else ""))  # fmt: skip
