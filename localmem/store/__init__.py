"""The durable store: a write-ahead log and the views derived from it (see store.py)."""

from localmem.store.records import FIRST_USER_TYPE, Item
from localmem.store.store import Store

__all__ = ["FIRST_USER_TYPE", "Item", "Store"]
