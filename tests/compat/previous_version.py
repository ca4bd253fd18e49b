"""What the previous version (main at 2026-12-07, commit 6c040fe) requires of each stored row, copied from its readers
(sync/adapters/tables.py, sync/core/serialize.py) so that a test can read this version's rows as it would (E5:
a rollback by one version). Each function raises where that version's reader raised."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sync.core.domain import Address, Booking, BookingLocation, BookingStatus, Link, LinkState, Mailbox, MailboxTestStatus, WorkOrder
from sync.core.serialize import filter_from_dict


def _dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def link(e: dict) -> Link:
    return Link(booking_id=e["booking_id"], mailbox=e["mailbox"], environment=e["environment"], event_id=e.get("event_id") or None,
                generation=int(e["generation"]), trigger_fingerprint=e["trigger_fp"], content_fingerprint=e["content_fp"],
                event_start=_dt(e["event_start"]), event_end=_dt(e["event_end"]), state=LinkState(e["state"]),  # type: ignore[arg-type]
                has_attendees=bool(e.get("has_attendees")), written_at=_dt(e.get("written_at")))


def booking(d: dict) -> Booking:
    """Strict: a key it does not know raises TypeError (the reason this version must not add one to a booking's dict)."""
    wo = d.get("work_order")
    work_order = WorkOrder(**{**wo, "address": Address(**(wo.get("address") or {}))}) if wo else None
    return Booking(id=d["id"], environment=d["environment"], start=datetime.fromisoformat(d["start"]), end=datetime.fromisoformat(d["end"]),
                   active=d["active"], status=BookingStatus(**d["status"]), resource_id=d.get("resource_id"),
                   resource_type=d.get("resource_type"), mailbox=d.get("mailbox"), work_order=work_order, name=d.get("name"),
                   modified_on=_dt(d.get("modified_on")), location=BookingLocation(**(d.get("location") or {})))


def observation(e: dict) -> tuple[str, Booking | None]:
    deleted = e["deleted"]
    if not isinstance(deleted, bool):
        raise TypeError("an observation row without its deleted flag")
    return str(e["booking_id"]), None if deleted else booking(json.loads(e["booking"]))


def mailbox(row: dict) -> Mailbox:
    return Mailbox(address=row["address"], environment=row.get("environment") or None, sync_method=row.get("sync_method", "server-side"),
                   approved=bool(row.get("approved")), test_status=MailboxTestStatus(row.get("test_status", "not_tested")),
                   test_reason=row.get("test_reason") or None, enabled=bool(row.get("enabled", True)), time_zone=row.get("time_zone") or "UTC",
                   filters=tuple(filter_from_dict(f) for f in json.loads(row.get("filters") or "[]")))


def has_work(row: dict) -> bool:
    """That version's marks (it also read an inline set, which this version never writes)."""
    return (row.get("pending_mark") or "") != (row.get("consumed_mark") or "") or int(row.get("pending_left") or 0) > 0


def lease(e: dict) -> tuple[str, datetime | None, str]:
    return str(e.get("holder") or ""), _dt(e.get("expires")), str(e.get("inline_done") or "")
