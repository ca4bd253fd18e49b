"""MailboxPartitions on Table Storage: table `links`, PK the mailbox, one partition per mailbox holding

    RK booking            its link: event id, generation, fingerprints, event time, state
    RK ^p|booking         an observation waiting for the mailbox's next sync
    RK ^e|booking         the last error of the booking (G1)
    RK ^lease             the mailbox's sync lease (T2)

so a sync reads them in one query and commits in one transaction (with the lease's release). `key()` escapes "^",
so no booking's key can start with it.

What the port leaves to this adapter (round trips, measured by `make bench`): a commit goes in one transaction when
it fits (≤100 operations, no index rows to remove); a commit conditioned on the lease as read that does not fit
first takes the lease (conditioned on the same read), then commits as held. The sync's cost is then four round
trips: the read, the claim (with the create intents), the commit and the mailbox's status; a plan that calls
nothing makes three.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError

from ...core.domain import Link
from ...ports import LeaseAsRead, LeaseHeld, MailboxCommit, MailboxLease, MailboxState, Observation, Observed, StoreConflict
from .access import TableAccess
from .index import TableBookingIndex
from .keys import RELEASED, TRANSACTION_LIMIT, Operation, guarded, iso, key, unkey, upsert
from .registry import TableMailboxRegistry
from .rows import (
    ERROR_PREFIX,
    LEASE_ROW,
    OBSERVATION_PREFIX,
    error_entity,
    lease_entity,
    lease_of,
    link_entity,
    link_of,
    observation_entity,
    observation_of,
)

WRITE_CONCURRENCY = 16                 # mailboxes whose observations are written, or looked up, at once


class TableMailboxPartitions:
    def __init__(self, access: TableAccess, index: TableBookingIndex, registry: TableMailboxRegistry):
        self.access, self.index, self.registry = access, index, registry

    async def load(self, mailbox: str) -> MailboxState:
        state = MailboxState(links={}, pending=[], errors=set(), lease=None)
        async for e in self.access.query("links", key(mailbox)):
            row_key = e["RowKey"]
            if not row_key.startswith("^"):
                try:
                    link = link_of(e)
                except (KeyError, TypeError, ValueError):
                    state.unreadable_links.add(str(e.get("booking_id") or unkey(row_key)).lower())
                    continue
                state.links[link.booking_id] = link
            elif row_key.startswith(OBSERVATION_PREFIX):
                state.pending.append(observation_of(e))
            elif row_key.startswith(ERROR_PREFIX):
                state.errors.add(str(e.get("booking_id") or unkey(row_key[len(ERROR_PREFIX):])).lower())
            elif row_key == LEASE_ROW:
                state.lease = lease_of(e)
        return state

    async def links(self, mailbox: str) -> dict[str, Link]:
        return (await self.load(mailbox)).links

    async def observe(self, per_mailbox: Mapping[str, Observed]) -> None:
        now = iso(datetime.now(UTC))
        filled = {m.lower(): observed for m, observed in sorted(per_mailbox.items()) if observed}
        slots = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def add(mailbox: str, observed: Observed) -> None:
            async with slots:
                await self.access.transact("links", [upsert(observation_entity(mailbox, b, booking, now))
                                                     for b, booking in sorted(observed.items())])

        # Each mailbox's rows are independent of the others'; the marks only after all the rows, so a sync that saw
        # a mark reads the rows it covers.
        await asyncio.gather(*(add(m, observed) for m, observed in filled.items()))
        await self.registry.mark_work(filled)

    async def waiting_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str]) -> dict[str, set[str]]:
        wanted = {b.lower() for b in booking_ids}
        found: dict[str, set[str]] = {}
        slots = asyncio.Semaphore(WRITE_CONCURRENCY)
        low, high = OBSERVATION_PREFIX, OBSERVATION_PREFIX[:-1] + chr(ord(OBSERVATION_PREFIX[-1]) + 1)

        async def look(mailbox: str) -> None:
            async with slots:
                async for e in self.access.query("links", key(mailbox), "RowKey ge @low and RowKey lt @high", {"low": low, "high": high}):
                    if (booking_id := str(e["booking_id"]).lower()) in wanted:
                        found.setdefault(booking_id, set()).add(mailbox)

        if wanted:
            await asyncio.gather(*(look(m) for m in sorted({m.lower() for m in mailboxes})))
        return found

    async def claim(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                    intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        if seen is not None and seen.held_by_other(holder, now):
            return None
        expires = datetime.fromtimestamp(now.timestamp() + ttl_s, UTC)
        lease_op = guarded("update", lease_entity(mailbox, holder, expires), seen.etag if seen is not None else None)
        together = len(intents) < TRANSACTION_LIMIT          # the lease and the intents in one transaction when they fit
        if intents:
            await self.index.add(intents)
        try:
            etags = await self.access.transact("links", [lease_op, *(_link_op(link) for link in intents)] if together else [lease_op])
        except StoreConflict:
            return None
        except HttpResponseError as exc:
            if exc.status_code in (404, 409):              # the lease row went, or came, since the read
                return None
            raise
        lease = MailboxLease(holder, expires, etags[0])
        if together:
            return lease, [_with_etag(link, etag) for link, etag in zip(intents, etags[1:], strict=True)]
        return lease, await self._write_links(list(intents))

    async def renew(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None:
        expires = datetime.fromtimestamp(now.timestamp() + ttl_s, UTC)
        try:
            etag = await self.access.write("links", lease_entity(mailbox, lease.holder, expires), lease.etag)
        except StoreConflict:
            return None
        return MailboxLease(lease.holder, expires, etag)

    async def commit(self, mailbox: str, commit: MailboxCommit) -> bool:
        if isinstance(commit.lease, LeaseAsRead):
            return await self._commit_as_read(mailbox, commit, commit.lease)
        await self._commit_held(mailbox, commit, commit.lease)
        return True

    async def _commit_held(self, mailbox: str, commit: MailboxCommit, held: LeaseHeld) -> None:
        if commit.unindex:
            await self.index.remove_links(commit.unindex)
        strict, tolerant = self._operations(mailbox, commit)
        release = [_release_op(mailbox, held.lease)] if held.release and held.lease is not None else []
        if len(strict) + len(tolerant) + len(release) <= TRANSACTION_LIMIT:
            try:
                await self.access.transact("links", strict + tolerant + release)
                return
            except (StoreConflict, HttpResponseError) as exc:
                if not tolerant and not release:
                    raise _conflict(exc) from exc
        # Too large, or something besides the links changed (a newer observation, the lease lost): the links still
        # commit, strictly; each of the rest goes only if nothing newer replaced its row.
        await self.access.transact("links", strict)
        for operation in tolerant + release:
            await self.access.tolerant("links", operation)

    async def _commit_as_read(self, mailbox: str, commit: MailboxCommit, as_read: LeaseAsRead) -> bool:
        seen = as_read.seen
        if seen is not None and seen.held_by_other(as_read.holder, as_read.now):
            return False
        strict, tolerant = self._operations(mailbox, commit)
        released = _release_op(mailbox, seen) if seen is not None else ("create", lease_entity(mailbox, "", RELEASED))
        operations = [*strict, *tolerant, released]
        if commit.unindex or len(operations) > TRANSACTION_LIMIT:
            # Not one transaction: hold the lease (taken on the same read) while the parts go, one after another.
            claimed = await self.claim(mailbox, as_read.holder, as_read.now, as_read.ttl_s, seen)
            if claimed is None:
                return False
            await self._commit_held(mailbox, commit, LeaseHeld(claimed[0]))
            return True
        try:
            await self.access.transact("links", operations)
        except StoreConflict:
            return False
        except HttpResponseError as exc:
            if exc.status_code in (404, 409):          # a row the commit names went, or the lease row came, since the read
                return False
            raise
        return True

    def _operations(self, mailbox: str, commit: MailboxCommit) -> tuple[list[Operation], list[Operation]]:
        """A commit's operations: the links' (strict, by ETag), and the observations' and errors' (which may fail
        only because something newer replaced them)."""
        strict = [_link_op(link) for link in commit.puts] + [
            guarded("delete", {"PartitionKey": key(link.mailbox), "RowKey": key(link.booking_id)}, link.etag) for link in commit.deletes]
        consumed = [("delete", {"PartitionKey": key(mailbox), "RowKey": OBSERVATION_PREFIX + key(o.booking_id)},
                     {"etag": o.etag, "match_condition": MatchConditions.IfNotModified}) for o in commit.consumed if o.etag]
        return strict, consumed + _error_ops(mailbox, commit.errors, commit.known_errors)

    async def write_links(self, links: Sequence[Link]) -> list[Link]:
        # The index rows go first: an index row without a link only costs a skipped observation; a link without its
        # index row would miss a delete.
        if links:
            await self.index.add(links)
        return await self._write_links(list(links))

    async def _write_links(self, links: list[Link]) -> list[Link]:
        partitions: dict[str, list[tuple[int, Operation]]] = {}
        for position, link in enumerate(links):
            partitions.setdefault(key(link.mailbox), []).append((position, _link_op(link)))
        written = list(links)
        for chunk in partitions.values():
            etags = await self.access.transact("links", [op for _, op in chunk])
            for (position, _), etag in zip(chunk, etags, strict=True):
                written[position] = _with_etag(links[position], etag)
        return written

    async def delete_link(self, link: Link) -> None:
        await self.access.delete("links", key(link.mailbox), key(link.booking_id), link.etag)
        await self.access.delete("bookingindex", key(link.environment), f"{key(link.booking_id)}|{key(link.mailbox)}")

    async def last_error(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        entity = await self.access.get("links", key(mailbox), ERROR_PREFIX + key(booking_id))
        return {k: v for k, v in dict(entity).items() if k not in ("PartitionKey", "RowKey", "schema")} if entity else None

    async def observations(self, mailbox: str) -> list[Observation]:
        return (await self.load(mailbox)).pending


def _error_ops(mailbox: str, outcomes: Mapping[str, Mapping[str, Any]], known_errors: set[str]) -> list[Operation]:
    at = iso(datetime.now(UTC))
    operations: list[Operation] = []
    for booking_id, outcome in sorted(outcomes.items()):
        if outcome.get("error"):
            operations.append(upsert(error_entity(mailbox, booking_id, outcome, at)))
        elif booking_id.lower() in known_errors:
            operations.append(("delete", {"PartitionKey": key(mailbox), "RowKey": ERROR_PREFIX + key(booking_id)}))
    return operations


def _release_op(mailbox: str, lease: MailboxLease) -> Operation:
    # Released, the row stays with its holder cleared: a claim made against a read from before this commit then
    # fails on the ETag, where a deleted and re-created row would let it through.
    return guarded("update", lease_entity(mailbox, "", RELEASED), lease.etag)


def _link_op(link: Link) -> Operation:
    return guarded("update", link_entity(link), link.etag)


def _conflict(exc: Exception) -> Exception:
    return exc if isinstance(exc, StoreConflict) else StoreConflict(f"links: a row in the transaction changed concurrently ({exc})")


def _with_etag(link: Link, etag: str | None) -> Link:
    return replace(link, etag=etag)
