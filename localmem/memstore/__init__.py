"""The record layer under ``Memory``: one store, its catalog and the embedder, kept in step
(``MemoryStore``), and each tier's form of a memory (``forms``)."""

from localmem.memstore.memstore import MemoryStore, heals

__all__ = ["MemoryStore", "heals"]
