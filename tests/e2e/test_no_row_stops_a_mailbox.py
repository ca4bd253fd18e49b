"""E3 and T3: no message and no stored row can stop a mailbox. A message whose id is a GUID plus a newline is refused
at the edge; a waiting row that cannot be planned (under a key that is not a booking id, or that does not read as a
booking) is set aside with a reason the status shows, and the mailbox goes on syncing the rest."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sync.admin.diagnose import diagnose
from sync.admin.mailboxes import MailboxAdmin
from sync.admin.status import mailbox_status_rows
from sync.app.clients import Clients
from sync.core.serialize import booking_to_dict
from sync.local.cycle import run_cycle
from sync.local.webhook_host import LocalWebhookHost
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
KEY = "local-function-key"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
A = "ana@contoso.example"


@pytest.fixture
async def synced(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    tech = seed.technician(A, "Ana")
    bookings = [seed.booking(tech, NOW + timedelta(days=1, hours=h)) for h in (0, 3)]
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register(A, settings.environments[0], approved=True)
        await admin.test_and_enable([A], NOW)
    await run_cycle(settings)
    return settings, seed, bookings


def starts(tenant) -> list[str]:
    return sorted(e["start"]["dateTime"][:16] for e in tenant.control("GET", f"/mailboxes/{A}/events")["value"])


def move(seed: DvSeed, booking: str, days: int) -> str:
    start = NOW + timedelta(days=days)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    return start.strftime("%Y-%m-%dT%H:%M")


async def status_of(settings) -> dict:
    async with Clients(settings) as rt:
        return next(r for r in mailbox_status_rows(await rt.store.mailboxes.all()) if r["mailbox"] == A)


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t"])
async def test_r_e3_t3_a_guid_with_trailing_whitespace_is_refused_and_stores_nothing(tenant, synced, suffix):
    settings, seed, bookings = synced
    host = LocalWebhookHost(settings, KEY)
    url = await host.start()
    try:
        body = {"MessageName": "Update", "PrimaryEntityName": "bookableresourcebooking", "PrimaryEntityId": bookings[0] + suffix}
        async with httpx.AsyncClient() as client:
            answer = await client.post(url, params={"code": KEY}, content=json.dumps(body))
        assert answer.status_code == 400 and "GUID" in answer.json()["error"]
        assert host.client.starts == 0
    finally:
        await host.stop()
    async with Clients(settings) as rt:
        assert await rt.store.partitions.observations(A) == []


async def test_r_e3_a_waiting_row_under_a_key_that_is_no_booking_id_is_set_aside_and_the_mailbox_goes_on(tenant, synced):
    """On 76ca131 such a row (what the webhook stored for "<guid>\\n") made every later sync of the mailbox `busy`:
    its planned create could not be claimed, and no later change reached Outlook."""
    settings, seed, bookings = synced
    async with Clients(settings) as rt:
        current = await rt.source(settings.environments[0]).read_booking(bookings[0])
        await rt.store.partitions.observe({A: {bookings[0] + "\n": booking_to_dict(current)}})
    expected = sorted([move(seed, bookings[1], 4), starts(tenant)[0]])
    summary = await run_cycle(settings)
    row = next(r for r in summary["mailboxes"] if r["mailbox"] == A)
    assert row["outcome"] == "synced", row
    assert starts(tenant) == expected
    status = await status_of(settings)
    assert status["set_aside"] == 1 and "not a booking id" in status["set_aside_reason"]
    async with Clients(settings) as rt:
        assert await rt.store.partitions.observations(A) == []                   # nothing can ever apply it: removed, not kept forever
    expected = sorted([move(seed, bookings[0], 5), move(seed, bookings[1], 6)])
    await run_cycle(settings)
    assert starts(tenant) == expected                             # later changes reach Outlook
    assert (await status_of(settings))["set_aside"] == 0


async def test_r_e3_e5_a_waiting_row_that_does_not_read_as_a_booking_is_kept_aside_and_diagnosed(tenant, synced):
    """A waiting row this version cannot read as a booking (no start time, which every version writes) stops neither the
    mailbox nor the rest of its work; it is kept for a version that reads it, until the booking's next observation
    replaces it. A row a newer version wrote with a field this one does not know reads, and syncs (E5)."""
    settings, seed, bookings = synced
    async with Clients(settings) as rt:
        current = booking_to_dict(await rt.source(settings.environments[0]).read_booking(bookings[0]))
        await rt.store.partitions.observe({A: {bookings[0]: {k: v for k, v in current.items() if k != "start"}}})
    moved = move(seed, bookings[1], 4)
    summary = await run_cycle(settings)
    assert next(r for r in summary["mailboxes"] if r["mailbox"] == A)["outcome"] == "synced"
    assert moved in starts(tenant)
    assert (await status_of(settings))["set_aside"] == 1
    async with Clients(settings) as rt:
        assert [p.booking_id for p in await rt.store.partitions.observations(A)] == [bookings[0]]
        found = await diagnose(bookings[0], rt.source(settings.environments[0]), rt.store, settings.sync, NOW)
    assert "could not be read" in found.details.get("last_error", ""), found
    again = move(seed, bookings[0], 5)                           # its next observation replaces the unreadable one
    await run_cycle(settings)
    assert again in starts(tenant) and (await status_of(settings))["set_aside"] == 0
    async with Clients(settings) as rt:
        assert await rt.store.partitions.observations(A) == []
        newer = booking_to_dict(await rt.source(settings.environments[0]).read_booking(bookings[1]))
        start = datetime.fromisoformat(newer["start"]) + timedelta(hours=1)
        newer.update(start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat(), travel_minutes=25,
                     status={**newer["status"], "from_a_newer_version": 1})
        await rt.store.partitions.observe({A: {bookings[1]: newer}})
    await run_cycle(settings)
    assert start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") in starts(tenant) and (await status_of(settings))["set_aside"] == 0


async def test_r_e3_unreadable_stored_rows_in_table_storage_never_stop_the_mailbox_nor_make_a_second_event(tenant, synced):
    """Rows as another version (or a hand edit) might leave them in Azurite: a link whose times do not parse, an
    observation whose body is not JSON. The mailbox syncs the rest; the booking with the unreadable link is not
    planned at all (planned without its link, it would be created a second time), and its change is kept."""
    from sync.adapters.tables import key
    from sync.adapters.tables.rows import OBSERVATION_PREFIX
    settings, seed, bookings = synced
    first_start = starts(tenant)[0]
    async with Clients(settings) as rt:
        links = rt.store.access.table("links")
        link = await links.get_entity(key(A), key(bookings[0]))
        await links.update_entity({**link, "event_start": "not a time"})
        await links.upsert_entity({"PartitionKey": key(A), "RowKey": OBSERVATION_PREFIX + key(bookings[1]), "booking_id": bookings[1],
                                   "deleted": False, "booking": "{not json", "observed_at": NOW.isoformat()})
    move(seed, bookings[0], 4)
    summary = await run_cycle(settings)
    assert next(r for r in summary["mailboxes"] if r["mailbox"] == A)["outcome"] == "synced"
    assert len(tenant.control("GET", f"/mailboxes/{A}/events")["value"]) == 2 and first_start in starts(tenant)   # no second event
    status = await status_of(settings)
    assert status["set_aside"] >= 1 and "link does not read" in status["set_aside_reason"]
    async with Clients(settings) as rt:
        assert bookings[0] in [p.booking_id for p in await rt.store.partitions.observations(A)]                     # its change is kept
    moved = move(seed, bookings[1], 6)                                 # the unreadable observation is replaced by a real one
    await run_cycle(settings)
    assert moved in starts(tenant) and len(starts(tenant)) == 2
