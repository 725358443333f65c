"""The SQLite catalog: a view of the store's log (metadata, FTS5 keyword index, entities,
the cold tier's sign codes), rebuilt from the log whenever it disagrees with it."""

from localmem.catalog.catalog import SQLITE_DAMAGE, Catalog
from localmem.catalog.reads import LIVE
from localmem.catalog.rows import CatalogDamageError, Row, full_row, item_row

__all__ = ["LIVE", "SQLITE_DAMAGE", "Catalog", "CatalogDamageError", "Row", "full_row", "item_row"]
