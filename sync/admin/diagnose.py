"""G1 for one booking: gathers what the sync looks at (the booking from Dataverse; the mailbox, link and last
outcome from the state store) and asks the pure `core.explain`."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..core.domain import Booking
from ..core.explain import Diagnosis, explain
from ..core.ids import checked_guid
from ..core.settings import SyncSettings
from ..ports import BookingSource, DeploymentConfig, MailboxPartitions, MailboxRegistry


class DiagnoseState(Protocol):
    """The state a diagnosis reads."""

    @property
    def mailboxes(self) -> MailboxRegistry: ...

    @property
    def partitions(self) -> MailboxPartitions: ...

    @property
    def config(self) -> DeploymentConfig: ...


async def diagnose(booking_id: str, source: BookingSource, store: DiagnoseState, settings: SyncSettings, now: datetime) -> Diagnosis:
    booking_id = checked_guid(booking_id)
    booking = await source.read_booking(booking_id)
    address = booking.mailbox if isinstance(booking, Booking) else None
    record = await store.mailboxes.get(address) if address else None
    mailbox = record.mailbox if record is not None and not record.unreadable else None
    link = (await store.partitions.links(address)).get(booking_id) if address else None
    outcome = await store.partitions.last_error(address, booking_id) if address else None
    return explain(booking, booking_id, mailbox, link, outcome, settings, now, await store.config.global_filters())
