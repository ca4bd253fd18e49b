"""D5 for the whole deployment: before any mailbox removes anything in a cycle, add up what every mailbox with
pending work would remove and compare it with all the links the deployment holds. Decided by core.guard;
this module only gathers the figures (a dry plan per mailbox, and the link count each sync records)."""
from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..core import guard
from ..core.domain import LinkState, Mailbox, SyncFilter
from ..core.plan import plan
from ..core.settings import SyncSettings
from ..ports import LinkStore, MailboxStateStore, MailboxStore, with_inline
from .mailbox import observations

READ_CONCURRENCY = 16


class RemovalsStore(MailboxStore, LinkStore, MailboxStateStore, Protocol):
    """The rows the deployment-wide guard reads."""


@dataclass(frozen=True)
class GuardVerdict:
    removals: int                   # counted by a dry plan of every mailbox, or (not exact) the most there can be
    links: int
    message: str | None             # set when the cycle's removals must wait
    exact: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"removals": self.removals, "exact": self.exact, "links": self.links, "blocked": self.message is not None,
                "message": self.message}


async def deployment_guard(store: RemovalsStore, settings: SyncSettings, now: datetime, mailboxes: list[str], candidates: int,
                           global_filters: tuple[SyncFilter, ...] = (), *, held: int = 0,
                           listed: Mapping[str, tuple[Mailbox, Mapping[str, Any]]] | None = None,
                           carried: Collection[str] = ()) -> GuardVerdict:
    """`candidates`: observations this cycle's collect added that could remove; `held`: mailboxes whose removals an
    earlier cycle held (they are judged again, with what arrived since); `carried`: the mailboxes whose work was
    waiting before this cycle's collect (an earlier cycle's, or a webhook's). `listed`: every mailbox and its row,
    as the cycle listed them (else each mailbox is read)."""
    if candidates < settings.mass_delete_min and not held and not carried:   # too few observations to reach the count
        return GuardVerdict(0, 0, None)
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def would_remove(address: str) -> int:
        async with slots:
            entry = listed[address] if listed is not None and address in listed else await store.mailbox_entry(address)
            if entry is None or not entry[0].eligible:
                return 0
            mailbox = entry[0]
            # one read: observations and links together (and the inline set its row carries)
            state = with_inline(await store.mailbox_state(address), entry[1])
        observed = observations(state.pending, state.unreadable_links)
        return plan(observed.bookings, observed.deleted, state.links, mailbox, settings, now, global_filters=global_filters,
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
    links = listed_links if listed_links is not None else await _count_links(store, listed)
    blocked = guard.over_share(removals, links, settings)
    return GuardVerdict(removals, links, guard.deployment_message(removals, links, len(mailboxes), settings) if blocked else None)


def _listed_links(listed: Mapping[str, tuple[Mailbox, Mapping[str, Any]]] | None) -> int | None:
    """All the deployment's links, from the count each sync records on its mailbox row; None when a row has none."""
    if listed is None:
        return None
    counts = [row.get("linked_count") for _, row in listed.values()]
    return sum(int(c) for c in counts if c is not None) if all(c is not None for c in counts) else None


async def _count_links(store: RemovalsStore, listed: Mapping[str, tuple[Mailbox, Mapping[str, Any]]] | None) -> int:
    links = 0
    for row in [r for _, r in listed.values()] if listed is not None else await store.list_mailboxes():
        counted = row.get("linked_count")
        if counted is None:                                    # not synced since the count was introduced
            counted = sum(1 for link in (await store.links(row["address"])).values() if link.state == LinkState.LINKED)
        links += int(counted)
    return links
