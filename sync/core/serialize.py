"""Domain objects <-> plain JSON-able dicts: what activities pass to each other and what the store keeps."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .domain import Address, Booking, BookingLocation, BookingStatus, Mailbox, MailboxTestStatus, SyncFilter, WorkOrder


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def booking_to_dict(b: Booking) -> dict[str, Any]:
    """The same dict as dataclasses.asdict, built field by field: asdict deep-copies every value, which made it the
    largest single cost of routing a cycle's bookings. Every field is a scalar or one of these flat dataclasses."""
    d = dict(vars(b))
    d["status"], d["location"] = dict(vars(b.status)), dict(vars(b.location))
    if b.work_order is not None:
        d["work_order"] = {**vars(b.work_order), "address": dict(vars(b.work_order.address))}
    d["start"], d["end"] = b.start.isoformat(), b.end.isoformat()
    d["modified_on"] = b.modified_on.isoformat() if b.modified_on else None
    return d


def booking_from_dict(d: dict[str, Any]) -> Booking:
    wo = d.get("work_order")
    work_order = None
    if wo:
        work_order = WorkOrder(**{**wo, "address": Address(**(wo.get("address") or {}))})
    return Booking(id=d["id"], environment=d["environment"], start=_required_dt(d["start"]), end=_required_dt(d["end"]), active=d["active"],
                   status=BookingStatus(**d["status"]), resource_id=d.get("resource_id"), resource_type=d.get("resource_type"),
                   mailbox=d.get("mailbox"), work_order=work_order, name=d.get("name"), modified_on=_dt(d.get("modified_on")),
                   location=BookingLocation(**(d.get("location") or {})))


def filter_to_dict(f: SyncFilter) -> dict[str, Any]:
    return {"name": f.name, "booking_statuses": sorted(f.booking_statuses), "work_order_types": sorted(f.work_order_types),
            "territories": sorted(f.territories)}


def filter_from_dict(d: dict[str, Any]) -> SyncFilter:
    return SyncFilter(d["name"], frozenset(d.get("booking_statuses", [])), frozenset(d.get("work_order_types", [])),
                      frozenset(d.get("territories", [])))


def mailbox_from_row(row: Any) -> Mailbox:
    """A mailbox row as the store keeps it (its filters as JSON); raises KeyError or ValueError for one that does not
    read as a mailbox."""
    return Mailbox(address=row["address"], environment=row.get("environment") or None,
                   sync_method=row.get("sync_method", "server-side"), approved=bool(row.get("approved")),
                   test_status=MailboxTestStatus(row.get("test_status", "not_tested")), test_reason=row.get("test_reason") or None,
                   enabled=bool(row.get("enabled", True)), time_zone=row.get("time_zone") or "UTC",
                   filters=tuple(filter_from_dict(f) for f in json.loads(row.get("filters") or "[]")))
