"""A hybrid logical clock (Kulkarni et al., 2014) for ordering writes across devices.

A timestamp is one int: milliseconds since the epoch in the high bits, a counter in the low
16. ``now()`` never returns a value it returned before or one below what it has seen, even
when the wall clock steps back (NTP, a restored backup, a device whose clock is minutes
off); ``observe(t)`` moves the clock past a timestamp read from another device, so a write
made after reading another's orders after it. Last-writer-wins by (timestamp, device id)
then gives every replica the same answer, whatever order records arrive in.

The clock keeps no file of its own: the caller persists ``last`` with what it writes and
seeds a new clock with the largest timestamp it holds (its own log, and what the sync
folder holds for this device: a device restored from an old backup finds its later
timestamps there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

COUNTER_BITS = 16
_COUNTER_MAX = (1 << COUNTER_BITS) - 1


def pack(ms: int, counter: int) -> int:
    return (ms << COUNTER_BITS) | counter


def unpack(t: int) -> tuple[int, int]:
    """(milliseconds, counter) of a timestamp."""
    return t >> COUNTER_BITS, t & _COUNTER_MAX


class HybridClock:
    """Thread-safe; ``wall`` returns milliseconds (tests pass a fake)."""

    def __init__(self, last: int = 0, *, wall: Callable[[], int] | None = None) -> None:
        if not isinstance(last, int) or last < 0:
            raise ValueError(f"a clock starts at a non-negative timestamp, got {last!r}")
        self._last = last
        self._wall = wall or (lambda: time.time_ns() // 1_000_000)
        self._mu = threading.Lock()

    @property
    def last(self) -> int:
        """The largest timestamp issued or observed."""
        return self._last

    def now(self) -> int:
        """A timestamp larger than every one issued or observed so far."""
        with self._mu:
            return self._advance(0)

    def observe(self, remote: int) -> int:
        """Moves past ``remote`` (a timestamp from another device); returns the new one."""
        if not isinstance(remote, int) or remote < 0:
            raise ValueError(f"a timestamp is a non-negative int, got {remote!r}")
        with self._mu:
            return self._advance(remote)

    def _advance(self, remote: int) -> int:
        ms, counter = unpack(max(self._last, remote))
        wall = self._wall()
        if wall > ms:
            ms, counter = wall, 0
        elif counter < _COUNTER_MAX:
            counter += 1
        else:  # 65,536 timestamps in one millisecond: borrow the next one
            ms, counter = ms + 1, 0
        self._last = pack(ms, counter)
        return self._last
