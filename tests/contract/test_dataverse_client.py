"""The Dataverse booking source against the emulator, through real HTTP (rules S1-S5 inputs, T4, E1-E3)."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from azure.core.exceptions import ClientAuthenticationError
from hypothesis import given, settings
from hypothesis import strategies as st

from devtenant import odata
from sync.adapters.credentials import LoopbackDevCredential
from sync.adapters.dataverse import DataverseClient, booking_from_row, filter_literal
from sync.core.domain import SkippedRow
from sync.core.ids import checked_guid
from sync.ports import ChangeTokenExpired, PermanentError, TransientError
from tests.conftest import shared_reference
from tests.dvseed import DvSeed

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)


def client(stack, **kw) -> DataverseClient:
    return DataverseClient(stack.emulator_url + "/orgs/default", LoopbackDevCredential(), **kw)


async def test_read_window_pages_through_three_or_more_pages_and_maps_everything(tenant):
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    inside = [seed.booking(tech, NOW + timedelta(days=d)) for d in range(7)]
    seed.booking(tech, NOW + timedelta(days=30))
    async with client(tenant, page_size=2) as dv:
        result = await dv.read_window(NOW - timedelta(days=7), NOW + timedelta(days=14))
        assert dv.requests >= 4
    assert sorted(b.id for b in result.bookings) == sorted(inside) and result.skipped == []      # each once, from its slice
    b = result.bookings[0]
    assert b.mailbox == "tech@contoso.example" and b.resource_type == 3 and b.active
    assert b.work_order.number == "00042" and b.work_order.priority == "High" and b.work_order.work_order_type == "Repair"
    assert b.work_order.address.city == "Seattle" and b.work_order.address.latitude == 47.6
    assert b.status.name == "Scheduled" and not b.status.canceled


async def test_a_window_read_in_slices_returns_each_overlapping_booking_once(tenant):
    """The window is read in slices by start time, together: a booking starting on a slice boundary, one that started
    before the window and one spanning every slice each come back once; one ending at the window's start does not."""
    from sync.adapters.dataverse import WINDOW_SLICES
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    start, end = NOW - timedelta(days=8), NOW + timedelta(days=16)
    step = (end - start) / WINDOW_SLICES
    inside = [seed.booking(tech, start + step * i) for i in range(WINDOW_SLICES)]                  # on each boundary
    inside.append(seed.booking(tech, start - timedelta(hours=1), hours=3))                        # started before the window
    inside.append(seed.booking(tech, start + timedelta(hours=1), hours=24 * 23))                  # spans every slice
    seed.booking(tech, start - timedelta(hours=2), hours=2)                                        # ends as the window starts
    seed.booking(tech, end, hours=1)                                                               # starts as it ends
    async with client(tenant, page_size=2) as dv:
        result = await dv.read_window(start, end)
    assert sorted(b.id for b in result.bookings) == sorted(inside)


async def test_r_t4_delta_reports_creates_updates_deletes_and_work_order_changes(tenant):
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    a, b = seed.booking(tech, NOW + timedelta(days=1)), seed.booking(tech, NOW + timedelta(days=2))
    wo = seed.work_order("00099")
    c = seed.booking(tech, NOW + timedelta(days=3), work_order=wo)
    async with client(tenant, page_size=2) as dv:
        start = await dv.read_changes(None)
        assert set(start.delta_links) == {"bookableresourcebookings", "msdyn_workorders"}
        assert not start.changed_bookings  # starting to track lists rows, which the caller reads as a window instead
        seed.update("bookableresourcebookings", a, {"starttime": "2026-12-01T08:00:00Z"})
        seed.delete("bookableresourcebookings", b)
        d = seed.booking(tech, NOW + timedelta(days=4), work_order=wo)
        seed.update("msdyn_workorders", wo, {"msdyn_city": "Tacoma"})
        changes = await dv.read_changes(start.delta_links)
        assert changes.deleted_bookings == {b}
        assert a in changes.changed_bookings and d in changes.changed_bookings and b not in changes.changed_bookings
        assert wo in changes.changed_work_orders
        refetched = await dv.read_bookings_for_work_orders(changes.changed_work_orders, NOW - timedelta(days=7), NOW + timedelta(days=14))
        assert {x.id for x in refetched.bookings} == {c, d}
        assert all(x.work_order.address.city == "Tacoma" for x in refetched.bookings)
        again = await dv.read_changes(changes.delta_links)
        assert not (again.changed_bookings or again.deleted_bookings or again.changed_work_orders)


async def test_r_t4_a_quiet_delta_read_answered_with_an_empty_json_object_keeps_its_delta_link(tenant):
    """Learn, "Use change tracking to synchronize data with external systems": "An empty JSON response is returned if
    no table changes have occurred after the initial change tracking request was called." No new delta link comes with
    it: the one asked with still holds, for the feeds read alone and in the cycle's batch. (6c040fe: KeyError.)"""
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    a = seed.booking(tech, NOW + timedelta(days=1))
    async with client(tenant) as dv:
        start = await dv.read_changes(None)
        quiet = await dv.read_changes(start.delta_links)
        assert quiet.delta_links == start.delta_links and not quiet.changed_bookings
        changes, _ = await dv.read_cycle(quiet.delta_links, None, NOW)
        assert changes.delta_links == start.delta_links
        seed.update("bookableresourcebookings", a, {"starttime": "2026-12-01T08:00:00Z"})
        moved, _ = await dv.read_cycle(changes.delta_links, None, NOW)
        assert moved.changed_bookings == {a} and moved.delta_links["bookableresourcebookings"] != start.delta_links["bookableresourcebookings"]


async def test_r_t4_a_cycles_change_feeds_come_in_pages_as_large_as_dataverse_gives(tenant):
    """Change-feed rows hold ids only, so read_cycle asks for 5,000-row pages, as starting to track does, whatever
    the page size of booking reads: more changes than one booking page still come in the cycle's one request."""
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    ids = {seed.booking(tech, NOW + timedelta(days=1, hours=h)) for h in range(5)}
    async with client(tenant, page_size=2) as dv:
        start = await dv.read_changes(None)
        for booking_id in ids:
            seed.update("bookableresourcebookings", booking_id, {"starttime": (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")})
        before = dv.requests
        changes, _ = await dv.read_cycle(start.delta_links, None, NOW)
        assert changes.changed_bookings == ids and dv.requests - before == 1


async def test_r_t4_expired_token_then_full_read_gives_the_same_bookings(tenant):
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    ids = {seed.booking(tech, NOW + timedelta(days=d)) for d in range(3)}
    async with client(tenant) as dv:
        start = await dv.read_changes(None)
        new = seed.booking(tech, NOW + timedelta(days=5))
        changes = await dv.read_changes(start.delta_links)
        via_delta = ids | changes.changed_bookings
        tenant.control("POST", "/orgs/default/expire-change-tracking")
        with pytest.raises(ChangeTokenExpired):
            await dv.read_changes(changes.delta_links)
        full = await dv.read_window(NOW - timedelta(days=7), NOW + timedelta(days=14))
    assert {b.id for b in full.bookings} == via_delta and new in via_delta


async def test_r_e1_429_with_retry_after_is_waited_then_succeeds(tenant):
    DvSeed(tenant)
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse", "action": "status", "status": 429, "retry_after": 2, "times": 1,
                                                  "code": "0x80072322"}]})
    async with client(tenant) as dv:
        started = time.monotonic()
        result = await dv.read_bookings([DvSeed.new_id()])                 # one request
        waited = time.monotonic() - started
    assert result.bookings == [] and waited >= 2.0
    assert tenant.control("GET", "/stats")["services"]["dataverse"]["by_status"] == {"429": 1, "200": 1}


async def test_r_e1_5xx_is_retried_a_bounded_number_of_times_then_transient(tenant):
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse", "action": "status", "status": 503}]})
    async with client(tenant, retry_total=2, retry_backoff_max=0.2) as dv:
        with pytest.raises(TransientError) as err:
            await dv.read_bookings([DvSeed.new_id()])                      # one request, tried 3 times
    assert "503" in str(err.value)
    assert tenant.control("GET", "/stats")["services"]["dataverse"]["by_status"] == {"503": 3}


async def test_credential_failure_is_a_clear_error_naming_the_environment(tenant):
    class Broken:
        async def get_token(self, *scopes, **kw):
            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")

        async def close(self):
            pass

    async with DataverseClient(tenant.emulator_url + "/orgs/default", Broken()) as dv:
        with pytest.raises(PermanentError) as err:
            await dv.read_window(NOW, NOW + timedelta(days=1))
    assert tenant.emulator_url + "/orgs/default" in str(err.value) and err.value.code == "auth_failed"


async def test_dev_credential_refuses_non_loopback_hosts():
    with pytest.raises(ClientAuthenticationError):
        await LoopbackDevCredential().get_token("https://contoso.crm.dynamics.com/.default")
    assert (await LoopbackDevCredential().get_token("http://127.0.0.1:5000/.default")).token


async def test_r_e2_concurrency_follows_dop_hint(tenant):
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    ids = [seed.booking(tech, NOW + timedelta(hours=h)) for h in range(600)]
    tenant.control("PUT", "/orgs/default/limits", {"dop_hint": 3})
    tenant.control("PUT", "/faults", {"latency_ms": {"dataverse": 50}})
    async with client(tenant) as dv:
        await dv.read_bookings([ids[0]])                     # one request, before the hint is known: learns it
        tenant.control("DELETE", "/log")
        result = await dv.read_bookings(ids)
    assert len(result.bookings) == 600
    reads = tenant.control("GET", "/log?service=dataverse")["value"]
    assert len(reads) == 5                                   # 125 ids a request: more requests than the hint allows at once
    assert tenant.control("GET", "/stats")["max_concurrency_dataverse"] <= 3


async def test_reads_by_id_fill_urls_well_under_the_documented_32_kb(tenant):
    """125 ids a request (the emulator refuses URLs over 32 KB, as Learn documents): few round trips, no refusal."""
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    ids = [seed.booking(tech, NOW + timedelta(hours=h)) for h in range(250)]
    tenant.control("DELETE", "/log")
    async with client(tenant) as dv:
        result = await dv.read_bookings(ids)
        around = await dv.read_bookings_for_work_orders([DvSeed.new_id() for _ in range(250)], NOW - timedelta(days=7), NOW + timedelta(days=14))
    assert len(result.bookings) == 250 and around.bookings == []
    reads = tenant.control("GET", "/log?service=dataverse")["value"]
    assert len(reads) == 4 and all(r["status"] == 200 for r in reads)
    assert max(len(r["path"]) + len(r["query"]) for r in reads) < 16_000


def test_r_e3_malformed_rows_become_skipped_items_with_reasons():
    good = {"bookableresourcebookingid": DvSeed.new_id(), "starttime": "2026-11-24T09:00:00Z", "endtime": "2026-11-24T10:00:00Z",
            "statecode": 0, "BookingStatus": {"status": 2, "msdyn_fieldservicestatus": 690970000}}
    env = "https://contoso.crm.dynamics.com"
    assert not isinstance(booking_from_row(good, env), SkippedRow)
    cases = {"malformed_id": {"bookableresourcebookingid": "1' or '1'='1"}, "missing_start": {"starttime": None},
             "end_before_start": {"endtime": "2026-11-24T08:00:00Z"}, "unknown_status": {"BookingStatus": {"status": 9}},
             "oversized_text": {"name": "x" * 70_000},
             "invalid_mailbox_address": {"Resource": {"resourcetype": 3, "UserId": {"internalemailaddress": "<a>@b.c"}}}}
    for reason, change in cases.items():
        mapped = booking_from_row({**good, **change}, env)
        assert isinstance(mapped, SkippedRow) and mapped.reason == reason, reason


def test_mapping_reads_documented_annotation_conventions():
    doc = json.loads((shared_reference() / "dataverse/examples/select.2-formatted-values.json").read_text())
    documented = doc["response"]["body"]["value"][0]
    # The documented form is <lookup property>@OData.Community.Display.V1.FormattedValue; build a work order the same way.
    suffix = next(k for k in documented if k.startswith("_primarycontactid_value@")).split("@", 1)[1]
    row = {"bookableresourcebookingid": DvSeed.new_id(), "starttime": "2026-11-24T09:00:00Z", "endtime": "2026-11-24T10:00:00Z",
           "statecode": 0, "BookingStatus": {"status": 2}, "_msdyn_workorder_value": "x",
           "msdyn_workorder": {"msdyn_name": "00001", "_msdyn_priority_value": "p", f"_msdyn_priority_value@{suffix}": "Urgent"}}
    assert booking_from_row(row, "https://x.crm.dynamics.com").work_order.priority == "Urgent"


def test_ids_are_checked_before_entering_a_url():
    with pytest.raises(ValueError):
        checked_guid("00000000-0000-0000-0000-000000000000') or true or ('")
    assert checked_guid("0A0B0C0D-0000-0000-0000-000000000000") == "0a0b0c0d-0000-0000-0000-000000000000"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_filter_literal_is_well_formed_and_round_trips(value):
    literal = filter_literal(value)
    assert all(ch not in literal for ch in " &#?'()")  # nothing in it can end the query option or the literal
    tokens = odata.tokenize(unquote(literal))
    assert len(tokens) == 1 and tokens[0].kind == "literal" and tokens[0].value == value
