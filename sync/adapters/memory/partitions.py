"""MailboxPartitions' fake: per mailbox, its links, waiting observations, errors and lease, each row with its ETag.
It holds the port's contract (what is all or nothing, what a changed row refuses), not Table Storage's mechanics."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ...core.domain import Link
from ...ports import LeaseAsRead, LeaseHeld, MailboxCommit, MailboxLease, MailboxState, Observation, Observed, StoreConflict
from .etags import ETags
from .index import MemoryBookingIndex
from .registry import MemoryMailboxRegistry

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Partition:
    links: dict[str, Link] = field(default_factory=dict)
    observations: dict[str, Observation] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    lease: MailboxLease | None = None


class MemoryMailboxPartitions:
    def __init__(self, etags: ETags, index: MemoryBookingIndex, registry: MemoryMailboxRegistry):
        self.etags, self.index, self.registry = etags, index, registry
        self.partitions: dict[str, Partition] = {}
        self.link_writes = 0            # link rows written or removed (tests weigh a sync's writes with it)

    def of(self, mailbox: str) -> Partition:
        return self.partitions.setdefault(mailbox.lower(), Partition())

    async def load(self, mailbox: str) -> MailboxState:
        p = self.of(mailbox)
        return MailboxState(dict(p.links), [p.observations[k] for k in sorted(p.observations)], set(p.errors), p.lease)

    async def links(self, mailbox: str) -> dict[str, Link]:
        return dict(self.of(mailbox).links)

    async def observations(self, mailbox: str) -> list[Observation]:
        return (await self.load(mailbox)).pending

    async def observe(self, per_mailbox: Mapping[str, Observed]) -> None:
        at = datetime.now(UTC).isoformat()
        filled = {m.lower(): observed for m, observed in per_mailbox.items() if observed}
        for mailbox, observed in filled.items():
            for booking_id, booking in observed.items():
                self.of(mailbox).observations[booking_id.lower()] = Observation(booking_id, copy.deepcopy(booking), at, self.etags.next())
        await self.registry.mark_work(filled)

    async def waiting_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str]) -> dict[str, set[str]]:
        wanted = {b.lower() for b in booking_ids}
        found: dict[str, set[str]] = {}
        for mailbox in {m.lower() for m in mailboxes}:
            for booking_id in wanted & set(self.of(mailbox).observations):
                found.setdefault(booking_id, set()).add(mailbox)
        return found

    async def claim(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                    intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        p = self.of(mailbox)
        if (seen is not None and seen.held_by_other(holder, now)) or _etag(p.lease) != _etag(seen) or self._any_changed(intents):
            return None
        p.lease = MailboxLease(holder, now + timedelta(seconds=ttl_s), self.etags.next())
        return p.lease, await self.write_links(intents)

    async def renew(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None:
        p = self.of(mailbox)
        if p.lease is None or p.lease.etag != lease.etag:
            return None
        p.lease = MailboxLease(lease.holder, now + timedelta(seconds=ttl_s), self.etags.next())
        return p.lease

    async def commit(self, mailbox: str, commit: MailboxCommit) -> bool:
        p = self.of(mailbox)
        if isinstance(commit.lease, LeaseAsRead):
            seen = commit.lease.seen
            if ((seen is not None and seen.held_by_other(commit.lease.holder, commit.lease.now)) or _etag(p.lease) != _etag(seen)
                    or self._links_changed(commit) or self._tolerant_refused(p, commit)):
                return False                                # all or nothing
            self._apply(p, commit)
            p.lease = MailboxLease("", RELEASED, self.etags.next())
            return True
        if self._links_changed(commit):
            raise StoreConflict("links: a row changed since it was read")
        self._apply(p, commit)
        held: LeaseHeld = commit.lease
        if held.release and held.lease is not None and _etag(p.lease) == held.lease.etag:
            p.lease = MailboxLease("", RELEASED, self.etags.next())
        return True

    def _apply(self, p: Partition, commit: MailboxCommit) -> None:
        for link in commit.puts:
            self._put(link)
        for link in commit.deletes:
            if p.links.pop(link.booking_id.lower(), None) is not None:
                self.link_writes += 1
            if link in commit.unindex:
                self.index.remove_link(link)
        for o in commit.consumed:                          # each only if no newer observation replaced it
            if o.etag and _etag(p.observations.get(o.booking_id.lower())) == o.etag:
                del p.observations[o.booking_id.lower()]
        for booking_id, outcome in commit.errors.items():
            if outcome.get("error"):
                p.errors[booking_id.lower()] = {"booking_id": booking_id, **outcome}
            elif booking_id.lower() in commit.known_errors:
                p.errors.pop(booking_id.lower(), None)

    def _tolerant_refused(self, p: Partition, commit: MailboxCommit) -> bool:
        """Whether a row the commit removes changed or went since the read (in one transaction, that refuses it)."""
        cleared = [b for b, o in commit.errors.items() if not o.get("error") and b.lower() in commit.known_errors]
        return (any(o.etag and _etag(p.observations.get(o.booking_id.lower())) != o.etag for o in commit.consumed)
                or any(b.lower() not in p.errors for b in cleared))

    def _links_changed(self, commit: MailboxCommit) -> bool:
        return self._any_changed(commit.puts) or any(link.etag and self._changed(link) for link in commit.deletes)

    def _any_changed(self, links: Iterable[Link]) -> bool:
        return any(self._changed(link) for link in links)

    def _changed(self, link: Link) -> bool:
        """Whether a write of this link would fail its ETag condition (no ETag: the row must not exist)."""
        current = self.of(link.mailbox).links.get(link.booking_id.lower())
        return (current is not None) if link.etag is None else (current is None or current.etag != link.etag)

    def _put(self, link: Link) -> Link:
        written = replace(link, booking_id=link.booking_id.lower(), mailbox=link.mailbox.lower(), environment=link.environment.lower(),
                          etag=self.etags.next())
        self.of(link.mailbox).links[written.booking_id] = written
        self.link_writes += 1
        return written

    async def write_links(self, links: Sequence[Link]) -> list[Link]:
        if self._any_changed(links):                       # all or nothing
            raise StoreConflict("links: a row changed since it was read")
        await self.index.add(links)
        return [self._put(link) for link in links]

    async def delete_link(self, link: Link) -> None:
        current = self.of(link.mailbox).links.get(link.booking_id.lower())
        if current is not None:
            if link.etag is not None and current.etag != link.etag:
                raise StoreConflict("links row changed concurrently")
            del self.of(link.mailbox).links[link.booking_id.lower()]
            self.link_writes += 1
        self.index.remove_link(link)

    async def last_error(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        found = self.of(mailbox).errors.get(booking_id.lower())
        return dict(found) if found else None


def _etag(row: Any) -> str | None:
    return row.etag if row is not None else None
