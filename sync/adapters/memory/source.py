"""The booking source's fake: bookings and user resources in memory, with change tracking and expiring tokens."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ...core.domain import RESOURCE_TYPE_USER, Booking, SkippedRow
from ...ports import ChangeSet, ChangeTokenExpired, ChangeTrackingOff, EnvironmentFacts, ReadResult, UserResource


class FakeBookingSource:
    """Dataverse in memory, with change tracking (versions and tombstones) and token expiry."""

    def __init__(self, environment: str):
        self.environment = environment.lower()
        self.bookings: dict[str, Booking] = {}
        self.skipped: dict[str, SkippedRow] = {}
        self._versions: dict[str, int] = {}
        self._tombstones: list[tuple[int, str]] = []
        self._version = 0
        self.min_valid = 0
        self.requests = 0
        self.untracked: set[str] = set()          # tables whose change tracking is off (T5): their changes are refused
        self.synced_by_dynamics: set[str] = set()  # addresses Dynamics' own server-side sync already serves (M7)

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def put(self, booking: Booking) -> None:
        self.bookings[booking.id] = booking
        self._versions[booking.id] = self._bump()

    def delete(self, booking_id: str) -> None:
        if self.bookings.pop(booking_id, None) is not None:
            self._tombstones.append((self._bump(), booking_id))

    def expire_tokens(self) -> None:
        self.min_valid = self._bump()

    async def read_window(self, start: datetime, end: datetime) -> ReadResult:
        self.requests += 1
        return ReadResult([b for b in self.bookings.values() if b.start < end and b.end > start], list(self.skipped.values()))

    async def read_window_for(self, start: datetime, end: datetime, mailboxes: Iterable[str]) -> ReadResult:
        wanted = {m.lower() for m in mailboxes}
        window = await self.read_window(start, end)
        return ReadResult([b for b in window.bookings if (b.mailbox or "").lower() in wanted], [])

    async def read_bookings(self, ids: Iterable[str]) -> ReadResult:
        self.requests += 1
        ids = set(ids)
        return ReadResult([b for i, b in self.bookings.items() if i in ids], [s for i, s in self.skipped.items() if i in ids])

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime) -> ReadResult:
        self.requests += 1
        ids = set(work_order_ids)
        return ReadResult([b for b in self.bookings.values()
                           if b.work_order and b.work_order.id in ids and b.start < end and b.end > start])

    async def environment_facts(self) -> EnvironmentFacts:
        return EnvironmentFacts("00000000-0000-0000-0000-0000000000a1",
                                {t: t not in self.untracked for t in ("bookableresourcebooking", "msdyn_workorder")})

    async def dynamics_synced(self) -> set[str]:
        return set(self.synced_by_dynamics)

    async def filter_values(self) -> dict[str, set[str]]:
        self.requests += 1
        work_orders = [b.work_order for b in self.bookings.values() if b.work_order]
        return {"booking_statuses": {b.status.name for b in self.bookings.values() if b.status.name},
                "work_order_types": {w.work_order_type for w in work_orders if w.work_order_type},
                "territories": {w.territory for w in work_orders if w.territory}}

    async def list_user_resources(self) -> list[UserResource]:
        """The user resources the bookings name (discovery, M3)."""
        self.requests += 1
        found = {(b.resource_id or "", b.mailbox) for b in self.bookings.values() if b.resource_type == RESOURCE_TYPE_USER}
        return [UserResource(resource_id, None, address, False) for resource_id, address in sorted(found, key=str)]

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None:
        self.requests += 1
        return self.bookings.get(booking_id) or self.skipped.get(booking_id)

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None, slice_end: datetime) -> tuple[ChangeSet,
                                                                                                                        ReadResult]:
        changes = await self.read_changes(delta_links)
        entered = await self.read_window(slice_start, slice_end) if slice_start is not None and slice_end > slice_start else ReadResult()
        self.requests -= 1 if slice_start is not None and slice_end > slice_start else 0    # one batched request, as the real source
        return changes, entered

    async def read_changes(self, delta_links: dict[str, str] | None) -> ChangeSet:
        self.requests += 1
        if self.untracked:
            raise ChangeTrackingOff(sorted(self.untracked)[0])
        changes = ChangeSet(delta_links={"bookableresourcebookings": str(self._version), "msdyn_workorders": str(self._version)})
        if not delta_links:
            return changes
        since = int(delta_links["bookableresourcebookings"])
        if since < self.min_valid:
            raise ChangeTokenExpired("Version stamp associated with the client has expired. Please perform a full sync.")
        changes.changed_bookings = {i for i, v in self._versions.items() if v > since and i in self.bookings}
        changes.deleted_bookings = {i for v, i in self._tombstones if v > since and i not in self.bookings}
        return changes

