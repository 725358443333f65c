"""Crash points for fault-injection tests.

``LOCALMEM_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the point of
that name (for example ``checkpoint:after-arena``): the tests use it to interrupt
compaction at every step and check that reopening finds either the old or the new
generation, complete. ``<name>@SIGILL`` (or another signal's name) dies of that signal
instead, as native code that crashes there would (``llama:load@SIGILL``: a llama.cpp built
for another CPU). Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LOCALMEM_CRASH_AT"


def crash_point(name: str) -> None:
    value = os.environ.get(CRASH_ENV)
    if not value or not value.startswith(name):
        return
    at, _, sig_name = value.partition("@")
    if at != name:
        return
    sig = getattr(signal, sig_name, signal.SIGKILL) if sig_name else signal.SIGKILL
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)  # past any handler (faulthandler, say)
    os.kill(os.getpid(), sig)
