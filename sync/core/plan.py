"""PURE: (observations, links, mailbox, settings, now) -> actions, each with the reason it was chosen.

No I/O and no clock: `now` is an argument. The engine feeds it what it observed this cycle:
- `bookings`: current state of bookings it read (changed since last cycle, or the whole window), keyed by id;
- `deleted`: ids Dataverse reported deleted;
- `links`: this mailbox's links.
A linked booking that was neither observed nor deleted is unchanged and needs nothing.

Rules: scope (S1-S5, M1, M4, M5) through `scope`, C1-C6 create/update, X1-X2 cancel, D1-D4 delete; the
mailbox's share of D5 here, the deployment's share in `guard`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from . import guard, scope
from .actions import REMOVALS, Action, Cancel, Create, Delete, Forget, Kind, Recover, Skip, Unlink, Update
from .domain import Booking, Link, LinkState, Mailbox, SyncFilter
from .reasons import Reason
from .render import render
from .settings import SyncSettings

# C6: "moved to another resource" is any resource: another technician, an equipment or facility resource, or a
# user without a mailbox; the link says the booking was this mailbox's user's.
REASSIGNED = frozenset({Reason.OTHER_MAILBOX, Reason.NOT_USER_RESOURCE, Reason.NO_MAILBOX_ADDRESS})


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
    held: list[str] = field(default_factory=list)      # removals held back by the deployment-wide guard

    def of(self, kind: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def writes(self) -> list[Action]:
        return [a for a in self.actions if a.kind != Kind.SKIP]

    @property
    def removals(self) -> int:
        return sum(1 for a in self.actions if isinstance(a, REMOVALS))


def plan(bookings: Mapping[str, Booking], deleted: Iterable[str], links: Mapping[str, Link], mailbox: Mailbox,
         settings: SyncSettings, now: datetime, *, global_filters: tuple[SyncFilter, ...] = (), force: bool = False,
         hold_removals: bool = False) -> Plan:
    result = Plan(mailbox.address)
    if scope.mailbox_reason(mailbox) is not None:                       # M1, M5: nothing new, nothing removed
        return result
    gone = set(deleted)
    creating = {k for k, link in links.items() if link.state == LinkState.CREATING}
    for booking_id in sorted(set(bookings) | gone | creating):
        link = links.get(booking_id)
        booking = bookings.get(booking_id)
        if link is not None and link.state == LinkState.CREATING:
            # A create may have reached Graph before the last run stopped (crash between call and record).
            result.actions.append(Recover(link, booking))
        elif booking_id in gone or booking is None:
            if link is not None:
                result.actions.append(_physical_delete(link, now))
        else:
            result.actions.append(decide(booking, link, mailbox, settings, now, global_filters))
    _guard_mass_delete(result, links, settings, force)
    if hold_removals and result.blocked is None:
        _hold_removals(result)
    return result


def _physical_delete(link: Link, now: datetime) -> Action:
    if link.state != LinkState.LINKED:                                  # a tombstone: the booking is gone for good
        return Forget(link)
    # D1: linked (the link exists only for events this service created and tagged), organizer (created in
    # this mailbox), in the future, not logically deleted (those are tombstones, above) -> delete.
    # D2/D4: otherwise unlink and leave the event.
    if link.event_start > now:
        return Delete(link, Reason.DELETED)
    return Unlink(link, Reason.DELETED_PAST)


def decide(booking: Booking, link: Link | None, mailbox: Mailbox, settings: SyncSettings, now: datetime,
           global_filters: tuple[SyncFilter, ...] = ()) -> Action:
    """One observed booking in one (syncing) mailbox."""
    linked = link if link is not None and link.state == LinkState.LINKED else None
    out_of_scope = scope.booking_reason(booking, mailbox, global_filters)
    if out_of_scope is not None:
        if linked is None:
            return Skip(booking.id, out_of_scope)
        return _logical_delete(linked, out_of_scope, settings, now)
    canceled = scope.canceled_reason(booking, linked, settings, now)
    if canceled is not None:
        if canceled == Reason.CANCELED and linked is not None:
            return Cancel(linked, canceled) if linked.has_attendees else Delete(linked, canceled)   # X2
        return Skip(booking.id, canceled)
    if linked is None:
        if not scope.in_window(booking, settings, now):                # S3: synced once it enters the window
            return Skip(booking.id, Reason.OUTSIDE_WINDOW)
        if link is not None and link.state == LinkState.UNLINKED:      # back in scope: take the old event up again
            return Update(booking, link, render(booking, mailbox.address, mailbox.time_zone, link.generation), Reason.RELINKED)
        generation = link.generation + 1 if link is not None else 0    # after a removal: a fresh transactionId
        rendered = render(booking, mailbox.address, mailbox.time_zone, generation)
        return Create(booking, rendered, generation, Reason.NEW, previous=link)    # C1
    rendered = render(booking, mailbox.address, mailbox.time_zone, linked.generation)
    if rendered.trigger_fingerprint != linked.trigger_fingerprint:      # C2 (C5: a gone event is re-created at settle)
        return Update(booking, linked, rendered, Reason.TIME_OR_LOCATION_CHANGED)
    if settings.refresh_work_order_fields and rendered.content_fingerprint != linked.content_fingerprint:   # C3 enhanced
        return Update(booking, linked, rendered, Reason.WORK_ORDER_FIELDS_CHANGED)
    return Skip(booking.id, Reason.UNCHANGED)                           # C3, C4


def _logical_delete(link: Link, reason: Reason, settings: SyncSettings, now: datetime) -> Action:
    future = link.event_start > now
    if reason in REASSIGNED and settings.remove_reassigned_future_events and future:   # C6 enhanced: to any other resource
        return Delete(link, Reason.REASSIGNED_FUTURE, detail=reason.value)
    if settings.logical_deletes == "delete" and future:                # D3 with LOGICAL_DELETES=delete
        return Delete(link, Reason.LOGICAL_DELETE, detail=reason.value)
    return Unlink(link, Reason.LOGICAL_DELETE, detail=reason.value)    # D3 default


def _guard_mass_delete(result: Plan, links: Mapping[str, Link], settings: SyncSettings, force: bool) -> None:
    """D5, per mailbox: an empty answer caused by a permission or filter mistake must not wipe a calendar."""
    destructive = result.removals
    linked = sum(1 for link in links.values() if link.state == LinkState.LINKED)
    if not force and guard.over_share(destructive, linked, settings):
        result.blocked = MassDeleteBlocked(destructive, linked, guard.mailbox_message(destructive, linked, settings))
        result.actions = [a for a in result.actions if a.kind == Kind.SKIP]


def _hold_removals(result: Plan) -> None:
    """D5, deployment-wide: this cycle's removals wait (their observations stay) while creates and updates go."""
    result.held = [a.booking_id for a in result.actions if isinstance(a, REMOVALS)]
    result.actions = [a for a in result.actions if not isinstance(a, REMOVALS)]
