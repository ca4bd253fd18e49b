"""PURE: (observations, links, mailbox, settings, now) -> actions, each with the reason it was chosen.

No I/O and no clock: `now` is an argument. The engine feeds it what it observed this cycle:
- `bookings`: current state of bookings it read (changed since last cycle, or the whole window), keyed by id;
- `deleted`: ids Dataverse reported deleted;
- `links`: this mailbox's links.
A linked booking that was neither observed nor deleted is unchanged and needs nothing.

Rules: S1-S5 scope, C1-C6 create/update, X1-X2 cancel, D1-D5 delete, M1/M5 eligibility.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Iterable, Mapping

from .domain import RESOURCE_TYPE_USER, Booking, Link, LinkState, Mailbox, SyncFilter
from .render import RenderedEvent, render
from .settings import SyncSettings


class Kind(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"      # Graph cancel action: the event has attendees (X2)
    DELETE = "delete"
    UNLINK = "unlink"      # stop tracking the event and leave it as it is
    FORGET = "forget"      # drop a tombstone (the booking is gone for good); no Graph call
    RECOVER = "recover"    # a create was in flight when the last run stopped: find it by tag before creating again
    SKIP = "skip"


class Reason(str, Enum):
    # scope (S) -- shared with diagnose (G1)
    NO_WORK_ORDER = "not_tied_to_work_order"
    NOT_USER_RESOURCE = "resource_not_user"
    NO_MAILBOX_ADDRESS = "user_has_no_mailbox_address"
    OTHER_MAILBOX = "booked_for_another_mailbox"
    OUTSIDE_WINDOW = "outside_window"
    INACTIVE = "inactive"
    EXCLUDED_BY_FILTER = "excluded_by_filter"
    CANCELED_NOT_PROPAGATED = "canceled_not_propagated"
    # changes
    NEW = "new_in_scope"
    TIME_OR_LOCATION_CHANGED = "time_or_location_changed"
    WORK_ORDER_FIELDS_CHANGED = "work_order_fields_changed"
    CANCELED = "canceled"
    CANCELED_IN_PAST = "canceled_event_in_past"
    DELETED = "booking_deleted"
    DELETED_PAST = "booking_deleted_event_in_past"
    LOGICAL_DELETE = "logical_delete"
    REASSIGNED_FUTURE = "reassigned_future_event"
    CREATE_IN_FLIGHT = "create_in_flight"
    RELINKED = "back_in_scope"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Action:
    kind: Kind
    booking_id: str
    reason: Reason
    booking: Booking | None = None
    link: Link | None = None
    rendered: RenderedEvent | None = None
    generation: int = 0
    detail: str | None = None


@dataclass(frozen=True)
class MassDeleteBlocked:
    destructive: int
    links: int
    message: str


@dataclass
class Plan:
    mailbox: str
    actions: list[Action] = field(default_factory=list)
    blocked: MassDeleteBlocked | None = None

    def of(self, kind: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def writes(self) -> list[Action]:
        return [a for a in self.actions if a.kind != Kind.SKIP]


def window(settings: SyncSettings, now: datetime) -> tuple[datetime, datetime]:
    return now - settings.window_past, now + settings.window_future


def in_window(booking: Booking, settings: SyncSettings, now: datetime) -> bool:
    low, high = window(settings, now)
    return booking.start < high and booking.end > low


def scope_reason(booking: Booking, mailbox: Mailbox, settings: SyncSettings, now: datetime,
                 global_filters: tuple[SyncFilter, ...] = ()) -> Reason | None:
    """Why a booking is out of scope for this mailbox, in the order the sync applies the rules; None = in scope."""
    if booking.work_order is None:
        return Reason.NO_WORK_ORDER                                     # S1
    if booking.resource_type != RESOURCE_TYPE_USER:
        return Reason.NOT_USER_RESOURCE                                 # S2
    if not booking.mailbox:
        return Reason.NO_MAILBOX_ADDRESS                                # S2
    if booking.mailbox.lower() != mailbox.address.lower():
        return Reason.OTHER_MAILBOX                                     # S5 default filter, C6
    if not booking.active:
        return Reason.INACTIVE                                          # S4
    filters = mailbox.filters or global_filters
    if filters and not any(f.matches(booking) for f in filters):
        return Reason.EXCLUDED_BY_FILTER                                # S5
    return None


def plan(bookings: Mapping[str, Booking], deleted: Iterable[str], links: Mapping[str, Link], mailbox: Mailbox,
         settings: SyncSettings, now: datetime, *, global_filters: tuple[SyncFilter, ...] = (), force: bool = False) -> Plan:
    result = Plan(mailbox.address)
    if not mailbox.eligible:                                            # M1, M5: nothing new, nothing removed
        return result
    deleted = set(deleted)
    for booking_id in sorted(set(bookings) | deleted | {k for k, l in links.items() if l.state == LinkState.CREATING}):
        link = links.get(booking_id)
        booking = bookings.get(booking_id)
        if link is not None and link.state == LinkState.CREATING:
            # A create may have reached Graph before the last run stopped (crash between call and record).
            result.actions.append(Action(Kind.RECOVER, booking_id, Reason.CREATE_IN_FLIGHT, booking, link, generation=link.generation))
            continue
        if booking_id in deleted or booking is None:
            if link is not None:
                result.actions.append(_physical_delete(link, now))
            continue
        result.actions.append(_decide(booking, link, mailbox, settings, now, global_filters))
    _guard_mass_delete(result, links, settings, force)
    return result


def _physical_delete(link: Link, now: datetime) -> Action:
    if link.state != LinkState.LINKED:                                  # a tombstone: the booking is gone for good
        return Action(Kind.FORGET, link.booking_id, Reason.DELETED, link=link)
    # D1: linked (the link exists only for events this service created and tagged), organizer (created in
    # this mailbox), in the future, not logically deleted (those are tombstones, above) -> delete.
    # D2/D4: otherwise unlink and leave the event.
    if link.event_start > now:
        return Action(Kind.DELETE, link.booking_id, Reason.DELETED, link=link)
    return Action(Kind.UNLINK, link.booking_id, Reason.DELETED_PAST, link=link)


def _decide(booking: Booking, link: Link | None, mailbox: Mailbox, settings: SyncSettings, now: datetime,
            global_filters: tuple[SyncFilter, ...]) -> Action:
    linked = link is not None and link.state == LinkState.LINKED
    out_of_scope = scope_reason(booking, mailbox, settings, now, global_filters)
    if out_of_scope is not None:
        if not linked:
            return Action(Kind.SKIP, booking.id, out_of_scope, booking, link)
        return _logical_delete(booking, link, out_of_scope, settings, now)
    if booking.status.canceled:
        if not linked:
            return Action(Kind.SKIP, booking.id, Reason.CANCELED if settings.propagate_cancellations else Reason.CANCELED_NOT_PROPAGATED, booking, link)
        if not settings.propagate_cancellations:                       # X1: leave the event as it is
            return Action(Kind.SKIP, booking.id, Reason.CANCELED_NOT_PROPAGATED, booking, link)
        if link.event_start <= now:                                     # X2: past events stay
            return Action(Kind.SKIP, booking.id, Reason.CANCELED_IN_PAST, booking, link)
        kind = Kind.CANCEL if link.has_attendees else Kind.DELETE       # X2
        return Action(kind, booking.id, Reason.CANCELED, booking, link)
    if not linked:
        if not in_window(booking, settings, now):                       # S3: synced once it enters the window
            return Action(Kind.SKIP, booking.id, Reason.OUTSIDE_WINDOW, booking, link)
        if link is not None and link.state == LinkState.UNLINKED:      # back in scope: take the old event up again
            rendered = render(booking, mailbox.address, mailbox.time_zone, link.generation)
            return Action(Kind.UPDATE, booking.id, Reason.RELINKED, booking, link, rendered, link.generation)
        generation = link.generation + 1 if link is not None else 0    # after a removal: a fresh transactionId
        rendered = render(booking, mailbox.address, mailbox.time_zone, generation)
        return Action(Kind.CREATE, booking.id, Reason.NEW, booking, link, rendered, generation=generation)   # C1
    rendered = render(booking, mailbox.address, mailbox.time_zone, link.generation)
    if rendered.trigger_fingerprint != link.trigger_fingerprint:        # C2 (C5: a gone event is re-created by the executor)
        return Action(Kind.UPDATE, booking.id, Reason.TIME_OR_LOCATION_CHANGED, booking, link, rendered, link.generation)
    if settings.refresh_work_order_fields and rendered.content_fingerprint != link.content_fingerprint:   # C3 enhanced
        return Action(Kind.UPDATE, booking.id, Reason.WORK_ORDER_FIELDS_CHANGED, booking, link, rendered, link.generation)
    return Action(Kind.SKIP, booking.id, Reason.UNCHANGED, booking, link)    # C3, C4


def _logical_delete(booking: Booking, link: Link, reason: Reason, settings: SyncSettings, now: datetime) -> Action:
    future = link.event_start > now
    if reason == Reason.OTHER_MAILBOX and settings.remove_reassigned_future_events and future:   # C6 enhanced
        return Action(Kind.DELETE, booking.id, Reason.REASSIGNED_FUTURE, booking, link, detail=reason.value)
    if settings.logical_deletes == "delete" and future:                # D3 with LOGICAL_DELETES=delete
        return Action(Kind.DELETE, booking.id, Reason.LOGICAL_DELETE, booking, link, detail=reason.value)
    return Action(Kind.UNLINK, booking.id, Reason.LOGICAL_DELETE, booking, link, detail=reason.value)   # D3 default


def _guard_mass_delete(result: Plan, links: Mapping[str, Link], settings: SyncSettings, force: bool) -> None:
    """D5: an empty answer caused by a permission or filter mistake must not wipe calendars."""
    destructive = [a for a in result.actions if a.kind in (Kind.DELETE, Kind.UNLINK, Kind.CANCEL)]
    linked = sum(1 for l in links.values() if l.state == LinkState.LINKED)
    share = 100.0 * len(destructive) / max(1, linked)
    if not force and len(destructive) >= settings.mass_delete_min and share > settings.mass_delete_percent:
        message = (f"mass-delete guard: this cycle would remove {len(destructive)} of {linked} links "
                   f"({share:.0f} % > {settings.mass_delete_percent:.0f} %); nothing was changed for this mailbox. "
                   f"Check permissions and filters, then run again with --force if it is intended.")
        result.blocked = MassDeleteBlocked(len(destructive), linked, message)
        result.actions = [a for a in result.actions if a.kind == Kind.SKIP]
