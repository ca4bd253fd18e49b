"""Dataverse rows -> Bookings: one booking row (with its expanded resource, user, status and work order) read as a
`Booking`, or as a `SkippedRow` with its reason when it is malformed (E3: end before start, a missing start, an unknown
status, oversized text), never raised."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..core.domain import Address, Booking, BookingLocation, BookingStatus, SkippedRow, WorkOrder
from ..core.ids import is_address, is_guid

FORMATTED = "@OData.Community.Display.V1.FormattedValue"
MAX_TEXT = 65_536             # a text value longer than this marks the row malformed
KNOWN_STATUS = {1, 2, 3}
KNOWN_FS_STATUS = {None, 690970000, 690970001, 690970002, 690970003, 690970004, 690970005}


def _dt(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _text(row: dict, key: str, formatted: bool = False) -> str | None:
    value = row.get(key + FORMATTED) if formatted else row.get(key)
    return None if value is None else str(value)


def _oversized(value: Any) -> bool:
    """Whether any text in the row (or its expansions) is longer than MAX_TEXT; iterative, as it runs for every row."""
    waiting = [value]
    while waiting:
        item = waiting.pop()
        if isinstance(item, str):
            if len(item) > MAX_TEXT:
                return True
        elif isinstance(item, dict):
            waiting.extend(item.values())
    return False


def booking_from_row(row: dict, environment: str) -> Booking | SkippedRow:
    """A Web API row (with the expansions of BOOKING_EXPAND) -> Booking, or the reason it is malformed."""
    raw_id = row.get("bookableresourcebookingid")
    if not isinstance(raw_id, str) or not is_guid(raw_id):
        return SkippedRow(str(raw_id)[:64], "malformed_id")
    booking_id = raw_id.lower()
    start, end = _dt(row.get("starttime")), _dt(row.get("endtime"))
    if start is None:
        return SkippedRow(booking_id, "missing_start")
    if end is None:
        return SkippedRow(booking_id, "missing_end")
    if end < start:
        return SkippedRow(booking_id, "end_before_start")
    if _oversized(row):
        return SkippedRow(booking_id, "oversized_text")
    status_row = row.get("BookingStatus") or {}
    status = BookingStatus(status_row.get("bookingstatusid"), _text(status_row, "name"), status_row.get("status"),
                           status_row.get("msdyn_fieldservicestatus"))
    if status.status not in KNOWN_STATUS or status.field_service_status not in KNOWN_FS_STATUS:
        return SkippedRow(booking_id, "unknown_status")
    statecode = row.get("statecode")
    if statecode not in (0, 1):
        return SkippedRow(booking_id, "unknown_state")
    resource = row.get("Resource") or {}
    user = resource.get("UserId") or {}
    address = (user.get("internalemailaddress") or "").strip().lower() or None
    if address is not None and not is_address(address):
        return SkippedRow(booking_id, "invalid_mailbox_address")
    wo_row = row.get("msdyn_workorder")
    work_order = None
    if row.get("_msdyn_workorder_value") and wo_row:
        work_order = WorkOrder(
            id=str(wo_row.get("msdyn_workorderid", "")).lower(), number=_text(wo_row, "msdyn_name") or "",
            priority=_text(wo_row, "_msdyn_priority_value", True),
            work_order_type=_text(wo_row, "_msdyn_workordertype_value", True),
            work_order_type_id=wo_row.get("_msdyn_workordertype_value"),
            primary_incident_type=_text(wo_row, "_msdyn_primaryincidenttype_value", True),
            summary=_text(wo_row, "msdyn_workordersummary"),
            service_account=_text(wo_row, "_msdyn_serviceaccount_value", True),
            reported_by_contact=_text(wo_row, "_msdyn_reportedbycontact_value", True),
            territory=_text(wo_row, "_msdyn_serviceterritory_value", True),
            territory_id=wo_row.get("_msdyn_serviceterritory_value"),
            address=Address(name=_text(wo_row, "msdyn_addressname"), line1=_text(wo_row, "msdyn_address1"),
                            line2=_text(wo_row, "msdyn_address2"), line3=_text(wo_row, "msdyn_address3"),
                            city=_text(wo_row, "msdyn_city"), state=_text(wo_row, "msdyn_stateorprovince"),
                            postal_code=_text(wo_row, "msdyn_postalcode"), country=_text(wo_row, "msdyn_country"),
                            latitude=wo_row.get("msdyn_latitude"), longitude=wo_row.get("msdyn_longitude")))
    return Booking(id=booking_id, environment=environment.lower(), start=start, end=end, active=statecode == 0, status=status,
                   resource_id=row.get("_resource_value"), resource_type=resource.get("resourcetype"), mailbox=address,
                   work_order=work_order, name=_text(row, "name"), modified_on=_dt(row.get("modifiedon")),
                   location=BookingLocation(row.get("msdyn_worklocation"), _number(row.get("msdyn_latitude")),
                                            _number(row.get("msdyn_longitude"))))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- the client ----------------------------------------------------------------------------------------
