"""G1: is this booking in Outlook, and if not, the first reason why, as a stable code with a sentence.

`explain` is pure: it looks at what the sync looks at, in the order the troubleshooting checklist
(shared/seeds/003_*) and the contract list them. `diagnose` gathers the inputs: the booking from
Dataverse, the mailbox, the link and the last outcome from the state store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .domain import RESOURCE_TYPE_USER, Booking, Link, LinkState, Mailbox, MailboxTestStatus, SkippedRow, SyncFilter
from .plan import in_window, window
from .settings import SyncSettings

CODES = (
    "booking_not_found", "malformed_booking", "not_tied_to_work_order", "resource_not_user", "user_has_no_mailbox_address",
    "mailbox_not_registered", "sync_method_none", "mailbox_not_approved", "mailbox_not_tested", "mailbox_test_failed",
    "mailbox_sync_off", "bound_to_another_environment", "outside_window", "inactive", "excluded_by_filter",
    "canceled_not_propagated", "last_attempt_failed", "waiting_for_next_cycle", "synced",
)


@dataclass(frozen=True)
class Diagnosis:
    code: str
    sentence: str
    in_outlook: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"code": self.code, "sentence": self.sentence, "in_outlook": self.in_outlook, **self.details}


def explain(booking: Booking | SkippedRow | None, booking_id: str, mailbox: Mailbox | None, mailbox_registered: bool, link: Link | None,
            outcome: dict | None, settings: SyncSettings, now: datetime, global_filters: tuple[SyncFilter, ...] = ()) -> Diagnosis:
    details: dict[str, Any] = {"booking": booking_id}
    if link is not None:
        details.update({"link_state": link.state.value, "event_id": link.event_id, "written_at": link.written_at.isoformat() if link.written_at else None})
    if outcome and outcome.get("error"):
        details["last_error"] = outcome["error"]
    if booking is None:
        return Diagnosis("booking_not_found", "No booking with this id exists in the environment (it may have been deleted).", details=details)
    if isinstance(booking, SkippedRow):
        return Diagnosis("malformed_booking", f"The booking cannot be synced as it is: {booking.reason.replace('_', ' ')}. Fix the booking in Field Service.",
                         details={**details, "reason": booking.reason})
    details["mailbox"] = booking.mailbox
    if booking.work_order is None:
        return Diagnosis("not_tied_to_work_order", "Only bookings tied to a work order sync; this booking has none.", details=details)
    if booking.resource_type != RESOURCE_TYPE_USER:
        return Diagnosis("resource_not_user", "The booked resource is not a user (crew, equipment, facility, pool, contact or account resources never sync).",
                         details={**details, "resource_type": booking.resource_type})
    if not booking.mailbox:
        return Diagnosis("user_has_no_mailbox_address", "The booked user has no primary email address in Dynamics 365, so there is no mailbox to write to.",
                         details=details)
    if not mailbox_registered or mailbox is None:
        return Diagnosis("mailbox_not_registered", "The user's mailbox is not registered for sync; run `mailboxes discover` or `mailboxes register`.",
                         details=details)
    if mailbox.sync_method != "server-side":
        return Diagnosis("sync_method_none", "The mailbox's synchronization method is None; set it to server-side sync.", details=details)
    if not mailbox.approved:
        return Diagnosis("mailbox_not_approved", "The mailbox is not approved; approve it, then test and enable it.", details=details)
    if mailbox.test_status == MailboxTestStatus.NOT_TESTED:
        return Diagnosis("mailbox_not_tested", "The mailbox has not been tested and enabled yet; run `mailboxes test`.", details=details)
    if mailbox.test_status == MailboxTestStatus.FAILURE:
        return Diagnosis("mailbox_test_failed", f"The mailbox's last test failed: {mailbox.test_reason}. Fix the cause, then test it again.",
                         details={**details, "test_reason": mailbox.test_reason})
    if not mailbox.enabled:
        return Diagnosis("mailbox_sync_off", "Sync is turned off for this mailbox; nothing new is written until it is turned on again.", details=details)
    if mailbox.environment and mailbox.environment != booking.environment.lower():
        return Diagnosis("bound_to_another_environment",
                         f"The mailbox syncs with {mailbox.environment}; a mailbox syncs with one environment at a time. Use `mailboxes move` to change it.",
                         details={**details, "bound_environment": mailbox.environment})
    low, high = window(settings, now)
    linked = link is not None and link.state == LinkState.LINKED
    if not in_window(booking, settings, now) and not linked:
        return Diagnosis("outside_window", f"The booking is outside the sync window ({low:%Y-%m-%d %H:%M} to {high:%Y-%m-%d %H:%M} UTC); "
                                           "it syncs by itself once it enters the window.",
                         details={**details, "window_start": low.isoformat(), "window_end": high.isoformat()})
    if not booking.active:
        return Diagnosis("inactive", "The booking is inactive; only active bookings sync.", details=details)
    filters = mailbox.filters or global_filters
    if filters and not any(f.matches(booking) for f in filters):
        names = ", ".join(f.name for f in filters)
        return Diagnosis("excluded_by_filter", f"The booking matches none of the sync filters ({names}).", details={**details, "filters": [f.name for f in filters]})
    if booking.status.canceled and not settings.propagate_cancellations:
        return Diagnosis("canceled_not_propagated", "The booking is canceled and cancellations are not propagated (PROPAGATE_CANCELLATIONS is off), "
                                                    "so the event is left as it is." if linked else
                         "The booking is canceled and cancellations are not propagated, so it is not written.", in_outlook=linked, details=details)
    if outcome and outcome.get("error"):
        return Diagnosis("last_attempt_failed", f"The last attempt to write it failed: {outcome['error']}. It is retried on the next cycle.",
                         in_outlook=linked, details=details)
    if linked:
        written = link.written_at.strftime("%Y-%m-%d %H:%M UTC") if link.written_at else "an earlier cycle"
        return Diagnosis("synced", f"In Outlook: event {link.event_id} in {link.mailbox}, written {written}.", in_outlook=True, details=details)
    return Diagnosis("waiting_for_next_cycle", "The booking is in scope and will be written on the next cycle.", details=details)


async def diagnose(booking_id: str, source: Any, store: Any, settings: SyncSettings, now: datetime) -> Diagnosis:
    from .dataverse import checked_guid
    booking_id = checked_guid(booking_id)
    booking = await source.read_booking(booking_id)
    address = booking.mailbox if isinstance(booking, Booking) else None
    mailbox = await store.get_mailbox(address) if address else None
    link = await store.get_link(address, booking_id) if address else None
    outcome = await store.outcome(address, booking_id) if address else None
    return explain(booking, booking_id, mailbox, mailbox is not None, link, outcome, settings, now, await store.global_filters())
