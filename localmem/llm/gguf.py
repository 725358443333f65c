"""A GGUF file's metadata (its key/value header), read by the native core's GGUF reader
(``csrc/core/llm/gguf_file.cpp``, the one the flash engine runs models with) without
llama.cpp.

Used to size the context before llama.cpp allocates one, to describe the models on this
machine, and to refuse a damaged header with a clear error. Scalars and strings are returned
as Python values; arrays (the tokenizer's vocabulary, say) as their length only. Every length
is checked against the file's size, so a damaged header raises ``CorruptFileError`` instead
of reading garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localmem import _core
from localmem.errors import CorruptFileError, StorageError

MAGIC = b"GGUF"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header's key/value pairs (arrays as their length) and ``GGUF.version``."""
    p = Path(path)
    try:
        return dict(_core.gguf_metadata(str(p)))
    except StorageError as e:  # cannot open or read it
        raise CorruptFileError(f"cannot read {p}: {e}") from e
