"""BookingSource contract: FakeBookingSource and DataverseClient (azure-core -> emulator) behave the same."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sync.adapters.credentials import LoopbackDevCredential
from sync.adapters.dataverse import DataverseClient
from sync.adapters.memory import FakeBookingSource
from sync.ports import ChangeTokenExpired
from tests.dvseed import DvSeed, iso
from tests.factories import booking

NOW = datetime.now(UTC).replace(microsecond=0, second=0)
ADDRESS = "tech@contoso.example"


class FakeSide:
    def __init__(self):
        self.source = FakeBookingSource("https://contoso.crm.dynamics.com")

    def add(self, start):
        b = booking(ADDRESS, start=start)
        self.source.put(b)
        return b.id

    def add_for(self, address, start):
        b = booking(address, start=start, resource_id=f"r-{address}")
        self.source.put(b)
        return b.id

    def move(self, booking_id, start):
        b = self.source.bookings[booking_id]
        self.source.put(replace(b, start=start, end=start + (b.end - b.start)))

    def delete(self, booking_id):
        self.source.delete(booking_id)

    def expire(self):
        self.source.expire_tokens()


class EmulatorSide:
    def __init__(self, stack):
        self.stack, self.seed = stack, DvSeed(stack)
        self.tech = self.seed.technician(ADDRESS)
        self.techs = {ADDRESS: self.tech}
        self.source = DataverseClient(stack.emulator_url + "/orgs/default", LoopbackDevCredential(), page_size=3)

    def add(self, start):
        return self.seed.booking(self.tech, start)

    def add_for(self, address, start):
        if address not in self.techs:
            self.techs[address] = self.seed.technician(address)
        return self.seed.booking(self.techs[address], start)

    def move(self, booking_id, start):
        self.seed.update("bookableresourcebookings", booking_id, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})

    def delete(self, booking_id):
        self.seed.delete("bookableresourcebookings", booking_id)

    def expire(self):
        self.stack.control("POST", "/orgs/default/expire-change-tracking")


@pytest.fixture(params=["fake", "emulator"])
async def side(request):
    if request.param == "fake":
        yield FakeSide()
        return
    s = EmulatorSide(request.getfixturevalue("tenant"))
    yield s
    await s.source.close()


async def test_window_read_returns_overlapping_bookings(side):
    inside = {side.add(NOW + timedelta(days=d)) for d in (0, 3, 13)}
    side.add(NOW + timedelta(days=20))
    side.add(NOW - timedelta(days=10))
    result = await side.source.read_window(NOW - timedelta(days=7), NOW + timedelta(days=14))
    assert {b.id for b in result.bookings} == inside
    assert all(b.mailbox == ADDRESS for b in result.bookings)


async def test_a_window_read_for_some_mailboxes_returns_only_their_bookings(side):
    mine = {side.add_for("new1@contoso.example", NOW + timedelta(days=1)), side.add_for("new2@contoso.example", NOW + timedelta(days=2))}
    side.add_for("new1@contoso.example", NOW + timedelta(days=30))                   # outside the window
    side.add(NOW + timedelta(days=1))                                                 # another technician's
    side.add_for("other@contoso.example", NOW + timedelta(days=1))
    result = await side.source.read_window_for(NOW - timedelta(days=7), NOW + timedelta(days=14),
                                               {"new1@contoso.example", "NEW2@contoso.example", "nobody@contoso.example"})
    assert {b.id for b in result.bookings} == mine
    assert not (await side.source.read_window_for(NOW - timedelta(days=7), NOW + timedelta(days=14), {"nobody@contoso.example"})).bookings


async def test_changes_since_a_token(side):
    a, b = side.add(NOW + timedelta(days=1)), side.add(NOW + timedelta(days=2))
    start = await side.source.read_changes(None)
    assert not start.changed_bookings and not start.deleted_bookings
    side.move(a, NOW + timedelta(days=4))
    side.delete(b)
    c = side.add(NOW + timedelta(days=5))
    changes = await side.source.read_changes(start.delta_links)
    assert changes.changed_bookings == {a, c} and changes.deleted_bookings == {b}
    read = await side.source.read_bookings(changes.changed_bookings)
    assert {x.id: x.start for x in read.bookings}[a] == NOW + timedelta(days=4)
    assert not (await side.source.read_changes(changes.delta_links)).changed_bookings


async def test_expired_token_is_reported(side):
    side.add(NOW)
    start = await side.source.read_changes(None)
    side.expire()
    with pytest.raises(ChangeTokenExpired):
        await side.source.read_changes(start.delta_links)


async def test_read_one_booking(side):
    a = side.add(NOW + timedelta(days=1))
    assert (await side.source.read_booking(a)).id == a


async def test_read_cycle_gives_changes_and_the_new_slice_in_one_request(side):
    a = side.add(NOW + timedelta(days=1))
    start = await side.source.read_changes(None)
    side.move(a, NOW + timedelta(days=2))
    entering = side.add(NOW + timedelta(days=14, hours=1))
    before = side.source.requests
    changes, entered = await side.source.read_cycle(start.delta_links, NOW + timedelta(days=14), NOW + timedelta(days=14, hours=3))
    assert side.source.requests - before == 1
    assert changes.changed_bookings == {a, entering}
    assert [b.id for b in entered.bookings] == [entering]
    quiet, nothing = await side.source.read_cycle(changes.delta_links, None, NOW)
    assert not quiet.changed_bookings and nothing.bookings == []


async def test_read_cycle_reports_an_expired_token(side):
    side.add(NOW)
    start = await side.source.read_changes(None)
    side.expire()
    with pytest.raises(ChangeTokenExpired):
        await side.source.read_cycle(start.delta_links, NOW, NOW + timedelta(hours=1))
