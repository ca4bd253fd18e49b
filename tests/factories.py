"""Builders for domain objects in tests."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sync.core.domain import Address, Booking, BookingStatus, Link, LinkState, Mailbox, MailboxTestStatus, WorkOrder
from sync.core.render import render

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ENV = "https://contoso.crm.dynamics.com"
SCHEDULED = BookingStatus("s-1", "Scheduled", 2, 690970000)
CANCELED = BookingStatus("s-2", "Canceled", 3, 690970005)


def work_order(**kw) -> WorkOrder:
    base = dict(id=str(uuid.uuid4()), number="00042", priority="High", work_order_type="Repair", primary_incident_type="Boiler not heating",
                summary="Bring filters", service_account="Fabrikam", reported_by_contact="Ana Lee", territory="North",
                address=Address(line1="1 Pine St", city="Seattle", state="WA", postal_code="98101", country="US", latitude=47.6, longitude=-122.3))
    base.update(kw)
    return WorkOrder(**base)


def booking(mailbox: str = "tech@contoso.example", start: datetime | None = None, hours: float = 2, **kw) -> Booking:
    start = start or NOW + timedelta(days=1)
    base = dict(id=str(uuid.uuid4()), environment=ENV, start=start, end=start + timedelta(hours=hours), active=True,
                status=SCHEDULED, resource_id="r-1", resource_type=3, mailbox=mailbox, work_order=work_order(), name="B")
    base.update(kw)
    return Booking(**base)


def mailbox(address: str = "tech@contoso.example", **kw) -> Mailbox:
    base = dict(address=address, environment=ENV, approved=True, test_status=MailboxTestStatus.SUCCESS, enabled=True)
    base.update(kw)
    return Mailbox(**base)


def link_for(b: Booking, mailbox_address: str | None = None, generation: int = 0, **kw) -> Link:
    address = mailbox_address or b.mailbox
    r = render(b, address, "UTC", generation)
    base = dict(booking_id=b.id, mailbox=address, environment=b.environment, event_id="evt-" + b.id[:8], generation=generation,
                trigger_fingerprint=r.trigger_fingerprint, content_fingerprint=r.content_fingerprint,
                event_start=b.start, event_end=b.end, state=LinkState.LINKED)
    base.update(kw)
    return Link(**base)


def moved(b: Booking, delta: timedelta) -> Booking:
    return replace(b, start=b.start + delta, end=b.end + delta)


async def with_work(state) -> set[str]:
    """The mailboxes whose records show observations waiting (what a cycle syncs)."""
    return {r.address for r in await state.mailboxes.all() if r.has_work}
