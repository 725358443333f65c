"""Upkeep: the forgetting sweep, consolidation and session summaries, run in bounded steps —
by themselves after a write or a recall when one is due, or on demand
(``Memory.consolidate``, ``Memory.summarize_ended``). One step at a time per process."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from localmem.items import Progress
from localmem.lifecycle import consolidate, summaries, tiers
from localmem.memstore import MemoryStore

if TYPE_CHECKING:
    from localmem.llm.engine import Engine

log = logging.getLogger("localmem")


class Upkeep:
    """The upkeep of one store (``records``)."""

    def __init__(self, records: MemoryStore, *, automatic: bool = True) -> None:
        self.records = records
        self.enabled = automatic  # False: steps run only on demand
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def automatic(self, limit: int, *, sweep_only: bool = False) -> None:
        """A bounded step that must never fail the call that triggered it (skipped when
        another thread's step is running)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._last = time.monotonic()
            now = self.records.clock()
            tiers.sweep(self.records, now, 2 * limit)
            if not sweep_only:
                consolidate.step(self.records, now, limit)
        except Exception as e:
            log.warning("%s: automatic upkeep failed, will retry: %s", self.records.path, e)
        finally:
            self._lock.release()

    def when_due(self, interval: float, limit: int) -> None:
        """An automatic step if ``interval`` seconds passed since the last one."""
        if self.enabled and time.monotonic() - self._last >= interval:
            self.automatic(limit)

    def step(
        self,
        now: float,
        limit: int,
        llm: Engine | None,
        sessions: int,
        cancel: threading.Event | None,
    ) -> dict[str, int]:
        """What ``Memory.consolidate`` does. An automatic step another thread's call started
        finishes first (it is bounded), and none starts meanwhile."""
        with self._lock:
            counts = tiers.sweep(self.records, now, limit)
            counts.update(consolidate.step(self.records, now, limit))
            if llm is not None and sessions:
                counts["summarized"] = summaries.step(
                    self.records, llm, now, sessions, cancel=cancel
                )
        return counts

    def summarize_ended(
        self,
        llm: Engine,
        limit: int,
        cancel: threading.Event | None,
        progress: Progress | None,
    ) -> int:
        """What ``Memory.summarize_ended`` does: one conversation at a time, oldest first."""
        with self._lock:
            return summaries.step(
                self.records, llm, self.records.clock(), limit, cancel=cancel, progress=progress
            )
