"""Keeping the catalog true to the log: a view never runs ahead of the log and never serves
content no checksum vouches for.

The catalog is SQLite: no page checksums, and its own idea of how far it has read the log.
So it is checked where it can go wrong: when a store opens (the log may have been cut by a
recovery since the catalog last read it, or the catalog file damaged while closed), and
whenever a read of it fails. Whatever is wrong, the cure is the same: rebuild it from the
store's items, which every record of the log reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from localmem.catalog import SQLITE_DAMAGE, Catalog, CatalogDamageError
from localmem.errors import CorruptFileError, LogTruncatedError, UnknownIdError
from localmem.store import Store
from localmem.store import records as rec

log = logging.getLogger("localmem")

#: What a read of a damaged catalog raises: SQLite's own corruption errors, SQL errors
#: (the catalog's statements are fixed: "no such column" or a tokenizer that will not load
#: means its schema text was damaged), a row that fails its checksum and cannot be
#: rewritten, bytes that are not the UTF-8 SQLite stored.
DAMAGE = (CatalogDamageError, *SQLITE_DAMAGE, UnicodeDecodeError, OverflowError)
Progress = Callable[[int, int | None], object]


def open_catalog(path: Path, key: bytes | None = None, *, key_verified: bool = False) -> Catalog:
    """Opens the catalog; a damaged one is moved aside (kept for a post-mortem) and a new
    one made, for the caller to rebuild from the store, which holds everything it held.
    ``key``: an encrypted store's catalog key, kept by the new one too. A key that does not
    fit the file (``Catalog``) is EncryptionKeyError and moves nothing; ``key_verified``
    (the store authenticated the key) makes a first page that fails under it damage."""
    try:
        return Catalog(path, key=key, key_verified=key_verified)
    except CorruptFileError as e:
        log.warning("%s was damaged (%s); moved aside and rebuilt from the store", path, e)
        return fresh_catalog(path, key)


def fresh_catalog(path: Path, key: bytes | None = None) -> Catalog:
    """Moves the catalog's files aside (``.corrupt-<time>``) and opens an empty one,
    encrypted with ``key`` if one is given."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for f in path.parent.glob(path.name + "*"):
        if ".corrupt-" not in f.name:
            f.rename(f.with_name(f"{f.name}.corrupt-{stamp}"))
    return Catalog(path, key=key)


def item_source(store: Store) -> Callable[[int], tuple[int, bytes] | None]:
    """For ``Catalog.source``: the store's item ``id`` as a PUT payload (text and metadata,
    verified by the arena's checksum), or None when the store does not hold it."""

    def source(id: int) -> tuple[int, bytes] | None:
        try:
            it = store.get(id)
        except UnknownIdError:
            return None
        return store.last_lsn, rec.encode_put(id, it.text, it.meta, None, None)

    return source


def rebuild(store: Store, catalog: Catalog, progress: Progress | None = None) -> int:
    """Replaces every row of ``catalog`` with the store's items (an item that cannot be
    decoded is named, not fatal); returns how many were read."""
    last = store.last_lsn
    ids = store.ids()

    def items() -> Iterable[tuple[int, bytes]]:
        for n, id in enumerate(ids, 1):
            if progress is not None and (n % 1000 == 0 or n == len(ids)):
                progress(n, len(ids))
            try:
                it = store.get(id)
            except CorruptFileError as e:
                catalog.note_unreadable(id, last, e)
                continue
            except UnknownIdError:
                continue  # purged by another process meanwhile
            # The catalog reads text and metadata only: no vector to re-encode.
            yield last, rec.encode_put(id, it.text, it.meta, None, None)

    return catalog.rebuild(items(), lsn=last)


def ahead_of_log(store: Store, catalog: Catalog) -> str | None:
    """Why the catalog has read past the log, or None: asked before it catches up. It is
    ahead when it read further than the log goes, or when the record it last read is not
    the one the log holds at that LSN (a recovery cut the log, and new records took those
    LSNs)."""
    done, last = catalog.applied_lsn, store.last_lsn
    if done > last:
        return f"it had read the log up to record {done:,}, and the log ends at {last:,}"
    if done > 0:
        try:
            first = next(store.changes(done - 1, max_records=1), None)
        except LogTruncatedError:
            first = None  # a checkpoint covers it: records there cannot be cut
        if first is not None and first[0] == done and catalog.ends_on(done, first[2]) is False:
            return f"the log's record {done:,} is not the one it read there"
    return None


def listing_mismatch(store: Store, catalog: Catalog) -> str | None:
    """Why the caught-up catalog does not list the memories the store holds, or None."""
    held = set(store.ids())
    listed = set(catalog.all_ids())
    extra = listed - held
    if extra:
        return f"it lists {len(extra):,} memories the store no longer holds (id {min(extra)})"
    left_out = {int(u["id"]) for u in catalog.unreadable()}
    for id in sorted(held - listed - left_out)[:1000]:
        try:
            if store.get(id).meta.get("type") == "memory":
                return f"it is missing memory {id}, which the store holds"
        except (CorruptFileError, UnknownIdError):
            continue
    return None
