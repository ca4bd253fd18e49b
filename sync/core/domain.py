"""Domain types: what a booking, a mailbox and a link are, independent of Dataverse, Graph and storage."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

FS_CANCELED = 690970005
BOOKING_STATUS_CANCELED = 3
RESOURCE_TYPE_USER = 3


@dataclass(frozen=True)
class Address:
    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    line3: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def display(self) -> str:
        return ", ".join(p for p in (self.name, self.line1, self.city, self.state, self.postal_code) if p)


@dataclass(frozen=True)
class WorkOrder:
    id: str
    number: str
    priority: str | None = None
    work_order_type: str | None = None
    work_order_type_id: str | None = None
    primary_incident_type: str | None = None
    summary: str | None = None
    service_account: str | None = None
    reported_by_contact: str | None = None
    territory: str | None = None
    territory_id: str | None = None
    address: Address = field(default_factory=Address)


@dataclass(frozen=True)
class BookingLocation:
    """The booking's own location (C2): msdyn_worklocation (Onsite, Facility, Location Agnostic) and coordinates."""
    work_location: int | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class BookingStatus:
    id: str | None
    name: str | None
    status: int | None               # bookingstatus.status: 1 Proposed, 2 Committed, 3 Canceled
    field_service_status: int | None  # msdyn_fieldservicestatus

    @property
    def canceled(self) -> bool:
        return self.status == BOOKING_STATUS_CANCELED or self.field_service_status == FS_CANCELED


@dataclass(frozen=True)
class Booking:
    id: str
    environment: str
    start: datetime
    end: datetime
    active: bool
    status: BookingStatus
    resource_id: str | None
    resource_type: int | None
    mailbox: str | None              # the booked user's mailbox address, lower case
    work_order: WorkOrder | None
    name: str | None = None
    modified_on: datetime | None = None
    location: BookingLocation = field(default_factory=BookingLocation)


@dataclass(frozen=True)
class SkippedRow:
    """A row the source could not turn into a Booking (E3); never stops a read."""
    booking_id: str
    reason: str


class MailboxTestStatus(str, Enum):
    NOT_TESTED = "not_tested"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class SyncFilter:
    """One sync filter (S5). Each criterion given must hold; several filters combine as a union."""
    name: str
    booking_statuses: frozenset[str] = frozenset()      # booking status names, case-insensitive
    work_order_types: frozenset[str] = frozenset()
    territories: frozenset[str] = frozenset()

    def matches(self, booking: Booking) -> bool:
        def ok(wanted: frozenset[str], value: str | None) -> bool:
            return not wanted or (value is not None and value.lower() in {w.lower() for w in wanted})
        wo = booking.work_order
        return (ok(self.booking_statuses, booking.status.name)
                and ok(self.work_order_types, wo.work_order_type if wo else None)
                and ok(self.territories, wo.territory if wo else None))


@dataclass(frozen=True)
class Mailbox:
    address: str                      # lower case; the partition of its links
    environment: str | None = None    # the environment it is bound to (M4)
    sync_method: str = "server-side"  # server-side | none
    approved: bool = False
    test_status: MailboxTestStatus = MailboxTestStatus.NOT_TESTED
    test_reason: str | None = None
    enabled: bool = True              # sync on/off for this mailbox (M5)
    time_zone: str = "UTC"
    filters: tuple[SyncFilter, ...] = ()

    @property
    def eligible(self) -> bool:
        """M1: server-side sync, approved, tested with Success; and not turned off (M5)."""
        return (self.sync_method == "server-side" and self.approved and self.test_status == MailboxTestStatus.SUCCESS
                and self.enabled)


class LinkState(str, Enum):
    LINKED = "linked"
    CREATING = "creating"     # intent recorded before the Graph create; resolved on the next run
    UNLINKED = "unlinked"     # logically deleted (D3): the event stays in Outlook untouched; relinked if the booking returns
    REMOVED = "removed"       # this service deleted the event; kept so a return creates with the next generation


@dataclass(frozen=True)
class Link:
    booking_id: str
    mailbox: str
    environment: str
    event_id: str | None
    generation: int
    trigger_fingerprint: str
    content_fingerprint: str
    event_start: datetime
    event_end: datetime
    state: LinkState = LinkState.LINKED
    has_attendees: bool = False
    written_at: datetime | None = None
    etag: str | None = None
