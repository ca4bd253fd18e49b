"""The state ports (Table Storage), one per concern, and `State`, which holds one of each.

Each has a fake in sync/adapters/memory/ and a Table Storage implementation in sync/adapters/tables/, in modules
of the same names, and one contract suite in tests/contract/ runs against the fake, Azurite and the Table double.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, Unpack

from ..core.domain import Link, Mailbox, SyncFilter
from .records import Cursor, MailboxCommit, MailboxFields, MailboxLease, MailboxRecord, MailboxState, Observation

Observed = Mapping[str, Mapping[str, Any] | None]     # booking id -> the booking as a dict, or None when deleted


class MailboxRegistry(Protocol):
    """The registered mailboxes (M1-M6, G2): each one's record, written by collect, the sync and the admin tools."""

    async def get(self, address: str) -> MailboxRecord | None: ...

    async def all(self) -> list[MailboxRecord]:
        """Every registered mailbox; a row that does not read as a mailbox comes back with `unreadable` set."""
        ...

    async def put(self, mailbox: Mailbox, *, etag: str | None = None, **fields: Unpack[MailboxFields]) -> str | None:
        """Writes the mailbox and these fields, keeping the record's other fields; matched by `etag` when given."""
        ...

    async def update(self, address: str, **fields: Unpack[MailboxFields]) -> None:
        """Merges fields into a registered mailbox's record; a mailbox removed meanwhile is not brought back."""
        ...

    async def update_many(self, addresses: Iterable[str], **fields: Unpack[MailboxFields]) -> None: ...

    async def mark_work(self, addresses: Iterable[str]) -> None:
        """A fresh `pending_mark` on each: observations were added for them (after the observations' rows)."""
        ...


class DeploymentConfig(Protocol):
    """The deployment's own settings kept with the state: the global sync filters, the telemetry pseudonym key."""

    async def global_filters(self) -> tuple[SyncFilter, ...]: ...

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None: ...

    async def telemetry_key(self) -> str: ...


class BookingIndex(Protocol):
    """Per environment, which mailboxes hold a link for a booking (routing deletions and reassignments)."""

    async def holders(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]: ...

    async def all_holders(self, environment: str) -> dict[str, set[str]]: ...

    async def add(self, links: Iterable[Link]) -> None: ...

    async def remove(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        """Drops the rows (booking -> mailboxes); a row already gone is no error."""
        ...


class MailboxPartitions(Protocol):
    """Each mailbox's links, waiting observations, last errors and lease, kept together: a sync reads them in one
    query (`load`) and writes them in one commit."""

    async def load(self, mailbox: str) -> MailboxState: ...

    async def links(self, mailbox: str) -> dict[str, Link]:
        """The mailbox's links (a load's), booking id -> link."""
        ...

    async def observations(self, mailbox: str) -> list[Observation]:
        """The mailbox's waiting observations (a load's)."""
        ...

    async def observe(self, per_mailbox: Mapping[str, Observed]) -> None:
        """Adds observations (the later wins over a waiting one), then marks the mailboxes as having work."""
        ...

    async def waiting_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str]) -> dict[str, set[str]]:
        """booking id -> those of `mailboxes` whose waiting observations name it (they must hear of its deletion: D1)."""
        ...

    async def claim(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                    intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        """The lease, if `seen` is still the row and it is free, expired or this holder's; None otherwise (busy, or
        changed since the read). The create intents are written with it, their index rows first, and come back with
        their ETags."""
        ...

    async def renew(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None: ...

    async def commit(self, mailbox: str, commit: MailboxCommit) -> bool:
        """Writes links, consumed observations, errors and the lease together.

        Held lease: raises StoreConflict when a link changed since it was read; an observation replaced meanwhile
        stays, and a lease lost meanwhile is left to its new holder; returns True. Lease as read: all or nothing;
        False, with nothing written, when that lease is another holder's at its `now` or anything the commit names
        changed since the read."""
        ...

    async def write_links(self, links: Sequence[Link]) -> list[Link]:
        """Links of one mailbox, all or nothing, their index rows first; they come back with their new ETags."""
        ...

    async def delete_link(self, link: Link) -> None: ...

    async def last_error(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        """The last error recorded for the booking in this mailbox (G1)."""
        ...


class Cursors(Protocol):
    async def get(self, environment: str) -> Cursor | None: ...

    async def put(self, environment: str, delta_links: Mapping[str, str], horizon: datetime, etag: str | None) -> None:
        """Matched by `etag` (None: creates), so two collects never move one cursor backwards."""
        ...


class Journal(Protocol):
    """An append-only log, newest first: the cycles' runs, or the administrative operations (audit)."""

    async def record(self, entry: Mapping[str, Any]) -> None: ...

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]: ...


class NamedLeases(Protocol):
    """Named leases with a time to live (the cycle's singleton, T1). The same holder may take its own lease again (a
    re-run of the same activity after its host died); a lease whose holder died is free once its TTL ran out."""

    async def acquire(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool: ...

    async def renew(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool: ...

    async def release(self, name: str, holder: str) -> None: ...


class WakeRows(Protocol):
    """Per mailbox, whether its own (webhook-started) sync is running, so that no change waits for the timer (T3).

    `request` marks the mailbox dirty when a sync runs, and otherwise claims it and returns the generation the
    caller must start; `finish` ends a claim only when nothing was marked since (else: go round again). Both are
    ETag-guarded, so a change recorded while a sync decides to stop is never lost."""

    async def request(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None: ...

    async def finish(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool: ...


class State(Protocol):
    """One of each state port, sharing one connection."""

    @property
    def mailboxes(self) -> MailboxRegistry: ...

    @property
    def config(self) -> DeploymentConfig: ...

    @property
    def partitions(self) -> MailboxPartitions: ...

    @property
    def index(self) -> BookingIndex: ...

    @property
    def cursors(self) -> Cursors: ...

    @property
    def runs(self) -> Journal: ...

    @property
    def audit(self) -> Journal: ...

    @property
    def leases(self) -> NamedLeases: ...

    @property
    def wakes(self) -> WakeRows: ...

    async def ensure_tables(self) -> None:
        """Creates what is missing and brings state an older version left up to this one (migrations)."""
        ...

    async def close(self) -> None: ...
