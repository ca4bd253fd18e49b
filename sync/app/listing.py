"""The one cache activities share in a worker's memory: the cycle's listing of the mailboxes.

A cycle starts dozens of mailbox syncs at once, each named by its pseudonym (orchestrations carry no address).
Each would otherwise list every mailbox row to find its address, and read its own row again: a cycle's cost
would grow with the square of the mailboxes, and each sync would make a fifth round trip. So the worker keeps
the listing its cycle's collect made last (after every mark it wrote), with the cycle's global filters:

- bounded: one cycle's listing, at most one record per registered mailbox, replaced by the next cycle's;
- scoped: a sync is handed a record from it only when it asks for the same cycle; any other caller, or a
  pseudonym not in it, lists again (once, for all the activities that ask together);
- the global filters it holds are re-read at most once a minute (FILTERS_TTL_S) outside a cycle's listing;
- with them, the deployment's telemetry key (the pseudonyms' key), read once: it never changes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from ..core.domain import SyncFilter
from ..core.pseudonym import mailbox_ref
from ..ports import MailboxRecord

log = logging.getLogger("sync.activities")
FILTERS_TTL_S = 60.0


class CycleListing:
    def __init__(self) -> None:
        self.cycle: str | None = None                    # the cycle whose activities the listing serves
        self._records: dict[str, MailboxRecord] = {}     # pseudonym -> record
        self._filters: tuple[float, tuple[SyncFilter, ...]] | None = None
        self._telemetry_key: str | None = None
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self) -> asyncio.Lock:
        """One lock per event loop: the activities that miss together list once."""
        return self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())

    def remember(self, telemetry_key: str, records: Iterable[MailboxRecord], cycle: str | None,
                 global_filters: tuple[SyncFilter, ...] | None = None) -> None:
        listed = list(records)
        unreadable = sum(1 for r in listed if r.unreadable)
        if unreadable:
            log.error("mailbox rows unreadable, not synced: count=%d", unreadable)
        self._records = {mailbox_ref(telemetry_key, r.address): r for r in listed}
        self.cycle = cycle
        if global_filters is not None:
            self._filters = (time.monotonic(), global_filters)

    def forget(self, cycle: str | None) -> None:
        """A collect of this cycle writes rows: the listing made before it no longer serves."""
        if cycle is not None and cycle == self.cycle:
            self.cycle = None

    def address(self, ref: str, cycle: str | None = None) -> str | None:
        """The address behind a pseudonym, when this listing may answer for `cycle` (None: any listing)."""
        if ref in self._records and (cycle is None or cycle == self.cycle):
            return self._records[ref].address
        return None

    def record(self, ref: str, cycle: str | None) -> MailboxRecord | None:
        """The mailbox's record from this cycle's listing (made after its collect), or None: the sync reads it."""
        return self._records.get(ref) if cycle is not None and cycle == self.cycle else None

    def records(self, cycle: str | None) -> dict[str, MailboxRecord] | None:
        """Every mailbox's record by address, when the listing is this cycle's."""
        return {r.address: r for r in self._records.values()} if cycle is not None and cycle == self.cycle else None

    async def global_filters(self, read: Callable[[], Awaitable[tuple[SyncFilter, ...]]]) -> tuple[SyncFilter, ...]:
        if self._filters is None or time.monotonic() - self._filters[0] > FILTERS_TTL_S:
            async with self.lock():
                if self._filters is None or time.monotonic() - self._filters[0] > FILTERS_TTL_S:
                    self._filters = (time.monotonic(), await read())
        return self._filters[1]

    async def telemetry_key(self, read: Callable[[], Awaitable[str]]) -> str:
        if self._telemetry_key is None:
            self._telemetry_key = await read()
        return self._telemetry_key
