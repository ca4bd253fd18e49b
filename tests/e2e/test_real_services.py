"""The product against the emulator's documented (strict) behaviour of Dataverse and Graph: what a real tenant
answers, and what the sync makes of it (see docs/emulator-fidelity.md)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.admin.mailboxes import MailboxAdmin
from sync.app.clients import Clients
from sync.local.cycle import run_cycle
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)
TECH = "tech@contoso.example"


@pytest.fixture
async def org(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    tech = seed.technician(TECH)
    bookings = [seed.booking(tech, NOW + timedelta(days=1, hours=h)) for h in range(3)]
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register(TECH, settings.environments[0], approved=True)
        await admin.test_and_enable([TECH], NOW)
    first = await run_cycle(settings)
    assert first["outcome"] == "succeeded" and first["totals"]["created"] == 3
    return settings, seed, bookings


def starts(tenant) -> list[str]:
    return sorted(e["start"]["dateTime"][:16] for e in tenant.control("GET", f"/mailboxes/{TECH}/events")["value"])


async def test_r_t4_an_expired_change_token_inside_the_quiet_cycle_batch_falls_back_to_a_full_read(tenant, org):
    settings, seed, bookings = org
    tenant.control("POST", "/orgs/default/expire-change-tracking")
    moved = NOW + timedelta(days=4)
    seed.update("bookableresourcebookings", bookings[0], {"starttime": iso(moved), "endtime": iso(moved + timedelta(hours=1))})
    summary = await run_cycle(settings)
    assert summary["outcome"] == "succeeded" and summary["environments"][0]["mode"] == "full"
    assert moved.strftime("%Y-%m-%dT%H:%M") in starts(tenant)
    assert (await run_cycle(settings))["environments"][0]["mode"] == "delta"                # tracking again


@pytest.mark.parametrize("status", [429, 503])
async def test_r_e1_a_throttled_part_of_the_batch_is_sent_again_alone(tenant, org, status):
    settings, seed, bookings = org
    moved = NOW + timedelta(days=5)
    seed.update("bookableresourcebookings", bookings[1], {"starttime": iso(moved), "endtime": iso(moved + timedelta(hours=1))})
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse-item", "path": "bookableresourcebookings", "action": "status",
                                                 "status": status, "times": 1}]})
    summary = await run_cycle(settings)
    assert summary["outcome"] == "succeeded" and summary["environments"][0]["mode"] == "delta"
    assert moved.strftime("%Y-%m-%dT%H:%M") in starts(tenant)


async def test_an_environment_that_cannot_be_collected_is_a_failed_cycle(tenant, org, table_prefix):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    settings, _, _ = org
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse-item", "path": "msdyn_workorders", "action": "status",
                                                 "status": 404, "code": "0x80060888"}]})    # a table the app user cannot see
    summary = await run_cycle(settings)
    assert summary["outcome"] == "failed" and summary["environments"][0]["error"]
    env = {**os.environ, **tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    ran = subprocess.run([sys.executable, "-m", "sync", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1 and "environment not collected" in ran.stdout
    runs = subprocess.run([sys.executable, "-m", "sync", "--json", "runs", "--limit", "1"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert json.loads(runs.stdout)[0]["outcome"] == "failed"


@pytest.mark.parametrize("answer", ["400", "409", "201"])
async def test_r_c1_a_create_whose_answer_was_lost_is_linked_once_whatever_graph_answers_the_repeat(tenant, org, answer):
    """Graph applies a create and the connection drops; the retry repeats the transactionId. Whether Graph answers
    400 ErrorDuplicateTransactionId, 409 or 201 with the event, the event is linked, never orphaned, never doubled."""
    settings, seed, _ = org
    tenant.control("PUT", "/graph/limits", {"duplicate_transaction": answer})
    fresh = seed.booking(seed.technician("new@contoso.example"), NOW + timedelta(days=2))
    async with Clients(settings) as rt:
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register("new@contoso.example", settings.environments[0], approved=True)
        await admin.test_and_enable(["new@contoso.example"], NOW)
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "path": r"/\$batch", "action": "drop_after_apply", "times": 1}]})
    summary = await run_cycle(settings)
    (row,) = [r for r in summary["mailboxes"] if r["mailbox"] == "new@contoso.example"]
    assert row["outcome"] == "synced" and row["counts"].get("created") == 1, row
    events = tenant.control("GET", "/mailboxes/new@contoso.example/events")["value"]
    async with Clients(settings) as rt:
        link = (await rt.store.partitions.links("new@contoso.example"))[fresh]
    assert len(events) == 1 and (link.state.value, link.event_id) == ("linked", events[0]["id"])
    assert (await run_cycle(settings))["totals"] == {}                                   # C4: nothing left to do
