"""End to end on the local stack: the demo organisation, Azurite and the emulator, the local Durable runner.

The expected calendars are computed here from the raw Dataverse rows by the contract's rules, not by
the product's planner, so a wrong rule in the product shows as a difference.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.app.settings import load
from sync.core.render import TAG_BOOKING
from sync.local.cycle import run_cycle
from tests.stack_helpers import enable_all_mailboxes

pytestmark = pytest.mark.stack


def expected_calendars(stack, now: datetime) -> dict[str, set[tuple[str, str, str]]]:
    bookings = stack.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
    resources = {r["bookableresourceid"]: r for r in stack.control("GET", "/orgs/default/tables/bookableresources")["value"]}
    users = {r["systemuserid"]: r for r in stack.control("GET", "/orgs/default/tables/systemusers")["value"]}
    statuses = {r["bookingstatusid"]: r for r in stack.control("GET", "/orgs/default/tables/bookingstatuses")["value"]}
    orders = {r["msdyn_workorderid"]: r for r in stack.control("GET", "/orgs/default/tables/msdyn_workorders")["value"]}
    exchange = {m["address"]: m for m in stack.control("GET", "/mailboxes")["value"]}
    low, high = now - timedelta(days=7), now + timedelta(days=14)
    expected: dict[str, set] = {a: set() for a, m in exchange.items() if m["in_scope"] and m["state"] == "enabled"}
    for b in bookings:
        resource = resources.get(b.get("_resource_value"))
        user = users.get((resource or {}).get("_userid_value"))
        address = ((user or {}).get("internalemailaddress") or "").lower()
        status = statuses[b["_bookingstatus_value"]]
        start = datetime.fromisoformat(b["starttime"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(b["endtime"].replace("Z", "+00:00"))
        if not b.get("_msdyn_workorder_value"):                                  # S1
            continue
        if not resource or resource["resourcetype"] != 3 or address not in expected:   # S2, M1/M2
            continue
        if b["statecode"] != 0 or status["status"] == 3 or status.get("msdyn_fieldservicestatus") == 690970005:   # S4, X1
            continue
        if not (start < high and end > low):                                     # S3
            continue
        number = orders[b["_msdyn_workorder_value"]]["msdyn_name"]
        expected[address].add((start.strftime("%Y-%m-%dT%H:%M"), end.strftime("%Y-%m-%dT%H:%M"), number))
    return expected


def actual_calendars(stack, addresses) -> dict[str, set[tuple[str, str, str]]]:
    out = {}
    for address in addresses:
        events = stack.control("GET", f"/mailboxes/{address}/events")["value"]
        tagged = [e for e in events if any(p["id"] == TAG_BOOKING for p in e.get("singleValueExtendedProperties", []))]
        out[address] = {(e["start"]["dateTime"][:16], e["end"]["dateTime"][:16], e["subject"].split(" ")[0]) for e in tagged}
    return out


async def test_demo_org_end_to_end_calendars_match_the_contract_and_second_cycle_writes_nothing(tenant, table_prefix, monkeypatch):
    summary = tenant.control("POST", "/demo", {})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    now = datetime.now(UTC)
    reports = await enable_all_mailboxes(settings)
    assert reports[summary["edge_cases"]["mailbox_access_denied"][0]].reason == "access_denied"
    assert reports[summary["edge_cases"]["mailbox_not_found"][0]].reason == "mailbox_not_found"

    first = await run_cycle(settings)
    expected = expected_calendars(tenant, now)
    assert sum(len(v) for v in expected.values()) > 150
    assert actual_calendars(tenant, expected) == expected
    assert first["outcomes"].get("failed", 0) == 0

    personal = [e for e in tenant.control("GET", f"/mailboxes/{summary['mailboxes'][0]}/events")["value"] if e["subject"] == "Dentist"]
    assert len(personal) == 1                                                    # D4: untouched

    before = tenant.control("GET", "/stats")["services"]["graph"]
    second = await run_cycle(settings)
    after = tenant.control("GET", "/stats")["services"]["graph"]
    # C4: no write. The one mailbox the demo leaves outside the app's Exchange scope is tested again (M8: for two hours
    # after its refusal), two reads in one $batch; nothing else reaches Graph.
    retested = second.get("retested", {}).get("tested", 0)
    assert retested == 1 and second["retested"]["succeeded"] == 0
    assert (after["requests"] - before["requests"], after["operations"] - before["operations"]) == (1, 2 * retested)
    assert second["totals"].get("created", 0) == 0 and not any(v for k, v in second["totals"].items() if k != "skipped")


async def test_demo_edge_cases_follow_the_rules_on_the_next_cycle(tenant, table_prefix, monkeypatch):
    summary = tenant.control("POST", "/demo", {})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    await enable_all_mailboxes(settings)
    await run_cycle(settings)
    cases = summary["edge_cases"]
    booking_id, target = cases["reassigned"][0], cases["reassign_target"][0]
    tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{booking_id}", {"_resource_value": target})
    result = await run_cycle(settings)
    outcomes = {r["mailbox"]: r["counts"] for r in result["mailboxes"]}
    assert any(c.get("unlinked") == 1 for c in outcomes.values())               # C6: logical delete in the old mailbox
    assert any(c.get("created") == 1 for c in outcomes.values())                # and created in the new one
