"""The same scenario on the in-memory fakes and on Azurite + the emulator gives identical calendars."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sync.adapters.credentials import LoopbackDevCredential
from sync.adapters.dataverse import DataverseClient
from sync.adapters.graph import GraphCalendar
from sync.adapters.tables import TableState
from sync.core.domain import Booking, Mailbox, MailboxTestStatus
from sync.core.render import TAG_BOOKING
from sync.core.settings import SyncSettings
from sync.engine.collect import collect
from sync.engine.mailbox import MailboxSync
from tests.dvseed import DvSeed, iso
from tests.factories import CANCELED, booking, with_work, work_order
from tests.world import World

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
A, B = "ana@contoso.example", "ben@contoso.example"


class RealWorld:
    """Dataverse rows in the emulator, Graph through msgraph-sdk, links in Azurite."""

    def __init__(self, stack, prefix: str, settings: SyncSettings):
        self.stack, self.settings, self.now = stack, settings, NOW
        self.seed = DvSeed(stack)
        self.resources = {A: self.seed.technician(A, "Ana"), B: self.seed.technician(B, "Ben")}
        self.work_orders: dict[str, str] = {}
        self.known: set[str] = set()
        self.prefix = prefix

    async def __aenter__(self):
        self.source = DataverseClient(self.stack.emulator_url + "/orgs/default", LoopbackDevCredential())
        self.calendar = GraphCalendar(self.stack.emulator_url + "/v1.0", LoopbackDevCredential())
        self.store = TableState.from_settings(self.stack.table_connection_string, None, None, self.prefix)
        await self.store.ensure_tables()
        for address in (A, B):
            await self.store.mailboxes.put(Mailbox(address, self.source.environment, approved=True, test_status=MailboxTestStatus.SUCCESS))
        return self

    async def __aexit__(self, *exc):
        for c in (self.source, self.calendar, self.store):
            await c.close()

    def put(self, b: Booking) -> None:
        wo = b.work_order
        if wo is not None and wo.id not in self.work_orders:
            self.work_orders[wo.id] = self.seed.work_order(wo.number, msdyn_workordersummary=wo.summary, msdyn_city=wo.address.city)
        elif wo is not None:
            self.seed.update("msdyn_workorders", self.work_orders[wo.id], {"msdyn_workordersummary": wo.summary, "msdyn_city": wo.address.city})
        row = {"starttime": iso(b.start), "endtime": iso(b.end), "_resource_value": self.resources[b.mailbox], "statecode": 0 if b.active else 1,
               "_bookingstatus_value": self.seed.canceled if b.status.canceled else self.seed.status,
               "_msdyn_workorder_value": self.work_orders[wo.id] if wo else None}
        if b.id in self.known:
            self.seed.update("bookableresourcebookings", b.id, row)
        else:
            self.seed.add("bookableresourcebookings", {"bookableresourcebookingid": b.id, "name": "Booking", **row})
            self.known.add(b.id)

    def delete(self, booking_id: str) -> None:
        self.seed.delete("bookableresourcebookings", booking_id)

    async def cycle(self) -> None:
        await collect(self.source, self.store, self.settings, self.now)
        for mailbox in await with_work(self.store):
            await MailboxSync(self.store, self.calendar, self.settings, self.now).run(mailbox)

    def calendars(self) -> dict[str, list]:
        out = {}
        for address in (A, B):
            events = self.stack.control("GET", f"/mailboxes/{address}/events")["value"]
            out[address] = sorted((e["start"]["dateTime"][:16], e["end"]["dateTime"][:16], e["subject"],
                                   next(p["value"] for p in e["singleValueExtendedProperties"] if p["id"] == TAG_BOOKING))
                                  for e in events)
        return out


class FakeWorld(World):
    async def prepare(self):
        for address in (A, B):
            await self.enable(address)

    def delete(self, booking_id: str) -> None:
        self.source.delete(booking_id)

    def calendars(self) -> dict[str, list]:
        return {address: sorted((e["start"].strftime("%Y-%m-%dT%H:%M"), e["end"].strftime("%Y-%m-%dT%H:%M"), e["subject"], e["tags"][TAG_BOOKING])
                                for e in self.events(address)) for address in (A, B)}


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "scenario/" + name))


def _wo(number: str, summary: str = "Bring filters"):
    # the same fields the seeded Dataverse work order carries
    return work_order(id=_id("wo" + number), number=number, summary=summary, primary_incident_type=None, work_order_type="Repair")


async def scenario(world) -> list[dict]:
    snapshots = []
    wo1 = _wo("00001", "first")
    b1 = booking(A, id=_id("b1"), start=NOW + timedelta(days=1, hours=2), work_order=wo1)
    b2 = booking(A, id=_id("b2"), start=NOW + timedelta(days=2), work_order=_wo("00002"))
    b3 = booking(B, id=_id("b3"), start=NOW + timedelta(days=3), work_order=_wo("00003"))
    b4 = booking(B, id=_id("b4"), start=NOW + timedelta(days=20), work_order=_wo("00004"))     # outside the window for now
    b5 = booking(A, id=_id("b5"), start=NOW + timedelta(days=4), work_order=None)              # no work order
    for b in (b1, b2, b3, b4, b5):
        world.put(b)
    await world.cycle()
    snapshots.append(world.calendars())
    world.put(replace(b1, start=b1.start + timedelta(hours=3), end=b1.end + timedelta(hours=3)))   # C2
    world.put(replace(b2, mailbox=B))                                                             # C6
    world.put(replace(b3, status=CANCELED))                                                       # X1
    world.put(replace(b1, start=b1.start + timedelta(hours=3), end=b1.end + timedelta(hours=3),
                      work_order=replace(wo1, summary="changed")))                                # C3: no refresh
    await world.cycle()
    snapshots.append(world.calendars())
    world.delete(b2.id)                                        # D1 in B (future, linked); A's unlinked copy stays (D2)
    await world.cycle()
    snapshots.append(world.calendars())
    world.now = NOW + timedelta(days=7)                                                           # S3: b4 enters
    await world.cycle()
    snapshots.append(world.calendars())
    return snapshots


async def test_fakes_and_azurite_plus_emulator_give_identical_calendars(tenant, table_prefix):
    settings = SyncSettings()
    fake = FakeWorld(settings, now=NOW)
    await fake.prepare()
    fake_snapshots = await scenario(fake)
    async with RealWorld(tenant, table_prefix, settings) as real:
        real_snapshots = await scenario(real)
    assert fake_snapshots == real_snapshots
    assert [(len(s[A]), len(s[B])) for s in fake_snapshots] == [(2, 1), (2, 2), (2, 1), (2, 2)]
