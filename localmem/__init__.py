"""localmem: on-device, local-first memory for LLM assistants."""

from __future__ import annotations

import warnings
from typing import Any

from localmem import _core, errors
from localmem.index import Int8Index, quantize
from localmem.memory import Hit, Memory, MemoryItem
from localmem.store import Item, Store

__version__: str = _core.build_info()["version"]


def build_info() -> dict[str, Any]:
    """Version, compiler, CPU features, and the SIMD kernel in use (``"kernel"``)."""
    return dict(_core.build_info())


if _core.build_info()["kernel_override_error"]:
    warnings.warn(_core.build_info()["kernel_override_error"], RuntimeWarning, stacklevel=2)

__all__ = [
    "Hit",
    "Int8Index",
    "Item",
    "Memory",
    "MemoryItem",
    "Store",
    "__version__",
    "build_info",
    "errors",
    "quantize",
]
