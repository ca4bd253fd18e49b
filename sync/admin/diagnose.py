"""G1 for one booking: gathers what the sync looks at (the booking from Dataverse; the mailbox, link and last
outcome from the state store) and asks the pure `core.explain`."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..core.domain import Booking
from ..core.explain import Diagnosis, explain
from ..core.ids import checked_guid
from ..core.settings import SyncSettings
from ..ports import BookingSource, LinkStore, MailboxStore, OutcomeStore


class DiagnoseStore(MailboxStore, LinkStore, OutcomeStore, Protocol):
    """The rows a diagnosis reads."""


async def diagnose(booking_id: str, source: BookingSource, store: DiagnoseStore, settings: SyncSettings, now: datetime) -> Diagnosis:
    booking_id = checked_guid(booking_id)
    booking = await source.read_booking(booking_id)
    address = booking.mailbox if isinstance(booking, Booking) else None
    mailbox = await store.get_mailbox(address) if address else None
    link = await store.get_link(address, booking_id) if address else None
    outcome = await store.outcome(address, booking_id) if address else None
    return explain(booking, booking_id, mailbox, link, outcome, settings, now, await store.global_filters())
