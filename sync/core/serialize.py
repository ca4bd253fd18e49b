"""Domain objects <-> plain JSON-able dicts: what activities pass to each other and what the store keeps."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from .domain import Address, Booking, BookingLocation, BookingStatus, SyncFilter, WorkOrder

T = TypeVar("T")


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


def _known(cls: type[T], values: Mapping[str, Any] | None, **given: Any) -> T:
    """`cls` from the fields of `values` it has (E5: a field another version added is ignored, one it lacks defaults)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (values or {}).items() if k in names}, **given)


def booking_from_dict(d: Mapping[str, Any]) -> Booking:
    """Raises KeyError, TypeError or ValueError when a field every version writes (id, environment, times, active,
    status) is missing or does not read."""
    wo = d.get("work_order")
    work_order = _known(WorkOrder, {k: v for k, v in wo.items() if k != "address"}, address=_known(Address, wo.get("address"))) \
        if wo else None
    status = d["status"]
    if not isinstance(status, Mapping):
        raise TypeError("a booking's status is an object")
    return Booking(id=d["id"], environment=d["environment"], start=_required_dt(d["start"]), end=_required_dt(d["end"]), active=d["active"],
                   status=BookingStatus(status.get("id"), status.get("name"), status.get("status"), status.get("field_service_status")),
                   resource_id=d.get("resource_id"), resource_type=d.get("resource_type"), mailbox=d.get("mailbox"), work_order=work_order,
                   name=d.get("name"), modified_on=_dt(d.get("modified_on")), location=_known(BookingLocation, d.get("location")))


def filter_to_dict(f: SyncFilter) -> dict[str, Any]:
    return {"name": f.name, "booking_statuses": sorted(f.booking_statuses), "work_order_types": sorted(f.work_order_types),
            "territories": sorted(f.territories)}


def filter_from_dict(d: dict[str, Any]) -> SyncFilter:
    return SyncFilter(d["name"], frozenset(d.get("booking_statuses", [])), frozenset(d.get("work_order_types", [])),
                      frozenset(d.get("territories", [])))

