from __future__ import annotations

import numpy as np

from localmem import _core


def test_standard_check_value():
    assert _core.crc32c(b"123456789") == 0xE3069283
    assert _core.crc32c(b"123456789", portable=True) == 0xE3069283
    assert _core.crc32c(b"") == 0


def test_hardware_equals_table_on_every_length_and_split(rng):
    data = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    for n in [*range(0, 40), 1000, 4099]:
        assert _core.crc32c(data[:n]) == _core.crc32c(data[:n], portable=True)
    whole = _core.crc32c(data)
    for cut in (1, 7, 8, 9, 2048):
        assert _core.crc32c(data[cut:], _core.crc32c(data[:cut])) == whole
