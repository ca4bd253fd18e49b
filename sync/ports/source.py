"""The booking source port (Dataverse): what a cycle reads, and the records it reads them as."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..core.domain import Booking, SkippedRow


@dataclass
class ReadResult:
    bookings: list[Booking] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)

    def extend(self, other: ReadResult) -> None:
        self.bookings.extend(other.bookings)
        self.skipped.extend(other.skipped)


@dataclass
class ChangeSet:
    changed_bookings: set[str] = field(default_factory=set)
    deleted_bookings: set[str] = field(default_factory=set)
    changed_work_orders: set[str] = field(default_factory=set)
    delta_links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvironmentFacts:
    application_user: str                      # WhoAmI's UserId
    tracking: dict[str, bool]                  # table (logical name) -> change tracking on (T5)


@dataclass(frozen=True)
class UserResource:
    resource_id: str
    user_id: str | None
    mailbox: str | None
    disabled: bool
    invalid_address: bool = False      # the user has an address, but not one a mailbox can have (E3): counted apart


FILTER_FIELDS = ("booking_statuses", "work_order_types", "territories")


class BookingSource(Protocol):
    @property
    def environment(self) -> str: ...

    @property
    def requests(self) -> int: ...

    async def read_window(self, start: datetime, end: datetime) -> ReadResult: ...

    async def read_window_for(self, start: datetime, end: datetime, mailboxes: Iterable[str]) -> ReadResult:
        """The window's bookings of these mailboxes' user resources only (newly enabled mailboxes start from them)."""
        ...

    async def read_bookings(self, ids: Iterable[str]) -> ReadResult: ...

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime) -> ReadResult: ...

    async def read_changes(self, delta_links: dict[str, str] | None) -> ChangeSet: ...

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None,
                         slice_end: datetime) -> tuple[ChangeSet, ReadResult]: ...

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None: ...

    async def list_user_resources(self) -> list[UserResource]: ...

    async def environment_facts(self) -> EnvironmentFacts:
        """What the preflight checks of the environment (G3): the application user, and change tracking (T5)."""
        ...

    async def dynamics_synced(self) -> set[str]:
        """The addresses whose Dynamics mailbox already synchronizes appointments, contacts and tasks through
        server-side synchronization (M7): Field Service bookings reach their calendars from Dynamics itself."""
        ...

    async def filter_values(self) -> dict[str, set[str]]:
        """The names a sync filter can name (FILTER_FIELDS -> names): booking statuses, work order types, territories."""
        ...
