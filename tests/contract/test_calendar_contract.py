"""Calendar contract: FakeCalendar and GraphCalendar (msgraph-sdk -> emulator) behave the same."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sync.adapters.credentials import LoopbackDevCredential
from sync.adapters.graph import GraphCalendar
from sync.adapters.memory import FakeCalendar
from sync.core.render import TAG_BOOKING, render
from sync.ports import CalendarOp, OpKind, Outcome
from tests.factories import booking

ADDRESS = "tech@contoso.example"


class FakeSide:
    def __init__(self):
        self.calendar = FakeCalendar()

    def add_mailbox(self, address, state="ok"):
        self.calendar.mailbox(address, state=state)

    def events(self, address):
        return sorted((e["start"].strftime("%Y-%m-%dT%H:%M"), e["tags"].get(TAG_BOOKING)) for e in self.calendar.mailbox(address).events.values())

    def owner_deletes(self, address, event_id):
        del self.calendar.mailbox(address).events[event_id]


class EmulatorSide:
    def __init__(self, stack):
        self.stack = stack
        self.calendar = GraphCalendar(stack.emulator_url + "/v1.0", LoopbackDevCredential())

    def add_mailbox(self, address, state="ok"):
        extra = {"ok": {}, "denied": {"in_scope": False}, "disabled": {"state": "disabled"}}[state] if state != "missing" else None
        if extra is not None:
            self.stack.control("POST", "/mailboxes", [{"address": address, **extra}])

    def events(self, address):
        out = []
        for e in self.stack.control("GET", f"/mailboxes/{address}/events")["value"]:
            tags = {p["id"]: p["value"] for p in e.get("singleValueExtendedProperties", [])}
            out.append((e["start"]["dateTime"][:16], tags.get(TAG_BOOKING)))
        return sorted(out)

    def owner_deletes(self, address, event_id):
        self.stack.control("DELETE", f"/mailboxes/{address}/events/{event_id}")


@pytest.fixture(params=["fake", "emulator"])
async def side(request):
    if request.param == "fake":
        yield FakeSide()
        return
    s = EmulatorSide(request.getfixturevalue("tenant"))
    yield s
    await s.calendar.close()


def create(b, generation=0):
    return CalendarOp(b.id, OpKind.CREATE, render(b, ADDRESS, "UTC", generation).payload)


async def test_create_is_idempotent_by_transaction_id(side):
    side.add_mailbox(ADDRESS)
    b = booking(ADDRESS)
    first = await side.calendar.apply(ADDRESS, [create(b)])
    second = await side.calendar.apply(ADDRESS, [create(b)])
    # a repeat is answered as "already created" (400 ErrorDuplicateTransactionId, the emulator's and the fake's default)
    assert first[b.id].outcome == Outcome.OK and second[b.id].outcome == Outcome.ALREADY_CREATED
    assert await side.calendar.find_tagged(ADDRESS, b.environment, b.id) == [first[b.id].event_id]
    assert side.events(ADDRESS) == [(b.start.strftime("%Y-%m-%dT%H:%M"), b.id)]
    assert (await side.calendar.apply(ADDRESS, [create(b, generation=1)]))[b.id].event_id != first[b.id].event_id


async def test_update_delete_and_gone(side):
    side.add_mailbox(ADDRESS)
    b = booking(ADDRESS)
    event_id = (await side.calendar.apply(ADDRESS, [create(b)]))[b.id].event_id
    later = replace(b, start=b.start + timedelta(hours=2), end=b.end + timedelta(hours=2))
    update = CalendarOp(b.id, OpKind.UPDATE, render(later, ADDRESS, "UTC", 0).payload_for_update(), event_id)
    assert (await side.calendar.apply(ADDRESS, [update]))[b.id].outcome == Outcome.OK
    assert side.events(ADDRESS) == [(later.start.strftime("%Y-%m-%dT%H:%M"), b.id)]
    delete = CalendarOp(b.id, OpKind.DELETE, event_id=event_id)
    assert (await side.calendar.apply(ADDRESS, [delete]))[b.id].outcome == Outcome.OK
    assert side.events(ADDRESS) == []
    assert (await side.calendar.apply(ADDRESS, [delete]))[b.id].outcome == Outcome.GONE
    assert (await side.calendar.apply(ADDRESS, [update]))[b.id].outcome == Outcome.GONE


async def test_cancel_needs_attendees(side):
    side.add_mailbox(ADDRESS)
    b = booking(ADDRESS)
    event_id = (await side.calendar.apply(ADDRESS, [create(b)]))[b.id].event_id
    result = await side.calendar.apply(ADDRESS, [CalendarOp(b.id, OpKind.CANCEL, event_id=event_id, comment="x")])
    assert result[b.id].outcome == Outcome.INVALID


async def test_find_tagged(side):
    side.add_mailbox(ADDRESS)
    b, other = booking(ADDRESS), booking(ADDRESS)
    event_id = (await side.calendar.apply(ADDRESS, [create(b), create(other)]))[b.id].event_id
    assert await side.calendar.find_tagged(ADDRESS, b.environment, b.id) == [event_id]
    assert await side.calendar.find_tagged(ADDRESS, "https://elsewhere.crm.dynamics.com", b.id) == []


@pytest.mark.parametrize("state,reason", [("missing", "mailbox_not_found"), ("denied", "access_denied"), ("disabled", "mailbox_disabled")])
async def test_unusable_mailboxes(side, state, reason):
    side.add_mailbox(ADDRESS, state)
    probe = await side.calendar.test_mailbox(ADDRESS)
    assert (probe.ok, probe.reason, probe.transient) == (False, reason, False)
    result = await side.calendar.apply(ADDRESS, [create(booking(ADDRESS))])
    assert next(iter(result.values())).outcome == Outcome.MAILBOX_UNAVAILABLE


async def test_probe_ok(side):
    side.add_mailbox(ADDRESS)
    probe = await side.calendar.test_mailbox(ADDRESS)
    assert probe.ok and probe.time_zone


async def test_bulk_mailbox_test_matches_one_by_one(side):
    states = {f"m{i}@contoso.example": state for i, state in enumerate(["ok", "missing", "denied", "disabled"] * 6)}
    for address, state in states.items():
        side.add_mailbox(address, state)
    bulk = await side.calendar.test_mailboxes(list(states))
    single = {a: await side.calendar.test_mailbox(a) for a in states}
    assert {a: (p.ok, p.reason) for a, p in bulk.items()} == {a: (p.ok, p.reason) for a, p in single.items()}
    assert sum(p.ok for p in bulk.values()) == 6
