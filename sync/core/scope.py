"""Every scope rule in one place: which bookings a mailbox syncs (S1-S5), which mailboxes sync (M1, M4, M5),
and what becomes of a canceled booking (X1, X2).

The planner and diagnose (G1) both ask here, in the same order, so a diagnosis can never disagree with
what the sync does. Pure: `now` is an argument.
"""
from __future__ import annotations

from datetime import datetime

from .domain import RESOURCE_TYPE_USER, Booking, Link, Mailbox, MailboxTestStatus, SyncFilter
from .reasons import Reason
from .settings import SyncSettings

MAILBOX_REASONS = frozenset({Reason.MAILBOX_NOT_REGISTERED, Reason.SYNC_METHOD_NONE, Reason.MAILBOX_NOT_APPROVED,
                             Reason.MAILBOX_NOT_TESTED, Reason.MAILBOX_TEST_FAILED, Reason.MAILBOX_SYNC_OFF})


def window(settings: SyncSettings, now: datetime) -> tuple[datetime, datetime]:
    """S3: [now - past, now + future]."""
    return now - settings.window_past, now + settings.window_future


def in_window(booking: Booking, settings: SyncSettings, now: datetime) -> bool:
    low, high = window(settings, now)
    return booking.start < high and booking.end > low


def mailbox_reason(mailbox: Mailbox | None) -> Reason | None:
    """M1, M5: why this mailbox syncs nothing at all (nothing new, nothing removed); None when it syncs."""
    if mailbox is None:
        return Reason.MAILBOX_NOT_REGISTERED
    if mailbox.sync_method != "server-side":
        return Reason.SYNC_METHOD_NONE
    if not mailbox.approved:
        return Reason.MAILBOX_NOT_APPROVED
    if mailbox.test_status == MailboxTestStatus.NOT_TESTED:
        return Reason.MAILBOX_NOT_TESTED
    if mailbox.test_status == MailboxTestStatus.FAILURE:
        return Reason.MAILBOX_TEST_FAILED
    if not mailbox.enabled:
        return Reason.MAILBOX_SYNC_OFF
    return None


def serves(bound: str | None, environment: str) -> bool:
    """M4: whether a mailbox bound to `bound` (None: to none yet) takes bookings of `environment`."""
    return not bound or bound.lower() == environment.lower()


def hears_deletions_from(bound: str | None, environment: str) -> bool:
    """M4, for a deletion that reaches a mailbox through its waiting work rather than a link of `environment`: only
    a mailbox bound to that very environment. A 404 from one environment says nothing of another's booking, so a
    message read from the wrong environment (forged or misrouted) can remove nothing there (T3)."""
    return bool(bound) and serves(bound, environment)


def target_reason(booking: Booking) -> Reason | None:
    """S1, S2: whether the booking can be written to any mailbox at all."""
    if booking.work_order is None:
        return Reason.NO_WORK_ORDER
    if booking.resource_type != RESOURCE_TYPE_USER:
        return Reason.NOT_USER_RESOURCE
    if not booking.mailbox:
        return Reason.NO_MAILBOX_ADDRESS
    return None


def booking_reason(booking: Booking, mailbox: Mailbox, global_filters: tuple[SyncFilter, ...] = ()) -> Reason | None:
    """Why a booking is out of scope for this mailbox, in the order the sync applies the rules; None = in scope.

    A linked booking that is out of scope is a logical delete (D3)."""
    reason = target_reason(booking)
    if reason is not None:
        return reason
    if (booking.mailbox or "").lower() != mailbox.address.lower():
        return Reason.OTHER_MAILBOX                                     # S5 default filter, C6
    if not serves(mailbox.environment, booking.environment):
        return Reason.BOUND_TO_ANOTHER_ENVIRONMENT                      # M4
    if not booking.active:
        return Reason.INACTIVE                                          # S4
    filters = effective_filters(mailbox, global_filters)
    if filters and not any(f.matches(booking) for f in filters):
        return Reason.EXCLUDED_BY_FILTER                                # S5
    return None


def canceled_reason(booking: Booking, linked: Link | None, settings: SyncSettings, now: datetime) -> Reason | None:
    """X1, X2: what becomes of a canceled booking's event; None when the booking is not canceled."""
    if not booking.status.canceled:
        return None
    if not settings.propagate_cancellations:
        return Reason.CANCELED_NOT_PROPAGATED                           # X1: leave the event as it is
    if linked is not None and linked.event_start <= now:
        return Reason.CANCELED_IN_PAST                                  # X2: past events stay
    return Reason.CANCELED                                              # X2: canceled or removed (or never written)


def left_alone(booking: Booking, mailbox: Mailbox, settings: SyncSettings, now: datetime,
               global_filters: tuple[SyncFilter, ...] = ()) -> bool:
    """X1: whether this mailbox's sync would skip the booking whatever link it holds: a canceled booking still in
    the mailbox's scope, with cancellations not propagated. Such an observation changes nothing, so collect need
    not wake the mailbox for it. Out of scope it is not left alone: a linked booking would be a logical delete."""
    return may_be_left_alone(booking, settings, now) and booking_reason(booking, mailbox, global_filters) is None


def may_be_left_alone(booking: Booking, settings: SyncSettings, now: datetime) -> bool:
    """X1's half of left_alone, which needs no mailbox: so a caller builds the mailbox (its filters) only then."""
    return canceled_reason(booking, None, settings, now) == Reason.CANCELED_NOT_PROPAGATED


def effective_filters(mailbox: Mailbox, global_filters: tuple[SyncFilter, ...]) -> tuple[SyncFilter, ...]:
    """S5: a mailbox's own filters replace the global ones; several combine as a union."""
    return mailbox.filters or global_filters


def may_remove(booking: Booking | None, holder: Mailbox, filtered: bool) -> bool:
    """D5's gate: whether an observation can remove the event of a mailbox holding a link for the booking. True when
    the booking is gone, canceled, or out of the holder's scope by a rule that needs no link (booking_reason); a
    holder with filters (its own or the global ones, `filtered`) may lose any booking. Conservative: the guard then
    plans the mailbox to count what would really go."""
    if booking is None or filtered or booking.status.canceled:
        return True
    return booking_reason(booking, holder) is not None
