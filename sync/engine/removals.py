"""D5 for the whole deployment: before any mailbox removes anything in a cycle, add up what every mailbox with
pending work would remove and compare it with all the links the deployment holds. Decided by core.guard;
this module only gathers the figures (a dry plan per mailbox, and the link count each sync records)."""
from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..core import guard
from ..core.domain import LinkState, SyncFilter
from ..core.plan import plan
from ..core.settings import SyncSettings
from ..ports import MailboxPartitions, MailboxRecord, MailboxRegistry
from .observed import observations

READ_CONCURRENCY = 16


class RemovalsState(Protocol):
    """The state the deployment-wide guard reads."""

    @property
    def mailboxes(self) -> MailboxRegistry: ...

    @property
    def partitions(self) -> MailboxPartitions: ...


@dataclass(frozen=True)
class GuardVerdict:
    removals: int                   # counted by a dry plan of every mailbox, or (not exact) the most there can be
    links: int
    message: str | None             # set when the cycle's removals must wait
    exact: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"removals": self.removals, "exact": self.exact, "links": self.links, "blocked": self.message is not None,
                "message": self.message}


async def deployment_guard(state: RemovalsState, settings: SyncSettings, now: datetime, mailboxes: list[str], candidates: int,
                           global_filters: tuple[SyncFilter, ...] = (), *, held: int = 0,
                           listed: Mapping[str, MailboxRecord] | None = None,
                           carried: Collection[str] = ()) -> GuardVerdict:
    """`candidates`: observations this cycle's collect added that could remove; `held`: mailboxes whose removals an
    earlier cycle held (they are judged again, with what arrived since); `carried`: the mailboxes whose work was
    waiting before this cycle's collect (an earlier cycle's, or a webhook's). `listed`: every mailbox's record, as
    the cycle listed them (else each mailbox is read)."""
    if candidates < settings.mass_delete_min and not held and not carried:   # too few observations to reach the count
        return GuardVerdict(0, 0, None)
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def would_remove(address: str) -> int:
        async with slots:
            record = listed[address] if listed is not None and address in listed else await state.mailboxes.get(address)
            if record is None or not record.syncs:
                return 0
            partition = await state.partitions.load(address)       # one read: observations and links together
        observed = observations(partition.pending, partition.unreadable_links)
        return plan(observed.bookings, observed.deleted, partition.links, record.mailbox, settings, now, global_filters=global_filters,
                    force=True).removals

    listed_links = _listed_links(listed)
    if not held and listed_links is not None:
        # The cycle's removals are at most its candidates plus what the waiting work would remove, so only the
        # mailboxes with waiting work are read. Under the share, that is the verdict: in a cycle that cancels a tenth
        # of the bookings, it saves a read of every mailbox with work, before any mailbox may sync.
        waiting = set(carried)
        bound = candidates + sum(await asyncio.gather(*(would_remove(a) for a in mailboxes if a in waiting)))
        if not guard.over_share(bound, listed_links, settings):
            return GuardVerdict(bound, listed_links, None, exact=False)
    # Read concurrently: every mailbox with pending work waits for this verdict before it syncs.
    removals = sum(await asyncio.gather(*(would_remove(a) for a in mailboxes)))
    if removals < settings.mass_delete_min:
        return GuardVerdict(removals, 0, None)
    links = listed_links if listed_links is not None else await _count_links(state, listed)
    blocked = guard.over_share(removals, links, settings)
    return GuardVerdict(removals, links, guard.deployment_message(removals, links, len(mailboxes), settings) if blocked else None)


def _listed_links(listed: Mapping[str, MailboxRecord] | None) -> int | None:
    """All the deployment's links, from the count each sync records on its mailbox's record; None when one has none."""
    if listed is None:
        return None
    counts = [r.linked_count for r in listed.values()]
    return sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None


async def _count_links(state: RemovalsState, listed: Mapping[str, MailboxRecord] | None) -> int:
    links = 0
    for record in listed.values() if listed is not None else await state.mailboxes.all():
        counted = record.linked_count
        if counted is None:                                    # not synced since the count was introduced
            loaded = await state.partitions.load(record.address)
            counted = sum(1 for link in loaded.links.values() if link.state == LinkState.LINKED)
        links += counted
    return links
