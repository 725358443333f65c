"""CRC32C, the checksum of every on-disk record, for the layers above the store."""

from __future__ import annotations

from localmem import _core


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, computed by the native core (SSE4.2/ARMv8 CRC when
    the CPU has them)."""
    return int(_core.crc32c(data))
