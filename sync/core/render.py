"""PURE: a booking -> the Graph event that represents it (rule C1), and the fingerprints the planner compares.

The trigger fingerprint covers what makes Dynamics update an appointment: the booking's time window and
its own location (msdyn_worklocation, msdyn_latitude, msdyn_longitude; C2). The content fingerprint
covers the whole payload, the work order's fields and service address too (C3 and its enhanced setting).
Every value placed in HTML is escaped and every free text is bounded (E3).
"""
from __future__ import annotations

import hashlib
import html
import json
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from .domain import Booking

# The property set that carries this service's ownership tag on every event it creates (a fixed GUID).
PROPERTY_SET = "{1b2f6c3e-8d4a-4f5b-9a7e-2c6d0e8f4a11}"
TAG_ENVIRONMENT = f"String {PROPERTY_SET} Name FieldServiceSync.Environment"
TAG_BOOKING = f"String {PROPERTY_SET} Name FieldServiceSync.BookingId"
TRANSACTION_NAMESPACE = uuid.UUID("6f1c1f5e-2f52-4d7b-a2d1-5b0b7a0f3c9e")
UPDATED_FIELDS = ("subject", "start", "end", "location", "body")
MAX_FIELD = 2_000           # characters of any one free-text value in the body
MAX_SUBJECT = 255
WINDOWS_TO_IANA = {"pacific standard time": "America/Los_Angeles", "mountain standard time": "America/Denver",
                   "central standard time": "America/Chicago", "eastern standard time": "America/New_York",
                   "gmt standard time": "Europe/London", "w. europe standard time": "Europe/Berlin",
                   "romance standard time": "Europe/Paris", "aus eastern standard time": "Australia/Sydney", "utc": "UTC"}


@dataclass(frozen=True)
class RenderedEvent:
    payload: dict[str, Any]     # a Graph `event` (only real event properties; checked against the OpenAPI subset)
    trigger_fingerprint: str
    content_fingerprint: str
    mailbox: str                # rendered for this mailbox (its transactionId) ...
    time_zone: str              # ... in its time zone (the body's date and time)

    def payload_for_update(self) -> dict[str, Any]:
        """The PATCH body: what a booking can change (C2 refreshes the work order fields with the time window
        and location). Importance, show-as, reminder and the like are set once at creation, so a technician's
        own changes to them in Outlook are kept; transactionId only guards creates."""
        return {k: v for k, v in self.payload.items() if k in UPDATED_FIELDS}


def clean_text(value: object, limit: int = MAX_FIELD) -> str:
    """Printable text, bounded: control characters go, length is capped with an ellipsis."""
    if value is None:
        return ""
    text = str(value)
    if not text.isprintable():             # isprintable() is False for every category-C character (and for separators)
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def transaction_id(environment: str, booking_id: str, mailbox: str, generation: int) -> str:
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, f"{environment.lower()}|{booking_id.lower()}|{mailbox.lower()}|{generation}"))


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(WINDOWS_TO_IANA.get(name.lower(), name))
    except Exception:
        return ZoneInfo("UTC")


def _utc(dt: datetime) -> dict:
    return {"dateTime": dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def _window_text(booking: Booking, time_zone: str) -> str:
    zone = _zone(time_zone)
    label = time_zone if zone.key != "UTC" else "UTC"
    start, end = booking.start.astimezone(zone), booking.end.astimezone(zone)
    same_day = start.date() == end.date()
    end_text = end.strftime("%H:%M") if same_day else end.strftime("%a %d %b %Y %H:%M")
    return f"{start.strftime('%a %d %b %Y %H:%M')}–{end_text} ({label})"


def subject(booking: Booking) -> str:
    wo = booking.work_order
    if wo is None:
        return clean_text(booking.name or "Booking", MAX_SUBJECT)
    kind = wo.primary_incident_type or wo.work_order_type
    return clean_text(f"{wo.number} {kind}" if kind else wo.number, MAX_SUBJECT)


def location(booking: Booking) -> dict:
    wo = booking.work_order
    if wo is None:
        return {"displayName": ""}
    a = wo.address
    loc: dict = {"displayName": clean_text(a.display(), 255), "locationType": "streetAddress",
                 "address": {"street": clean_text(" ".join(p for p in (a.line1, a.line2, a.line3) if p), 255),
                             "city": clean_text(a.city, 128), "state": clean_text(a.state, 128),
                             "postalCode": clean_text(a.postal_code, 40), "countryOrRegion": clean_text(a.country, 128)}}
    if a.latitude is not None and a.longitude is not None:
        loc["coordinates"] = {"latitude": a.latitude, "longitude": a.longitude}
    return loc


def body_html(booking: Booking, time_zone: str) -> str:
    wo = booking.work_order
    rows = [("Work order", wo.number if wo else None),
            ("When", _window_text(booking, time_zone)),
            ("Priority", wo.priority if wo else None),
            ("Location", wo.address.display() if wo else None),
            ("Work order type", wo.work_order_type if wo else None),
            ("Primary incident type", wo.primary_incident_type if wo else None),
            ("Summary", wo.summary if wo else None),
            ("Account", wo.service_account if wo else None),
            ("Primary contact", wo.reported_by_contact if wo else None)]
    cells = "".join(f"<tr><th align=\"left\">{html.escape(k)}</th><td>{html.escape(clean_text(v)).replace(chr(10), '<br>')}</td></tr>"
                    for k, v in rows if v)
    return f"<html><body><table>{cells}</table><p>Synchronised from Dynamics 365 Field Service.</p></body></html>"


def render(booking: Booking, mailbox: str, time_zone: str, generation: int) -> RenderedEvent:
    # C2: what makes Dynamics update an appointment is the booking's time window and the booking's own
    # location; the work order's service address is a work order field (C3).
    trigger = {"start": booking.start.astimezone(UTC).isoformat(), "end": booking.end.astimezone(UTC).isoformat(),
               "booking_location": [booking.location.work_location, booking.location.latitude, booking.location.longitude]}
    payload = {
        "subject": subject(booking),
        "start": _utc(booking.start),
        "end": _utc(booking.end),
        "location": location(booking),
        "body": {"contentType": "html", "content": body_html(booking, time_zone)},
        "importance": "normal",
        "showAs": "busy",
        "isReminderOn": True,
        "attendees": [],
        "responseRequested": False,
        "allowNewTimeProposals": False,
        "singleValueExtendedProperties": [{"id": TAG_ENVIRONMENT, "value": booking.environment.lower()},
                                          {"id": TAG_BOOKING, "value": booking.id.lower()}],
        "transactionId": transaction_id(booking.environment, booking.id, mailbox, generation),
    }
    content = {k: v for k, v in payload.items() if k != "transactionId"}
    return RenderedEvent(payload, _fingerprint(trigger), _fingerprint(content), mailbox.lower(), time_zone)
