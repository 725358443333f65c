"""``localmem encrypt``: a plain store converted to an encrypted one, in place, crash-safely.

The encrypted store is built beside the plain one (``swap.staging_path``) from the plain
one's files, record for record and blob for blob, so every LSN, generation and checkpoint
stays what it was and the catalog's place in the log still holds:

1. nobody else may have the store open (``Presence``, taken exclusively): their writes would
   go to files that are about to be replaced;
2. a checkpoint, so the views are durable and the log is short;
3. into the new directory: ``KEY`` (the new data key, wrapped), the log (each record sealed
   with its LSN), the arena (each blob sealed with its LSN, key and flags), the index
   snapshot (sealed), the catalog (re-written by SQLite3 Multiple Ciphers), the manifest
   (sealed), the sync state if the store syncs (sealed); every file fsynced;
4. ``swap.switch``: one atomic exchange of the two directories, then the plain one deleted.

A kill -9 anywhere leaves the plain store (before the exchange) or the encrypted one (after):
each opens, and the next open removes what the crash left beside it. Quarantined log bytes
and damaged catalogs set aside by earlier repairs are plaintext that no view uses: they are
not carried over (counted in the result).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from localmem import _core
from localmem.catalog import Catalog, cipher
from localmem.errors import (
    CorruptFileError,
    EncryptionKeyError,
    InvalidArgumentError,
    LocalmemError,
)
from localmem.files import fsync_dir
from localmem.store import keyfile, swap, syncfolder
from localmem.store.crypt import StoreKey
from localmem.store.faults import crash_point
from localmem.store.index import Int8Index
from localmem.store.lock import Presence, StoreLock
from localmem.store.manifest import read_manifest, write_manifest
from localmem.store.store import Store

Progress = Callable[[int, int | None], object]
_BATCH = 2048  # records or blobs per append


def encrypt_store(
    path: Path,
    *,
    passphrase: str | None = None,
    use_keyring: bool = False,
    params: dict[str, int] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Encrypts the plain store at ``path`` in place (see the module doc); its data key is
    wrapped with ``passphrase`` and/or the OS keyring. Returns what was converted."""
    # The directory itself, not a symlink to it: the exchange would move the link.
    path = Path(path).expanduser().resolve()
    if passphrase is None and not use_keyring:
        raise InvalidArgumentError("encrypting needs a passphrase or the OS keyring (or both)")
    swap.finish_switch(path)  # a conversion cut between two renames comes first
    if (path / keyfile.KEY_FILE).exists():
        raise EncryptionKeyError(f"{path} is already encrypted")
    if not (path / "MANIFEST").exists():
        return _new_encrypted(path, passphrase, use_keyring, params)
    presence = Presence(path / "USERS", exclusive=True)
    try:
        swap.recover(path)
        with Store.open(path, create=False, presence=False) as store:
            # The log the catalog has not applied yet stays (it is copied, then applied by
            # the next open) rather than cost a full catalog rebuild.
            applied = _catalog_applied(path / "catalog.sqlite")
            exported = syncfolder.exported_lsn(path)  # and what the next sync export reads
            if exported is not None:
                applied = min(applied, exported)
            store.retain(lambda: applied)
            store.checkpoint()
        crash_point("encrypt:after-checkpoint")
        lock = StoreLock(path / "LOCK", timeout=30.0)
        with lock:
            new = swap.staging_path(path)
            shutil.rmtree(new, ignore_errors=True)
            new.mkdir(mode=0o700)
            result = _build(path, new, passphrase, use_keyring, params, progress)
            crash_point("encrypt:before-switch")
            swap.switch(path, new)
            crash_point("encrypt:after-switch")
    finally:
        presence.close()
    return result


def _catalog_applied(path: Path) -> int:
    """The last log record the (plain) catalog applied; 0 if it has none or cannot say."""
    if not path.exists():
        return 0
    try:
        catalog = Catalog(path)
    except LocalmemError:
        return 0  # damaged: the encrypted store's first open rebuilds it anyway
    try:
        return catalog.applied_lsn
    finally:
        catalog.close()


def _new_encrypted(
    path: Path, passphrase: str | None, use_keyring: bool, params: dict[str, int] | None
) -> dict[str, Any]:
    """No store yet: its key file alone, so the store is encrypted from its first byte (the
    first open makes the rest, with the vector space of whoever opens it)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidArgumentError(f"{path} is not a localmem store (and not empty)")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_dir(path.parent, required=False)
    dek = keyfile.create(path, os.urandom(8).hex(), passphrase=passphrase,
                         use_keyring=use_keyring, params=params)  # fmt: skip
    return {"records": 0, "blobs": 0, "key_id": keyfile.key_id(dek),
            "plaintext_leftovers_dropped": 0, "path": os.fspath(path)}  # fmt: skip


def _build(
    old: Path,
    new: Path,
    passphrase: str | None,
    use_keyring: bool,
    params: dict[str, int] | None,
    progress: Progress | None,
) -> dict[str, Any]:
    m = read_manifest(old / "MANIFEST")
    dek, header = keyfile.new_key(m.store_id)
    key = StoreKey(dek)
    keyfile.write(new, m.store_id, dek,
                  keyfile.make_wraps(header, dek, passphrase, use_keyring, params))  # fmt: skip
    crash_point("encrypt:after-key")
    state = syncfolder.read_state(old / syncfolder.STATE_FILE, None)
    if state is not None:  # a device that syncs: its state (and sync key) sealed now
        syncfolder.write_state(new / syncfolder.STATE_FILE, state, key.native)
    for sub in ("wal", "arena", "index"):
        (new / sub).mkdir(mode=0o700)

    # The log, record for record: a new log started at the old one's first LSN gives each
    # record the LSN it had.
    wal = _core.Wal(str(old / "wal"), sync="off", start_lsn=m.checkpoint_lsn + 1)
    last = int(wal.last_lsn)
    out = _core.Wal(str(new / "wal"), sync="off", start_lsn=int(wal.first_lsn), key=key.native)
    out.recover()  # creates the first segment
    at, records = int(wal.first_lsn) - 1, 0
    while at < last:
        batch = wal.read(at, _BATCH, 16 << 20)
        if not batch:
            raise CorruptFileError(f"{old}: log record {at + 1} is unreadable; nothing changed")
        out.append_batch([t for _, t, _ in batch], [p for _, _, p in batch])
        at = int(batch[-1][0])
        records += len(batch)
    out.sync()
    if int(out.last_lsn) != last:  # never: the copy appends exactly what it read
        raise CorruptFileError(f"{old}: the log copy ends at {out.last_lsn}, not {last}")
    crash_point("encrypt:after-wal")

    # The arena, blob for blob (live or not: the views' replay expects what it had).
    arena = _core.BlobArena(str(old / m.arena_file()), m.generation)
    scan = arena.refresh(last)
    _core.BlobArena.create(str(new / m.arena_file()), m.generation, key.native)
    copy = _core.BlobArena(str(new / m.arena_file()), m.generation, key.native)
    n = len(scan["lsns"])
    for i in range(0, n, _BATCH):
        j = min(n, i + _BATCH)
        payloads = [
            arena.view(int(o), int(ln), verify=True)
            for o, ln in zip(scan["offsets"][i:j], scan["lengths"][i:j], strict=True)
        ]
        copy.append_batch(scan["keys"][i:j].tolist(), scan["lsns"][i:j].tolist(),
                          scan["flags"][i:j].tolist(), payloads)  # fmt: skip
        if progress is not None:
            progress(j, n)
    copy.sync()
    crash_point("encrypt:after-arena")

    if m.index_file is not None and (old / m.index_file).exists():
        Int8Index.load(old / m.index_file).save(new / m.index_file, key=key.native)
    catalog = old / "catalog.sqlite"
    if catalog.exists():
        cipher.encrypt_catalog(catalog, new / "catalog.sqlite", key.catalog_key)
    crash_point("encrypt:after-catalog")
    write_manifest(new / "MANIFEST", replace(m, arena_end=int(copy.end)), key)
    for sub in ("wal", "arena", "index"):
        fsync_dir(new / sub)
    fsync_dir(new)
    left = sum(1 for _ in (old / "wal" / "quarantine").glob("*")) if (
        old / "wal" / "quarantine").is_dir() else 0  # fmt: skip
    left += sum(1 for f in old.glob("catalog.sqlite*.corrupt-*"))
    return {"records": records, "blobs": n, "key_id": key.key_id,
            "plaintext_leftovers_dropped": left, "path": os.fspath(old)}  # fmt: skip
