"""localmem: on-device, local-first memory for LLM assistants.

The public names load on first use (PEP 562): ``import localmem`` and ``localmem --help``
load neither the native core nor numpy, SQLite or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localmem import errors, keys
    from localmem.assistant import Assistant, Turn
    from localmem.items import Hit, MemoryItem, Progress
    from localmem.memory import Memory
    from localmem.store import Item, Store
    from localmem.store.index import Int8Index, quantize
    from localmem.store.native import build_info
    from localmem.store.sealedstream import SealedWriter, is_sealed, open_sealed

    __version__: str

# name -> the module that defines it
_EXPORTS = {
    "Assistant": "localmem.assistant",
    "Turn": "localmem.assistant",
    "Hit": "localmem.items",
    "MemoryItem": "localmem.items",
    "Progress": "localmem.items",
    "Memory": "localmem.memory",
    "Item": "localmem.store",
    "Store": "localmem.store",
    "Int8Index": "localmem.store.index",
    "quantize": "localmem.store.index",
    "build_info": "localmem.store.native",
    # encrypted exports (issue 25): written and read by localmem.portable
    "SealedWriter": "localmem.store.sealedstream",
    "is_sealed": "localmem.store.sealedstream",
    "open_sealed": "localmem.store.sealedstream",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from localmem.store.native import version

        value: Any = version()
    elif name in ("errors", "keys"):
        value = importlib.import_module(f"localmem.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'localmem' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "__version__", "errors", "keys"])


__all__ = [
    "Assistant",
    "Hit",
    "Int8Index",
    "Item",
    "Memory",
    "MemoryItem",
    "Progress",
    "SealedWriter",
    "Store",
    "Turn",
    "__version__",
    "build_info",
    "errors",
    "is_sealed",
    "keys",
    "open_sealed",
    "quantize",
]
