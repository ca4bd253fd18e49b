"""The ports: Protocols the engine, the app and the admin tools talk to, and the types they exchange.

Each port has an in-memory fake (sync/adapters/memory.py) and a real implementation (sync/adapters/), and
one contract suite (tests/contract/) runs against both. The state store is split by what it stores, so a
function asks for exactly the rows it touches.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NotRequired, Protocol, TypedDict

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
    "MailboxCommit",
    "MailboxLease",
    "MailboxProbe",
    "MailboxState",
    "MailboxStateStore",
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
    invalid_address: bool = False      # the user has an address, but not one a mailbox can have (E3): counted apart


FILTER_FIELDS = ("booking_statuses", "work_order_types", "territories")


class BookingSource(Protocol):
    @property
    def environment(self) -> str: ...

    @property
    def requests(self) -> int: ...

    async def read_window(self, start: datetime, end: datetime) -> ReadResult: ...

    async def read_window_for(self, start: datetime, end: datetime, mailboxes: Iterable[str]) -> ReadResult:
        """The window's bookings of these mailboxes' user resources only (newly enabled mailboxes start from them)."""
        ...

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
    etag: str | None                     # the partition row's (an inline observation's: the row it stands for, if any)
    observed_at: NotRequired[str | None]  # when it was written (ISO 8601): of two observations of a booking, the later wins
    inline: NotRequired[bool]            # carried on the mailbox row (PendingStore), not a row of the partition


class CursorRow(TypedDict):
    delta_links: dict[str, str]
    horizon: datetime | None
    etag: str | None


class MailboxStore(Protocol):
    """Mailboxes (M1-M6, G2) and the deployment's configuration rows (global filters, telemetry key)."""

    async def get_mailbox(self, address: str) -> Mailbox | None: ...

    async def get_mailbox_row(self, address: str) -> dict[str, Any] | None: ...

    async def mailbox_entry(self, address: str) -> tuple[Mailbox, dict[str, Any]] | None:
        """The mailbox and its whole row (status, pending marks, ETag), in one read."""
        ...

    async def put_mailbox(self, mailbox: Mailbox, etag: str | None = None, **extra: Any) -> str | None: ...

    async def update_mailbox_fields(self, address: str, **fields: Any) -> None: ...

    async def update_mailboxes_fields(self, addresses: Iterable[str], **fields: Any) -> None:
        """The same fields merged into several mailbox rows, in transactions of 100; a removed mailbox is not brought
        back as a fragment."""
        ...

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

    async def unindex_deleted(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        """Drops the index rows (booking -> the mailboxes holding it) of bookings Dataverse deleted, once their
        deletions wait with every holder: a deleted booking never comes back, so nothing is routed by them again."""
        ...

    async def mailboxes_for_bookings(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]: ...

    async def linked_bookings(self, environment: str) -> dict[str, set[str]]: ...


class PendingStore(Protocol):
    """Observations waiting for a mailbox's next sync: nothing is lost when a mailbox fails.

    Adding observations also marks the mailbox row (`pending_mark`, a fresh value each time); a sync that read the
    row before its observations records the mark it saw as `consumed_mark`. A mailbox has work while the two differ
    or its last sync left observations (`pending_left`), so finding the mailboxes with work reads only the mailbox
    rows, and no sync ever has to clear a marker.

    Collect may instead carry a mailbox's observations on its row, in the merge that sets the mark (an *inline set*,
    named by that mark: `inline_mark`, `inline_pending`), which saves a write per mailbox. It does so only when the
    row, as listed, shows the previous inline set acknowledged (`consumed_inline`) and has not changed since
    (If-Match). The sync that applies an inline set records its mark on the mailbox's lease row (`inline_done`) in
    the transaction that commits its links, so the set is applied once; what it keeps goes into the partition in
    that same transaction. Its status then acknowledges the set (`consumed_inline`)."""

    async def add_pending(self, mailbox: str, observations: dict[str, dict[str, Any] | None]) -> None: ...

    async def add_pending_batch(self, per_mailbox: Mapping[str, Mapping[str, dict[str, Any] | None]],
                                listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Several mailboxes' observations (collect's): each mailbox's rows, then all the marks together. `listed`:
        the mailbox rows as the caller read them (with their ETags); a mailbox whose row allows it gets its
        observations inline, in its mark's merge, instead of rows."""
        ...

    async def pending(self, mailbox: str) -> list[PendingRow]: ...

    async def pending_mailboxes(self) -> set[str]: ...

    async def pending_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str],
                              listed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, set[str]]:
        """booking id -> those of `mailboxes` (the ones with work) whose waiting observations name it. A booking
        observed for a mailbox that has not synced it has no link there, so this, not the booking index, finds who
        must hear of its deletion (D1). `listed`: the mailbox rows as the caller read them (their inline sets);
        without them, the rows are read."""
        ...


    async def clear_pending(self, mailbox: str, consumed: list[PendingRow]) -> None: ...


def has_pending_work(row: Mapping[str, Any]) -> bool:
    """A mailbox row whose mailbox has observations waiting (PendingStore: marks and what the last sync left)."""
    return (row.get("pending_mark") or "") != (row.get("consumed_mark") or "") or int(row.get("pending_left") or 0) > 0


# Characters of an inline set. Every listing of the mailbox rows (each cycle makes two) carries the sets until the
# next collect clears them, so only a few observations ride on a row (one is about 1.3 KB): the small-change cycles'
# sets fit, a newly enabled mailbox's whole window goes to its partition. (A Table string property holds 32 KiB.)
INLINE_LIMIT = 8_000


def inline_free(row: Mapping[str, Any]) -> bool:
    """Whether collect may write a new inline set on this row: it holds none, or a sync acknowledged the last one."""
    mark = row.get("inline_mark") or ""
    return not mark or mark == (row.get("consumed_inline") or "")


def inline_fields(mark: str, observations: Mapping[str, dict[str, Any] | None], at: str) -> dict[str, Any] | None:
    """The mailbox row's fields that carry an inline set (and its mark); None when it is too large to."""
    text = json.dumps({"at": at, "observations": dict(observations)}, separators=(",", ":"))
    return None if len(text) > INLINE_LIMIT else {"pending_mark": mark, "inline_mark": mark, "inline_pending": text}


def inline_set(row: Mapping[str, Any]) -> tuple[str, list[PendingRow]] | None:
    """The inline set a mailbox row carries: its mark and its observations (None: it carries none)."""
    mark = row.get("inline_mark") or ""
    if not mark:
        return None
    carried = json.loads(row.get("inline_pending") or "{}")
    at = carried.get("at")
    return mark, [{"booking_id": booking_id.lower(), "deleted": booking is None, "booking": booking, "etag": None, "observed_at": at,
                   "inline": True} for booking_id, booking in sorted((carried.get("observations") or {}).items())]


def inline_holders(mailboxes: Iterable[str], wanted: set[str], listed: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """booking id -> those of `mailboxes` whose row carries an inline set not yet acknowledged that names it (one
    applied but not acknowledged counts too: a deletion routed to a mailbox that has no link for it changes nothing)."""
    found: dict[str, set[str]] = {}
    for mailbox in mailboxes:
        row = listed.get(mailbox)
        carried = inline_set(row) if row is not None and not inline_free(row) else None
        for observation in carried[1] if carried else []:
            if observation["booking_id"] in wanted:
                found.setdefault(observation["booking_id"], set()).add(mailbox)
    return found


def _later(a: str | None, b: str | None) -> bool:
    """Whether time `a` is after `b` (ISO 8601; a missing time is the earliest)."""
    if not a:
        return False
    return not b or datetime.fromisoformat(a) > datetime.fromisoformat(b)


def _newer(a: PendingRow, b: PendingRow) -> bool:
    """Whether observation `a` saw a later state of the booking than `b`: by Dataverse's own modifiedon when both
    saw the row and it differs (no clock of ours involved), else by when each was written (a deletion has no
    modifiedon; two changes within one second of modifiedon tie)."""
    seen_a = (a["booking"] or {}).get("modified_on") if not a["deleted"] else None
    seen_b = (b["booking"] or {}).get("modified_on") if not b["deleted"] else None
    if seen_a and seen_b and seen_a != seen_b:
        return _later(seen_a, seen_b)
    return _later(a.get("observed_at"), b.get("observed_at"))


def with_inline(state: MailboxState, row: Mapping[str, Any] | None) -> MailboxState:
    """A sync's observations: the partition's and the row's inline set, unless the lease row records that set as
    applied already. Of two observations of one booking the later stands (_newer); an inline one that stands for an older
    row carries that row's ETag, so consuming it removes the row and keeping it replaces the row, each only if no
    newer observation replaced the row meanwhile."""
    found = inline_set(row) if row is not None else None
    if found is None or found[0] == (state.lease.inline_done if state.lease else ""):
        return state
    mark, carried = found
    by_id: dict[str, PendingRow] = {p["booking_id"].lower(): p for p in state.pending}
    for observation in carried:
        current = by_id.get(observation["booking_id"])
        if current is None:
            by_id[observation["booking_id"]] = observation
        elif not _newer(current, observation):
            by_id[observation["booking_id"]] = {**observation, "etag": current["etag"]}
    return replace(state, pending=list(by_id.values()), inline_mark=mark)


class OutcomeStore(Protocol):
    """The last error per booking, for diagnose (G1)."""

    async def record_outcomes(self, mailbox: str, outcomes: dict[str, dict[str, Any]]) -> None: ...

    async def outcome(self, mailbox: str, booking_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class MailboxLease:
    """A mailbox's lease row as read or written: it lives with the mailbox's links, so taking it is conditioned on
    the row the sync read with them, and giving it back is part of the sync's last transaction. Released, the row
    stays (holder empty): a later claim against an older read then fails on the changed ETag."""
    holder: str
    expires: datetime
    etag: str | None
    inline_done: str = ""                # the mark of the last inline set a sync applied (PendingStore); every write keeps it

    def held_by_other(self, holder: str, now: datetime) -> bool:
        return bool(self.holder) and self.holder != holder and self.expires > now


@dataclass
class MailboxState:
    """What one sync reads of a mailbox, in one query of its partition."""
    links: dict[str, Link]
    pending: list[PendingRow]
    errors: set[str]                     # bookings with a recorded error (OutcomeStore)
    lease: MailboxLease | None           # None: the mailbox was never leased
    inline_mark: str | None = None       # the inline set among `pending` (with_inline), if any
    # Bookings whose link row does not read (E3): the sync plans nothing for them, so a missing link can never
    # become a second create, and keeps their observations.
    unreadable_links: set[str] = field(default_factory=set)


# What a stored observation that does not parse reads as: no booking_from_dict takes it, so the sync sets it aside and
# keeps it (E3), instead of stopping on it or taking it for a deletion.
UNREADABLE_OBSERVATION: dict[str, Any] = {"unreadable": True}


@dataclass
class MailboxCommit:
    """What a sync writes when its Graph calls are done, in as few transactions of the partition as fit."""
    puts: list[Link] = field(default_factory=list)           # each matched by its ETag (or created when it has none)
    deletes: list[Link] = field(default_factory=list)
    unindex: list[Link] = field(default_factory=list)        # deleted links whose booking index row must go too
    consumed: list[PendingRow] = field(default_factory=list)  # removed unless a newer observation replaced them
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    known_errors: set[str] = field(default_factory=set)      # the error rows the sync read (a success removes its row)
    release: MailboxLease | None = None
    # The inline set applied (recorded on the lease row with the links), and its observations kept: written as rows.
    inline_done: str | None = None
    kept_inline: list[PendingRow] = field(default_factory=list)


class MailboxStateStore(Protocol):
    """One mailbox's sync in few round trips: read links, observations, errors and lease together; take the lease
    (with the create intents, when there are any); commit links, observations, errors and the release together."""

    async def mailbox_state(self, mailbox: str) -> MailboxState: ...

    async def claim_mailbox(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                            intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        """The lease, if `seen` is still the row and it is free, expired or this holder's; None otherwise (busy, or
        changed since the read: the sync stops and its work waits). Intents are written in the same transaction,
        their index rows first, and come back with their ETags."""
        ...

    async def renew_mailbox(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None: ...

    async def commit_mailbox(self, mailbox: str, commit: MailboxCommit) -> bool:
        """Raises StoreConflict when a link changed since it was read; observations replaced meanwhile stay, and a
        lease lost meanwhile is left to its new holder. Returns whether the lease row was released by this commit,
        and so records `inline_done` (a commit with no release, or whose lease was lost, records nothing there)."""
        ...

    async def commit_unclaimed(self, mailbox: str, commit: MailboxCommit, seen: MailboxLease | None, holder: str, now: datetime) -> bool:
        """The commit of a sync that calls nothing outside the store (its plan only skips, unlinks or forgets), made
        without claiming the lease first: one transaction, conditioned on the lease row as the sync read it (`seen`;
        None: no row yet), which it leaves released under a new ETag, so a claim made from an earlier read fails as
        it would after a claim and its release. The links' and the consumed observations' ETags hold too. False, with
        nothing written, when `seen` is held by another holder at `now` (as a claim would be refused), when any of
        them changed, or when the commit needs more than one transaction: the sync then claims as usual.
        `commit.unindex` must be empty (index rows go before their links, in a claimed commit)."""
        ...


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


class StateStore(MailboxStore, LinkStore, PendingStore, OutcomeStore, MailboxStateStore, CursorStore, RunStore, LeaseStore, WakeStore,
                 AuditStore, Protocol):
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
