"""G1: is this booking in Outlook, and if not, the first reason why, as a stable code with a sentence.

Pure. It asks `scope` the same questions the planner asks, in the same order, so a diagnosis can never
disagree with what the sync does; admin/diagnose.py gathers the inputs (the booking from Dataverse, the
mailbox, the link and the last outcome from the state store).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import scope
from .domain import Booking, Link, LinkState, Mailbox, SkippedRow, SyncFilter
from .reasons import Reason
from .settings import SyncSettings

NOT_FOUND, MALFORMED = "booking_not_found", "malformed_booking"
LAST_ATTEMPT_FAILED, WAITING, SYNCED = "last_attempt_failed", "waiting_for_next_cycle", "synced"
CODES = (
    NOT_FOUND, MALFORMED, Reason.NO_WORK_ORDER.value, Reason.NOT_USER_RESOURCE.value, Reason.NO_MAILBOX_ADDRESS.value,
    Reason.MAILBOX_NOT_REGISTERED.value, Reason.SYNC_METHOD_NONE.value, Reason.MAILBOX_NOT_APPROVED.value,
    Reason.MAILBOX_NOT_TESTED.value, Reason.MAILBOX_TEST_FAILED.value, Reason.MAILBOX_SYNC_OFF.value,
    Reason.BOUND_TO_ANOTHER_ENVIRONMENT.value, Reason.OUTSIDE_WINDOW.value, Reason.INACTIVE.value, Reason.EXCLUDED_BY_FILTER.value,
    Reason.CANCELED_NOT_PROPAGATED.value, Reason.CANCELED.value, Reason.CANCELED_IN_PAST.value, LAST_ATTEMPT_FAILED, WAITING, SYNCED,
)
SENTENCES = {
    Reason.NO_WORK_ORDER: "Only bookings tied to a work order sync; this booking has none.",
    Reason.NOT_USER_RESOURCE: "The booked resource is not a user "
                              "(crew, equipment, facility, pool, contact or account resources never sync).",
    Reason.NO_MAILBOX_ADDRESS: "The booked user has no primary email address in Dynamics 365, so there is no mailbox to write to.",
    Reason.MAILBOX_NOT_REGISTERED: "The user's mailbox is not registered for sync; run `mailboxes discover` or `mailboxes register`.",
    Reason.SYNC_METHOD_NONE: "The mailbox's synchronization method is None; set it to server-side sync.",
    Reason.MAILBOX_NOT_APPROVED: "The mailbox is not approved; approve it, then test and enable it.",
    Reason.MAILBOX_NOT_TESTED: "The mailbox has not been tested and enabled yet; run `mailboxes test`.",
    Reason.MAILBOX_SYNC_OFF: "Sync is turned off for this mailbox; nothing new is written until it is turned on again.",
    Reason.INACTIVE: "The booking is inactive; only active bookings sync.",
}


@dataclass(frozen=True)
class Diagnosis:
    code: str
    sentence: str
    in_outlook: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "sentence": self.sentence, "in_outlook": self.in_outlook, **self.details}


def explain(booking: Booking | SkippedRow | None, booking_id: str, mailbox: Mailbox | None, link: Link | None,
            outcome: dict[str, Any] | None, settings: SyncSettings, now: datetime,
            global_filters: tuple[SyncFilter, ...] = ()) -> Diagnosis:
    details: dict[str, Any] = {"booking": booking_id}
    if link is not None:
        details.update({"link_state": link.state.value, "event_id": link.event_id,
                        "written_at": link.written_at.isoformat() if link.written_at else None})
    if outcome and outcome.get("error"):
        details["last_error"] = outcome["error"]
    if booking is None:
        return Diagnosis(NOT_FOUND, "No booking with this id exists in the environment (it may have been deleted).", details=details)
    if isinstance(booking, SkippedRow):
        return Diagnosis(MALFORMED, f"The booking cannot be synced as it is: {booking.reason.replace('_', ' ')}. "
                                    "Fix the booking in Field Service.", details={**details, "reason": booking.reason})
    details["mailbox"] = booking.mailbox
    linked = link is not None and link.state == LinkState.LINKED
    reason = scope.target_reason(booking) or scope.mailbox_reason(mailbox)
    if reason is None and mailbox is not None:
        reason = scope.booking_reason(booking, mailbox, global_filters)
    if reason is not None:
        return _out_of_scope(reason, booking, mailbox, global_filters, details)
    canceled = scope.canceled_reason(booking, link if linked else None, settings, now)
    if canceled is not None:
        return Diagnosis(canceled.value, _canceled_sentence(canceled, linked), in_outlook=linked, details=details)
    if not linked and not scope.in_window(booking, settings, now):
        low, high = scope.window(settings, now)
        return Diagnosis(Reason.OUTSIDE_WINDOW.value,
                         f"The booking is outside the sync window ({low:%Y-%m-%d %H:%M} to {high:%Y-%m-%d %H:%M} UTC); "
                         "it syncs by itself once it enters the window.",
                         details={**details, "window_start": low.isoformat(), "window_end": high.isoformat()})
    if outcome and outcome.get("error"):
        return Diagnosis(LAST_ATTEMPT_FAILED, f"The last attempt to write it failed: {outcome['error']}. It is retried on the next cycle.",
                         in_outlook=linked, details=details)
    if link is not None and linked:
        written = link.written_at.strftime("%Y-%m-%d %H:%M UTC") if link.written_at else "an earlier cycle"
        return Diagnosis(SYNCED, f"In Outlook: event {link.event_id} in {link.mailbox}, written {written}.", in_outlook=True,
                         details=details)
    return Diagnosis(WAITING, "The booking is in scope and will be written on the next cycle.", details=details)


def _canceled_sentence(reason: Reason, linked: bool) -> str:
    if reason == Reason.CANCELED_NOT_PROPAGATED:
        return ("The booking is canceled and cancellations are not propagated (PROPAGATE_CANCELLATIONS is off), "
                "so the event is left as it is." if linked else
                "The booking is canceled and cancellations are not propagated, so it is not written.")
    if reason == Reason.CANCELED_IN_PAST:
        return "The booking is canceled, but its event is in the past, and past events are never removed."
    return ("The booking is canceled; its event is canceled in Outlook on the next cycle." if linked else
            "The booking is canceled, so it is not written.")


def _out_of_scope(reason: Reason, booking: Booking, mailbox: Mailbox | None, global_filters: tuple[SyncFilter, ...],
                  details: dict[str, Any]) -> Diagnosis:
    extra: dict[str, Any] = {}
    sentence = SENTENCES.get(reason, "")
    if reason == Reason.NOT_USER_RESOURCE:
        extra["resource_type"] = booking.resource_type
    elif reason == Reason.MAILBOX_TEST_FAILED and mailbox is not None:
        sentence = f"The mailbox's last test failed: {mailbox.test_reason}. Fix the cause, then test it again."
        extra["test_reason"] = mailbox.test_reason
    elif reason == Reason.BOUND_TO_ANOTHER_ENVIRONMENT and mailbox is not None:
        sentence = (f"The mailbox syncs with {mailbox.environment}; a mailbox syncs with one environment at a time. "
                    "Use `mailboxes move` to change it.")
        extra["bound_environment"] = mailbox.environment
    elif reason == Reason.EXCLUDED_BY_FILTER and mailbox is not None:
        filters = scope.effective_filters(mailbox, global_filters)
        sentence = f"The booking matches none of the sync filters ({', '.join(f.name for f in filters)})."
        extra["filters"] = [f.name for f in filters]
    return Diagnosis(reason.value, sentence, details={**details, **extra})
