"""The amended contract on the local stack (../shared/spec/behavior.md: M1, M4, C2, D5), tried as a user
would: through the real clients, the emulator and Azurite."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.admin.diagnose import diagnose
from sync.admin.mailboxes import MailboxAdmin
from sync.app.clients import Clients
from sync.local.cycle import run_cycle
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import enable_all_mailboxes, stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)
TECH = "tech@contoso.example"


configure = stack_settings


def events(tenant, address=TECH) -> list[dict]:
    return tenant.control("GET", f"/mailboxes/{address}/events")["value"]


async def enable(settings, *addresses: str, environment: str | None = None) -> None:
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for address in addresses:
            await admin.register(address, environment or settings.environments[0], approved=True)
        await admin.test_and_enable(list(addresses), NOW)


async def test_r_m4_a_mailbox_bound_to_one_environment_never_receives_another_environments_bookings(tenant, table_prefix, monkeypatch):
    first = tenant.environment()["DATAVERSE_ENVIRONMENTS"]
    second = first.replace("/orgs/default", "/orgs/second")
    settings = configure(tenant, table_prefix, monkeypatch, DATAVERSE_ENVIRONMENTS=f"{first},{second}")
    home, other = DvSeed(tenant), DvSeed(tenant, org="second")
    mine = home.booking(home.technician(TECH), NOW + timedelta(days=1))
    theirs = other.booking(other.technician(TECH, mailbox=False), NOW + timedelta(days=2))
    await enable(settings, TECH, environment=first)
    summary = await run_cycle(settings)
    (result,) = summary["mailboxes"]
    assert result["counts"].get("created") == 1
    tagged = {e["singleValueExtendedProperties"][1]["value"] if len(e.get("singleValueExtendedProperties") or []) > 1 else None
              for e in events(tenant)}
    assert tagged == {mine}
    async with Clients(settings) as rt:
        verdict = await diagnose(theirs, rt.source(second), rt.store, settings.sync, NOW)
        mine_verdict = await diagnose(mine, rt.source(first), rt.store, settings.sync, NOW)
    assert (verdict.code, verdict.in_outlook) == ("bound_to_another_environment", False)
    assert "link_state" not in verdict.details, "the sync never wrote it, and diagnose says so"
    assert (mine_verdict.code, mine_verdict.in_outlook) == ("synced", True)
    other.update("bookableresourcebookings", theirs, {"name": "Changed"})          # a change there reaches nothing here
    assert (await run_cycle(settings))["mailboxes"] == [] and len(events(tenant)) == 1


@pytest.mark.parametrize("profile", ["fieldservice", "enhanced"])
async def test_r_c2_the_bookings_own_location_updates_and_a_work_order_address_alone_does_not(tenant, table_prefix, monkeypatch,
                                                                                                profile):
    settings = configure(tenant, table_prefix, monkeypatch, SYNC_PROFILE=profile)
    seed = DvSeed(tenant)
    work_order = seed.work_order()
    booking = seed.booking(seed.technician(TECH), NOW + timedelta(days=1), work_order=work_order,
                           msdyn_worklocation=690970000, msdyn_latitude=47.6, msdyn_longitude=-122.3)
    await enable(settings, TECH)
    await run_cycle(settings)
    (event,) = events(tenant)

    seed.update("msdyn_workorders", work_order, {"msdyn_city": "Tacoma", "msdyn_address1": "9 Elm St"})   # C3
    counts = (await run_cycle(settings))["totals"]
    (after_wo,) = events(tenant)
    if profile == "fieldservice":
        assert not counts.get("updated") and "Tacoma" not in after_wo["location"]["displayName"]
    else:                                                          # REFRESH_WORK_ORDER_FIELDS
        assert counts.get("updated") == 1 and "Tacoma" in after_wo["location"]["displayName"]

    seed.update("bookableresourcebookings", booking, {"msdyn_latitude": 47.25, "msdyn_longitude": -122.44})  # C2
    counts = (await run_cycle(settings))["totals"]
    (after_move,) = events(tenant)
    assert counts.get("updated") == 1 and after_move["id"] == event["id"]
    assert "Tacoma" in after_move["location"]["displayName"], "the C2 update refreshes the work order fields too"
    assert not (await run_cycle(settings))["totals"].get("updated")                # C4 afterwards


def many_technicians(seed, count: int, bookings_each: int, territory: str) -> dict[str, list[str]]:
    region = seed.add("territories", {"name": territory})["territoryid"]
    out = {}
    for i in range(count):
        address = f"tech{i:02d}@contoso.example"
        tech = seed.technician(address)
        out[address] = [seed.booking(tech, NOW + timedelta(days=1, hours=h), work_order=seed.work_order(_msdyn_serviceterritory_value=region))
                        for h in range(bookings_each)]
    return out


async def filters(settings, *args, **kw):
    from sync.admin.filters import filter_request, filters_action
    async with Clients(settings) as rt:
        return await filters_action(rt, settings.environments, filter_request(*args, **kw), settings.sync, NOW)


async def test_r_d5_the_deployment_wide_guard_holds_every_mailboxs_removals_until_forced(tenant, table_prefix, monkeypatch):
    """15 calendars of 3 events: a filter that matches none of them would unlink 45 of 45 links, 3 per mailbox, each
    under the per-mailbox guard's count. The deployment-wide guard stops every removal; creates still go; --force passes."""
    settings = configure(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    techs = many_technicians(seed, 15, 3, "North")
    south = seed.add("territories", {"name": "South"})["territoryid"]
    await enable(settings, *techs)
    assert (await run_cycle(settings))["totals"]["created"] == 45
    await filters(settings, "add", None, "south only", territories=["South"])
    fresh = seed.booking(seed.technician("new@contoso.example"), NOW + timedelta(days=2),
                         work_order=seed.work_order(_msdyn_serviceterritory_value=south))
    await enable(settings, "new@contoso.example")

    held = await run_cycle(settings)
    assert held["guard"]["blocked"] and held["guard"]["removals"] == 45 and held["guard"]["links"] == 45
    assert "45 of 45 links" in held["guard"]["message"] and "filter" in held["guard"]["message"]
    assert not held["totals"].get("unlinked") and held["totals"].get("created") == 1          # creates go, removals wait
    assert {r["outcome"] for r in held["mailboxes"] if r["mailbox"] != "new@contoso.example"} == {"blocked"}
    assert all(len(events(tenant, a)) == 3 for a in techs) and [e for e in events(tenant, "new@contoso.example")]
    again = await run_cycle(settings)                                                          # nothing was lost: still held
    assert again["guard"]["blocked"] and not again["totals"].get("unlinked")

    forced = await run_cycle(settings, force=True)
    assert forced["totals"].get("unlinked") == 45 and "guard" not in forced
    assert all(len(events(tenant, a)) == 3 for a in techs), "D3: unlinked events stay in Outlook"
    assert fresh


async def test_r_d5_a_filter_naming_a_value_the_environment_does_not_have_is_refused(tenant, table_prefix, monkeypatch):
    from sync.admin.dispatch import InvalidRequest
    settings = configure(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    for name in ("North", "South"):
        seed.add("territories", {"name": name})
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
    with pytest.raises(InvalidRequest) as refused:
        await filters(settings, "add", None, "typo", territories=["Nowhere"])
    assert "'Nowhere'" in str(refused.value) and "North, South" in str(refused.value)
    with pytest.raises(InvalidRequest) as status:
        await filters(settings, "add", None, "typo", booking_statuses=["Sheduled"])
    assert "Canceled, Scheduled" in str(status.value)
    assert (await filters(settings, "add", None, "ok", territories=["south"], work_order_types=["Repair"]))["filters"]
    async with Clients(settings) as rt:
        assert [f.name for f in await rt.store.config.global_filters()] == ["ok"]


async def test_r_d5_a_filter_dry_run_shows_what_it_would_remove_per_mailbox_and_changes_nothing(tenant, table_prefix, monkeypatch):
    settings = configure(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    techs = many_technicians(seed, 3, 2, "North")
    seed.add("territories", {"name": "South"})
    await enable(settings, *techs)
    await run_cycle(settings)
    preview = await filters(settings, "add", None, "south only", territories=["South"], dry_run=True)
    assert preview["dry_run"] and preview["would_remove"] == {a: 2 for a in techs}
    mine = await filters(settings, "add", "tech00@contoso.example", "north", territories=["North"], dry_run=True)
    assert mine["would_remove"] == {}
    async with Clients(settings) as rt:
        assert await rt.store.config.global_filters() == ()
        assert not any(r.needs_initial_read for r in await rt.store.mailboxes.all())
    assert not (await run_cycle(settings))["totals"].get("unlinked")


async def test_r_m1_the_sync_method_is_set_like_approve_and_test(tenant, table_prefix, monkeypatch):
    from sync.admin.dispatch import InvalidRequest, mailbox_action, validate
    settings = configure(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    booking = seed.booking(seed.technician(TECH), NOW + timedelta(days=1))
    await enable(settings, TECH)
    with pytest.raises(InvalidRequest):
        validate("set-method", [TECH], False, None, settings.environments, "outlook")
    async with Clients(settings) as rt:
        changed = await mailbox_action(rt, settings.environments, "set-method", [TECH], False, None, NOW, method="none")
        assert changed == {"updated": 1, "sync_method": "none"}
        listing = await mailbox_action(rt, settings.environments, "list", [], False, None, NOW)
        assert listing["mailboxes"][0]["sync_method"] == "none"
    assert (await run_cycle(settings))["totals"] == {} and events(tenant) == []            # M1: nothing syncs
    async with Clients(settings) as rt:
        assert (await diagnose(booking, rt.source(settings.environments[0]), rt.store, settings.sync, NOW)).code == "sync_method_none"
        await mailbox_action(rt, settings.environments, "set-method", [TECH], False, None, NOW, method="server-side")
    assert (await run_cycle(settings))["totals"].get("created") == 1


async def test_r_c9_an_event_the_technician_moves_to_another_calendar_keeps_its_link_and_is_never_duplicated(tenant, table_prefix,
                                                                                                             monkeypatch):
    """Graph, "Obtain immutable identifiers for Outlook resources": an event's id changes when it moves to another
    calendar unless the request says Prefer: IdType="ImmutableId"; the emulator now does so. The technician drags the
    synced event into another calendar, then the booking moves: the sync updates that event where it is, and the
    mailbox holds one event for the booking. (6c040fe: the update answered 404, C5 created the event again, two.)"""
    from sync.app.settings import load
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    booking = seed.booking(tech, datetime.now(UTC) + timedelta(days=1))
    await enable_all_mailboxes(settings)
    assert (await run_cycle(settings))["totals"].get("created") == 1
    [event] = tenant.control("GET", "/mailboxes/tech@contoso.example/events")["value"]
    moved = tenant.control("POST", f"/mailboxes/tech@contoso.example/events/{event['id']}/move", {"calendar": "Jobs"})
    assert moved["id"] != event["defaultId"] and moved["immutableId"] == event["id"]   # a client without the header loses it
    start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    summary = await run_cycle(settings)
    assert summary["totals"] == {"updated": 1}, summary["totals"]
    events = tenant.control("GET", "/mailboxes/tech@contoso.example/events")["value"]
    assert [e["defaultId"] for e in events] == [moved["id"]] and events[0]["start"]["dateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
