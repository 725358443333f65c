"""Exceptions raised by localmem. Every native error arrives as one of these.

Each class also derives from the built-in exception a caller would reach for first
(``ValueError`` for bad arguments, ``KeyError`` for unknown ids, ``OSError`` for storage),
so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class LocalmemError(Exception):
    """Base class of every localmem error."""


class InvalidArgumentError(LocalmemError, ValueError):
    """An argument has the wrong type, dtype, shape or value; the message says the fix."""


class DuplicateIdError(InvalidArgumentError):
    """An id given to ``add`` is already present, or appears twice in one batch."""


class UnknownIdError(LocalmemError, KeyError):
    """An id that the index or store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CorruptFileError(LocalmemError):
    """A file on disk is damaged, truncated or not of the expected format."""


class StorageError(LocalmemError, OSError):
    """An operating-system call on the store failed (open, write, fsync, rename, mmap)."""


class StorageFullError(StorageError):
    """The disk is full: the message names the path and the free space. A call that raised
    this did not happen, unless the message says it may have."""


class ConcurrencyError(LocalmemError):
    """Files changed underneath an object (another process wrote): refresh and retry. The
    store does this itself; seeing it from the public API is a bug worth reporting."""


class LogTruncatedError(ConcurrencyError):
    """The log no longer holds the records asked for (a checkpoint dropped them): rebuild
    the view from the store's items."""


class StoreLockedError(LocalmemError):
    """The store is busy: another process held its write lock for longer than the timeout."""


class StoreNotFoundError(LocalmemError, FileNotFoundError):
    """No store at the path given, and the call was not one that creates one (a read)."""


class ModelNotFoundError(LocalmemError, FileNotFoundError):
    """A model file (or the package that ships it) is not on this machine."""


class EngineCrashError(LocalmemError):
    """The LLM engine crashed in native code on this machine (seen in a child process that
    checks it, so this one lives): the message says what happened and the fallback."""


class ModelMismatchError(LocalmemError):
    """The store's vectors come from another embedding model than the one configured:
    re-embed (``Memory.open(..., reembed=True)``) or open it with its own model."""


class EncryptionKeyError(LocalmemError):
    """An encrypted store's key is missing or wrong (a passphrase that does not open it):
    the message says how to give the right one."""


__all__ = [
    "ConcurrencyError",
    "CorruptFileError",
    "DuplicateIdError",
    "EncryptionKeyError",
    "EngineCrashError",
    "InvalidArgumentError",
    "LocalmemError",
    "LogTruncatedError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "StorageError",
    "StorageFullError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnknownIdError",
]
