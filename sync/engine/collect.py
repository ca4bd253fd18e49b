"""Step 1 of a cycle, once per environment: read what changed in Dataverse, route each booking to the
mailboxes it concerns, and persist it there as a pending observation; then advance the cursor.

- `read`: change tracking plus the slice of time that entered the window (T4, S3), or the whole window
  when there is no valid token, and every cycle while a table's change tracking is off (T5); newly enabled
  mailboxes get their window read too.
- `route` (pure): a booking goes to its current mailbox, if that mailbox is registered and bound to this
  environment (M4), and to every mailbox holding a link for it, so a reassignment or a delete reaches both; a
  delete also reaches the mailboxes whose waiting observations name the booking (`with_waiting`). A cancellation
  X1 leaves alone (`scope.left_alone`, with the mailbox's filters) is not kept for a mailbox with no waiting work:
  its sync would skip it.
- `persist`: pending observations first, then the cursor, ETag-guarded, so nothing read is lost if a
  mailbox fails later and two collects never move one cursor backwards.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..core import scope
from ..core.domain import Booking, Mailbox, SkippedRow, SyncFilter
from ..core.scope import window
from ..core.serialize import booking_to_dict
from ..core.settings import SyncSettings
from ..ports import (
    BookingIndex,
    BookingSource,
    ChangeTokenExpired,
    ChangeTrackingOff,
    Cursor,
    MailboxPartitions,
    MailboxRecord,
    ReadResult,
    State,
)

log = logging.getLogger("sync.engine")


CollectState = State          # collect reads the registry, the config, the index and the cursors, and writes partitions


@dataclass
class Observations:
    mode: str                                   # full | delta
    observed: dict[str, Booking | None]         # booking id -> its current state, None when deleted
    skipped: list[SkippedRow]
    delta_links: dict[str, str]
    initial: dict[str, Booking] = field(default_factory=dict)   # window reads for newly enabled mailboxes
    holders: dict[str, set[str]] = field(default_factory=dict)  # observed booking id -> mailboxes the index says link it
    tracking_off: list[str] = field(default_factory=list)       # tables whose change tracking is off (T5)


@dataclass
class CollectResult:
    environment: str
    mode: str                       # full | delta
    bookings_read: int = 0
    deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    routed: dict[str, int] = field(default_factory=dict)    # mailbox -> observations stored
    unregistered: int = 0
    removal_candidates: int = 0                             # observations that could remove an event (D5's gate)
    left_alone: int = 0                                     # observations not kept: X1 leaves their events as they are
    removals_held: int = 0                                  # mailboxes whose removals an earlier cycle's guard held
    tracking_off: list[str] = field(default_factory=list)   # T5: tables without change tracking; the window was read whole
    retest: list[str] = field(default_factory=list)         # M8: mailboxes refused within Exchange's delay, to test again
    mailboxes: list[str] = field(default_factory=list)      # mailboxes with pending work
    carried: list[str] = field(default_factory=list)        # of them, those whose work was waiting before this collect
    # The mailboxes as listed at the end (every mark written): the listing the cycle's syncs can share.
    listed: list[MailboxRecord] = field(default_factory=list)
    global_filters: tuple[SyncFilter, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "mode": self.mode, "bookings_read": self.bookings_read, "deleted": self.deleted,
                "skipped": self.skipped, "routed": len(self.routed), "observations": sum(self.routed.values()),
                "unregistered": self.unregistered, "removal_candidates": self.removal_candidates, "left_alone": self.left_alone,
                "removals_held": self.removals_held, "mailboxes": self.mailboxes, "carried": self.carried, "retest": self.retest,
                **({"tracking_off": self.tracking_off} if self.tracking_off else {})}


@dataclass(frozen=True)
class Registered:
    """The registered mailboxes as collect read them, and what routing asks of them."""
    records: Mapping[str, MailboxRecord]           # address -> its record
    bindings: Mapping[str, str]                    # address -> the environment it is bound to ("" for none)
    filtered: frozenset[str]                       # with sync filters, its own or the global ones (D5's count)
    waiting: frozenset[str]                        # with pending work
    global_filters: tuple[SyncFilter, ...] = ()

    @classmethod
    def of(cls, records: Iterable[MailboxRecord], global_filters: tuple[SyncFilter, ...] = ()) -> Registered:
        by_address = {r.address: r for r in records}
        return cls(by_address, {a: (r.mailbox.environment or "").lower() for a, r in by_address.items()},
                   frozenset(a for a, r in by_address.items() if global_filters or r.filtered),
                   frozenset(a for a, r in by_address.items() if r.has_work), global_filters)

    def serves(self, address: str, environment: str) -> bool:
        return scope.serves(self.bindings[address], environment)

    def waiting_for(self, environment: str) -> frozenset[str]:
        """The mailboxes with work whose waiting observations may hear of `environment`'s deletions (M4)."""
        return frozenset(a for a in self.waiting if scope.hears_deletions_from(self.bindings[a], environment))


@dataclass
class Routing:
    per_mailbox: dict[str, dict[str, dict[str, Any] | None]]
    unregistered: int
    to_holders: int = 0             # observations that may remove a holder's event (D5's gate: scope.may_remove)
    left_alone: int = 0             # observations not kept: the mailbox's sync would skip them whatever its link (X1)


async def collect(source: BookingSource, state: CollectState, settings: SyncSettings, now: datetime) -> CollectResult:
    environment = source.environment.lower()
    low, high = window(settings, now)
    cursor = await state.cursors.get(environment)
    registered = Registered.of(await state.mailboxes.all(), await state.config.global_filters())
    initial = {a for a, r in registered.records.items() if r.needs_initial_read and registered.serves(a, environment)}
    observations = await read(source, state.index, cursor, low, high, initial)
    holders = observations.holders
    waiting = await with_waiting(state.partitions, registered.waiting_for(environment), observations.observed, holders)
    routing = route(observations, waiting, environment, registered, settings=settings, now=now)
    result = await persist(state, environment, observations, routing, initial, cursor, high, holders)
    result.removals_held = sum(1 for a, r in registered.records.items() if r.removals_held and registered.serves(a, environment))
    # What was waiting came from an earlier cycle or a webhook; its removals are not among this cycle's candidates.
    result.carried = sorted(m for m in registered.waiting if registered.serves(m, environment))
    result.global_filters = registered.global_filters
    result.retest = sorted(a for a, r in registered.records.items() if r.retest_due(now) and registered.serves(a, environment))
    return result


async def with_waiting(partitions: MailboxPartitions, with_work: Collection[str], observed: Mapping[str, Booking | None],
                       holders: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The holders a deletion is routed to: the mailboxes holding a link (the booking index, of the environment read),
    and those of `with_work` (bound to that environment: `Registered.waiting_for`) whose waiting observations name
    the booking. A mailbox that has not synced a booking yet (disabled, failing, held) has no link
    to it, and its next sync would otherwise create the event of a booking that is gone (D1). Only the index's
    holders lose their index rows with the deletion (persist): the others never had one."""
    gone = [booking_id for booking_id, booking in observed.items() if booking is None]
    waiting = await partitions.waiting_holders(with_work, gone) if gone and with_work else {}
    return {b: set(holders.get(b, set())) | waiting.get(b, set()) for b in {*holders, *waiting}}


async def read(source: BookingSource, links: BookingIndex, cursor: Cursor | None, low: datetime, high: datetime,
               initial: set[str]) -> Observations:
    """What changed since the cursor, and which mailboxes hold a link for each booking read; the whole window when
    there is no cursor or its token expired (T4)."""
    if cursor is None or not cursor.delta_links:              # never read, or read whole while tracking was off (T5)
        return await _read_full(source, links, low, high)
    horizon = cursor.horizon
    slice_start = max(horizon or low, low) if (horizon is None or high > horizon) else None   # S3: what entered the window
    try:
        # One request for a quiet cycle: both change feeds and the new slice of the window, batched.
        changes, entered = await source.read_cycle(dict(cursor.delta_links), slice_start, high)
    except (ChangeTokenExpired, ChangeTrackingOff):
        return await _read_full(source, links, low, high)
    environment = source.environment.lower()
    # The changed bookings, the bookings of changed work orders, the window of newly enabled mailboxes and the
    # index's holders of the ids already known are independent reads: together, so a cycle waits for the longest
    # of them, not for their sum.
    known = changes.changed_bookings | changes.deleted_bookings | {b.id for b in entered.bookings}
    follow_ups: list[Awaitable[ReadResult]] = []
    if changes.changed_bookings:
        follow_ups.append(source.read_bookings(changes.changed_bookings))
    if changes.changed_work_orders:
        follow_ups.append(source.read_bookings_for_work_orders(changes.changed_work_orders, low, high))
    if initial:
        follow_ups.append(source.read_window_for(low, high, initial))
    holders, read_back = await asyncio.gather(_holders(links, environment, known), asyncio.gather(*follow_ups))
    answers = list(read_back)
    window_read = answers.pop() if initial else None
    reads = [entered, *answers]
    observed: dict[str, Booking | None] = {}
    skipped: list[SkippedRow] = []
    for result in reads:
        observed.update({b.id: b for b in result.bookings})
        skipped.extend(result.skipped)
    for booking_id in changes.changed_bookings - set(observed) - {s.booking_id for s in skipped}:
        observed[booking_id] = None                                      # changed, then deleted before we read it
    for booking_id in changes.deleted_bookings:
        observed[booking_id] = None
    holders.update(await _holders(links, environment, set(observed) - known))    # the changed work orders' bookings
    first_reads: dict[str, Booking] = {}
    if window_read is not None:                                          # newly enabled mailboxes start from the window
        first_reads = {b.id: b for b in window_read.bookings if b.mailbox in initial}
        skipped.extend(window_read.skipped)
    return Observations("delta", observed, skipped, changes.delta_links, first_reads, holders)


async def _holders(links: BookingIndex, environment: str, booking_ids: set[str]) -> dict[str, set[str]]:
    return await links.holders(environment, booking_ids) if booking_ids else {}


async def _read_full(source: BookingSource, links: BookingIndex, low: datetime, high: datetime) -> Observations:
    try:
        start = await source.read_changes(None)                          # start tracking before reading: no change falls between
        delta_links, tracking_off = start.delta_links, []
    except ChangeTrackingOff as off:                                     # T5: each cycle reads the window whole, and tries again
        log.warning("change tracking off, the whole window is read: environment=%s table=%s", source.environment, off.table)
        delta_links, tracking_off = {}, [off.table]
    result = await source.read_window(low, high)
    observed: dict[str, Booking | None] = {b.id: b for b in result.bookings}
    skipped = list(result.skipped)
    linked = await links.all_holders(source.environment.lower())    # the whole index: every holder of every booking
    missing = set(linked) - set(observed) - {s.booking_id for s in skipped}
    if missing:                                                          # linked but not in the window: gone, or moved away?
        again = await source.read_bookings(missing)
        observed.update({b.id: b for b in again.bookings})
        skipped.extend(again.skipped)
        for booking_id in missing - {b.id for b in again.bookings} - {s.booking_id for s in again.skipped}:
            observed[booking_id] = None
    holders = {b: set(linked[b]) for b in observed if b in linked}
    return Observations("full", observed, skipped, delta_links, holders=holders, tracking_off=tracking_off)


def route(observations: Observations, holders: Mapping[str, set[str]], environment: str, registered: Registered, *,
          settings: SyncSettings, now: datetime) -> Routing:
    """PURE: booking -> the mailboxes it concerns, among the `registered` ones."""
    per_mailbox: dict[str, dict[str, dict[str, Any] | None]] = {}
    unregistered = to_holders = left_alone = 0
    for booking_id, booking in observations.observed.items():
        targets = set(holders.get(booking_id, set()))                   # they hold a link: they must hear of it
        if booking is not None and booking.mailbox:
            targets.add(booking.mailbox)
        for mailbox in sorted(targets):
            if mailbox not in registered.bindings:
                unregistered += 1
                continue
            if mailbox not in holders.get(booking_id, set()) and not registered.serves(mailbox, environment):
                continue                                                 # M4: bound to another environment
            if booking is not None and _left_alone(booking, registered.records[mailbox], mailbox in registered.waiting, settings, now,
                                                   registered.global_filters):
                left_alone += 1
                continue
            per_mailbox.setdefault(mailbox, {})[booking_id] = booking_to_dict(booking) if booking is not None else None
            if mailbox in holders.get(booking_id, set()):
                holder = Mailbox(mailbox, registered.bindings[mailbox] or None)
                to_holders += scope.may_remove(booking, holder, mailbox in registered.filtered)
    for booking_id, booking in observations.initial.items():
        if booking_id not in observations.observed and booking.mailbox:
            per_mailbox.setdefault(booking.mailbox, {})[booking_id] = booking_to_dict(booking)
            to_holders += 1                     # a window re-read (after a filter change) may find linked bookings out of scope
    return Routing(per_mailbox, unregistered, to_holders, left_alone)


def _left_alone(booking: Booking, record: MailboxRecord, waiting: bool, settings: SyncSettings, now: datetime,
                global_filters: tuple[SyncFilter, ...]) -> bool:
    """A mailbox whose row does not read is told, as before (its sync reports it)."""
    if record.unreadable or not scope.may_be_left_alone(booking, settings, now):
        return False
    return needs_no_sync(booking, record.mailbox, waiting, settings, now, global_filters)


def needs_no_sync(booking: Booking, mailbox: Mailbox, waiting: bool, settings: SyncSettings, now: datetime,
                  global_filters: tuple[SyncFilter, ...] = ()) -> bool:
    """X1: an observation the mailbox's sync would skip whatever its link (scope.left_alone), so it need not be kept
    nor the mailbox woken. Only for a mailbox with no waiting work: a waiting observation of the booking would
    otherwise be synced in its place. Collect and the webhook both ask here."""
    return not waiting and scope.left_alone(booking, mailbox, settings, now, global_filters)


async def persist(state: CollectState, environment: str, observations: Observations, routing: Routing, initial: set[str],
                  cursor: Cursor | None, horizon: datetime, holders: Mapping[str, set[str]]) -> CollectResult:
    observed = observations.observed
    outcome = CollectResult(environment, observations.mode, bookings_read=sum(1 for b in observed.values() if b is not None),
                            deleted=sum(1 for b in observed.values() if b is None), unregistered=routing.unregistered,
                            removal_candidates=routing.to_holders, left_alone=routing.left_alone, tracking_off=observations.tracking_off)
    for s in observations.skipped:
        outcome.skipped[s.reason] = outcome.skipped.get(s.reason, 0) + 1
        log.warning("booking skipped: environment=%s booking=%s reason=%s", environment, s.booking_id, s.reason)
    await state.partitions.observe(routing.per_mailbox)             # the cursor moves only after all of them
    outcome.routed.update({mailbox: len(pending) for mailbox, pending in routing.per_mailbox.items()})
    deleted = {b: holders[b] for b, booking in observed.items() if booking is None and holders.get(b)}
    if deleted:                               # their deletions wait with every holder now: nothing routes by them again
        await state.index.remove(environment, deleted)
    if initial:
        await state.mailboxes.update_many(initial, needs_initial_read=False)
    # ETag-guarded: if another collect advanced the cursor meanwhile, this one fails instead of going backwards.
    await state.cursors.put(environment, observations.delta_links, horizon, cursor.etag if cursor else None)
    outcome.listed = await state.mailboxes.all()
    outcome.mailboxes = sorted(r.address for r in outcome.listed if r.has_work)
    return outcome
