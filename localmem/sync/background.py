"""Sync in the background of a long-running process (the MCP server): one step now, then
one every ``interval`` seconds, on a thread of its own; failures are logged, never raised
(the folder may be unmounted for weeks)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("localmem")

INTERVAL_ENV = "LOCALMEM_SYNC_INTERVAL"
DEFAULT_INTERVAL = 60.0


def interval() -> float:
    """Seconds between background steps: ``$LOCALMEM_SYNC_INTERVAL`` (0: never), else 60."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        log.warning("$%s=%r is not a number of seconds: using %g", INTERVAL_ENV, raw,
                    DEFAULT_INTERVAL)  # fmt: skip
        return DEFAULT_INTERVAL
    return max(value, 0.0)


class BackgroundSync:
    """Runs ``step()`` now and every ``every`` seconds until ``stop()``; ``last`` holds the
    last step's report (or its error, as ``{"error": message}``), also given to
    ``on_step``."""

    def __init__(
        self,
        step: Callable[[], Any],
        every: float,
        on_step: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        self._step, self._every, self._on_step = step, every, on_step
        self._stop = threading.Event()
        self.last: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="localmem-sync", daemon=True)
        if every > 0:
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.last = self._step()
            except Exception as e:  # logged: the next step tries again
                log.warning("background sync: %s", e)
                self.last = {"error": str(e)}
            if self._on_step is not None:
                try:
                    self._on_step(self.last)
                except Exception as e:  # a closing app: its callback has nowhere to go
                    log.debug("background sync callback: %s", e)
            if self._stop.wait(self._every):
                return

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the loop; waits for a step in progress (the store closes after it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
