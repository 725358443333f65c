"""Crash points for fault-injection tests.

``LOCALMEM_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the point of
that name (for example ``checkpoint:after-arena``): the tests use it to interrupt
compaction at every step and check that reopening finds either the old or the new
generation, complete. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LOCALMEM_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
