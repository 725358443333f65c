"""Importing an export file's memories into a store (``Memory.import_records``): untrusted
records checked whole before any is written, written as they are (ids, times, tiers,
provenance), then embedded with the store's model. A device that syncs gives them ids of
its own range, so they never collide with another device's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from localmem.catalog import memmeta
from localmem.errors import InvalidArgumentError
from localmem.items import Progress
from localmem.memstore.edits import relinked
from localmem.memstore.memstore import MemoryStore
from localmem.text.validate import check_record

Record = tuple[int, str, dict[str, Any]]


def import_records(
    records: MemoryStore, items: Iterable[tuple[Any, Any, Any]], progress: Progress | None = None
) -> int:
    """Exported memories (id, text, metadata: untrusted) checked as ``remember`` checks
    them, lifecycle state too (``validate.check_record``), all of them before any is
    written; ids the store holds, or given twice, refused. Then ``put_records``."""
    checked: list[Record] = []
    seen: set[int] = set()
    for n, (id, text, meta) in enumerate(items, 1):
        try:
            checked.append(check_record(id, text, meta))
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"memory {n} of the export (id {id!r}): {e}") from None
        if checked[-1][0] in seen:
            raise InvalidArgumentError(
                f"the export gives id {checked[-1][0]} twice: it was edited or damaged"
            )
        seen.add(checked[-1][0])
    if records.id_span is not None:
        checked = _renumbered(records, checked)
    clash = [id for id, _, _ in checked if id in records.store]
    if clash:
        raise InvalidArgumentError(
            f"this store already has {len(clash)} of the exported ids (first: {clash[0]}): "
            "import an export into an empty store"
        )
    put_records(records, checked, progress)
    return len(checked)


def _renumbered(records: MemoryStore, checked: list[Record]) -> list[Record]:
    """An export's memories with ids of this device's own (a syncing device: ids are
    unique across devices only within their span), references between them kept."""
    new = dict(zip([id for id, _, _ in checked], records.new_ids(len(checked)), strict=True))
    return [(new[id], text, relinked(meta, new)) for id, text, meta in checked]


def put_records(
    records: MemoryStore, checked: list[Record], progress: Progress | None = None
) -> None:
    """Memories written as they are (an import of an export: their ids, times, tiers and
    provenance kept), then embedded with this store's model."""
    model = records.model_id
    items = [(id, text, memmeta.pack(dict(meta, model=model)), None) for id, text, meta in checked]
    for i in range(0, len(items), 1000):
        records.put_many(items[i : i + 1000], {})
    records.sync()
    records.reembed(progress, [id for id, _, _ in checked])
