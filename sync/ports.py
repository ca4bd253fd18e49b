"""The ports: Protocols the engine, the app and the admin tools talk to, and the types they exchange.

Each port has an in-memory fake (sync/adapters/memory.py) and a real implementation (sync/adapters/), and
one contract suite (tests/contract/) runs against both. The state store is split by what it stores, so a
function asks for exactly the rows it touches.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypedDict

from .core.domain import Booking, Link, Mailbox, SkippedRow, SyncFilter
from .core.operations import CalendarOp, OpKind, OpResult, Outcome
from .core.tenants import TenantMap

__all__ = [
    "FILTER_FIELDS",
    "AuditStore",
    "Booking",
    "BookingSource",
    "Calendar",
    "CalendarOp",
    "ChangeSet",
    "ChangeTokenExpired",
    "CursorRow",
    "CursorStore",
    "DurableClient",
    "LeaseStore",
    "LinkStore",
    "MailboxProbe",
    "MailboxStore",
    "MailboxUnavailable",
    "OpKind",
    "OpResult",
    "Outcome",
    "OutcomeStore",
    "PendingRow",
    "PendingStore",
    "PermanentError",
    "ReadResult",
    "RunStore",
    "Services",
    "StateStore",
    "StoreConflict",
    "SyncError",
    "TransientError",
    "UserResource",
    "WakeStore",
]


# ---- errors every adapter maps its failures to ---------------------------------------------------------------

class SyncError(Exception):
    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


class TransientError(SyncError):
    """429, 5xx, timeouts: retried with backoff, then left for the next cycle; a mailbox's status is unchanged."""


class PermanentError(SyncError):
    """Configuration or access problems a person must fix."""


class MailboxUnavailable(PermanentError):
    """The mailbox itself refused (not found, access denied, disabled: M6); `reason` is a person's next step."""

    def __init__(self, reason: str):
        super().__init__(reason, code="mailbox_unavailable")
        self.reason = reason


class ChangeTokenExpired(Exception):
    """Dataverse no longer knows the delta token: read the whole window instead (T4)."""


class StoreConflict(Exception):
    """Someone else changed the row since it was read (ETag mismatch)."""


# ---- booking source (Dataverse) --------------------------------------------------------------------------------

@dataclass
class ReadResult:
    bookings: list[Booking] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)

    def extend(self, other: ReadResult) -> None:
        self.bookings.extend(other.bookings)
        self.skipped.extend(other.skipped)


@dataclass
class ChangeSet:
    changed_bookings: set[str] = field(default_factory=set)
    deleted_bookings: set[str] = field(default_factory=set)
    changed_work_orders: set[str] = field(default_factory=set)
    delta_links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserResource:
    resource_id: str
    user_id: str | None
    mailbox: str | None
    disabled: bool


FILTER_FIELDS = ("booking_statuses", "work_order_types", "territories")


class BookingSource(Protocol):
    @property
    def environment(self) -> str: ...

    @property
    def requests(self) -> int: ...

    async def read_window(self, start: datetime, end: datetime) -> ReadResult: ...

    async def read_bookings(self, ids: Iterable[str]) -> ReadResult: ...

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime) -> ReadResult: ...

    async def read_changes(self, delta_links: dict[str, str] | None) -> ChangeSet: ...

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None,
                         slice_end: datetime) -> tuple[ChangeSet, ReadResult]: ...

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None: ...

    async def list_user_resources(self) -> list[UserResource]: ...

    async def filter_values(self) -> dict[str, set[str]]:
        """The names a sync filter can name (FILTER_FIELDS -> names): booking statuses, work order types, territories."""
        ...


# ---- calendar (Graph) ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MailboxProbe:
    ok: bool
    reason: str | None = None      # stable code: mailbox_not_found, access_denied, mailbox_disabled, calendar_read_only, ...
    message: str | None = None     # a sentence a person can act on
    time_zone: str | None = None
    transient: bool = False
    warning: str | None = None     # writable, but something a person may want to fix (the time zone fell back to UTC)


class Calendar(Protocol):
    async def test_mailboxes(self, mailboxes: Sequence[str]) -> dict[str, MailboxProbe]: ...

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]: ...

    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]: ...

    async def list_events(self, mailbox: str, top: int = 50) -> list[dict[str, Any]]: ...


# ---- state (Table Storage), split by what it stores -------------------------------------------------------------

class PendingRow(TypedDict):
    booking_id: str
    deleted: bool
    booking: dict[str, Any] | None
    etag: str | None


class CursorRow(TypedDict):
    delta_links: dict[str, str]
    horizon: datetime | None
    etag: str | None


class MailboxStore(Protocol):
    """Mailboxes (M1-M6, G2) and the deployment's configuration rows (global filters, telemetry key)."""

    async def get_mailbox(self, address: str) -> Mailbox | None: ...

    async def get_mailbox_row(self, address: str) -> dict[str, Any] | None: ...

    async def put_mailbox(self, mailbox: Mailbox, etag: str | None = None, **extra: Any) -> str | None: ...

    async def update_mailbox_fields(self, address: str, **fields: Any) -> None: ...

    async def list_mailboxes(self) -> list[dict[str, Any]]: ...

    async def global_filters(self) -> tuple[SyncFilter, ...]: ...

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None: ...

    async def telemetry_key(self) -> str: ...


class LinkStore(Protocol):
    """Links (booking, mailbox) -> event, and the index of which mailboxes hold a link for a booking."""

    async def links(self, mailbox: str) -> dict[str, Link]: ...

    async def get_link(self, mailbox: str, booking_id: str) -> Link | None: ...

    async def put_link(self, link: Link) -> Link: ...

    async def put_links(self, links: list[Link], *, index: bool = True) -> list[Link]:
        """All or nothing per partition; returns the links with their new ETags, in order."""
        ...

    async def delete_link(self, link: Link) -> None: ...

    async def mailboxes_for_bookings(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]: ...

    async def linked_bookings(self, environment: str) -> dict[str, set[str]]: ...


class PendingStore(Protocol):
    """Observations waiting for a mailbox's next sync: nothing is lost when a mailbox fails."""

    async def add_pending(self, mailbox: str, observations: dict[str, dict[str, Any] | None]) -> None: ...

    async def pending(self, mailbox: str) -> list[PendingRow]: ...

    async def pending_mailboxes(self) -> set[str]: ...

    async def clear_pending(self, mailbox: str, consumed: list[PendingRow]) -> None: ...


class OutcomeStore(Protocol):
    """The last error per booking, for diagnose (G1)."""

    async def record_outcomes(self, mailbox: str, outcomes: dict[str, dict[str, Any]]) -> None: ...

    async def outcome(self, mailbox: str, booking_id: str) -> dict[str, Any] | None: ...


class CursorStore(Protocol):
    """Per environment: the change-tracking delta links and the window horizon already read (T4)."""

    async def get_cursor(self, environment: str) -> CursorRow | None: ...

    async def put_cursor(self, environment: str, delta_links: dict[str, str], horizon: datetime, etag: str | None) -> None: ...


class RunStore(Protocol):
    async def record_run(self, run: dict[str, Any]) -> None: ...

    async def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]: ...


class LeaseStore(Protocol):
    """Named leases with a time to live. The same holder may take its own lease again (a re-run of the same
    activity after its host died); a lease whose holder died is free once its TTL ran out."""

    async def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool: ...

    async def renew_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        """Extends a lease this holder still holds; False when it was lost (expired and taken)."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...


class AuditStore(Protocol):
    """Who did what, on which mailboxes, when, with what result: one row per administrative operation."""

    async def record_audit(self, entry: dict[str, Any]) -> None: ...

    async def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]: ...


class WakeStore(Protocol):
    """Per mailbox, whether its own (webhook-started) sync is running, so that no change waits for the timer (T3).

    `request_sync` marks the mailbox dirty when a sync runs, and otherwise claims it and returns the generation
    the caller must start; `finish_sync` ends a claim only when nothing was marked since (else: go round again).
    Both are ETag-guarded, so a change recorded while a sync decides to stop is never lost."""

    async def request_sync(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None: ...

    async def finish_sync(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool: ...


class StateStore(MailboxStore, LinkStore, PendingStore, OutcomeStore, CursorStore, RunStore, LeaseStore, WakeStore, AuditStore,
                 Protocol):
    """Every table; the real one shares one Table service client."""

    async def ensure_tables(self) -> None: ...

    async def close(self) -> None: ...


class DurableClient(Protocol):
    """The part of the Durable Functions client the app uses: the Functions host's, or the local runner's."""

    async def get_status(self, instance_id: str) -> Any: ...

    async def start_new(self, orchestration_function_name: str, instance_id: str, client_input: Any) -> str: ...


class Services(Protocol):
    """What the admin tools and the app are handed: the state, the calendar, a booking source per environment."""

    @property
    def store(self) -> StateStore: ...

    @property
    def calendar(self) -> Calendar: ...

    @property
    def tenants(self) -> TenantMap:
        """Which Entra tenant holds each mailbox (MAILBOX_TENANTS)."""
        ...

    def source(self, environment: str) -> BookingSource: ...
