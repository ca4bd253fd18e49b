"""Mailbox administration and troubleshooting on the local stack (M1-M6, S5, G1, G2), and the CLI's real
entry point."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sync.admin.diagnose import diagnose
from sync.admin.mailboxes import AdminError, MailboxAdmin
from sync.app.clients import Clients
from sync.app.settings import load
from sync.core.domain import SyncFilter
from sync.core.explain import CODES
from sync.local.cycle import run_cycle
from tests.conftest import REPO
from tests.dvseed import DvSeed

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(tenant, table_prefix, monkeypatch):
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    return load()


async def test_r_g1_every_reason_code_on_the_local_stack(tenant, settings):
    seed = DvSeed(tenant)
    env = settings.environments[0]
    soon = NOW + timedelta(days=1)
    people = {name: seed.technician(f"{name}@contoso.example", name.title()) for name in
              ["healthy", "unapproved", "untested", "failing", "sync_off", "method_none", "bound", "filtered", "broken"]}
    people["unregistered"] = seed.technician("unregistered@contoso.example", "Unregistered")
    tenant.control("PATCH", "/mailboxes/failing@contoso.example", {"in_scope": False, "scope_delay_s": 0})   # at once
    crew = seed.technician(None, "Crew", resourcetype=6)
    nomail = seed.technician(None, "No Mail")
    ids = {
        "malformed_booking": seed.booking(people["healthy"], soon, hours=-1),
        "not_tied_to_work_order": seed.booking(people["healthy"], soon, work_order=None),
        "resource_not_user": seed.booking(crew, soon),
        "user_has_no_mailbox_address": seed.booking(nomail, soon),
        "mailbox_not_registered": seed.booking(people["unregistered"], soon),
        "sync_method_none": seed.booking(people["method_none"], soon),
        "mailbox_not_approved": seed.booking(people["unapproved"], soon),
        "mailbox_not_tested": seed.booking(people["untested"], soon),
        "mailbox_test_failed": seed.booking(people["failing"], soon),
        "mailbox_sync_off": seed.booking(people["sync_off"], soon),
        "bound_to_another_environment": seed.booking(people["bound"], soon),
        "outside_window": seed.booking(people["healthy"], NOW + timedelta(days=30)),
        "inactive": seed.booking(people["healthy"], soon, statecode=1),
        "excluded_by_filter": seed.booking(people["filtered"], soon),
        "canceled_not_propagated": seed.booking(people["healthy"], soon, _bookingstatus_value=seed.canceled),
        "last_attempt_failed": seed.booking(people["broken"], soon),
        "synced": seed.booking(people["healthy"], soon + timedelta(hours=3)),
    }
    past = seed.booking(people["healthy"], NOW - timedelta(days=1))
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for name in ["healthy", "unapproved", "untested", "failing", "sync_off", "method_none", "filtered", "broken"]:
            await admin.register(f"{name}@contoso.example", env)
        await admin.register("bound@contoso.example", "https://other.crm.dynamics.com")
        ready = ["healthy", "untested", "failing", "sync_off", "method_none", "bound", "filtered", "broken"]
        await admin.approve([f"{n}@contoso.example" for n in ready])
        await admin.test_and_enable([f"{n}@contoso.example" for n in ready if n != "untested"], NOW)
        await admin.set_enabled("sync_off@contoso.example", False)
        await admin.set_sync_method("method_none@contoso.example", "none")
        await admin.set_filters("filtered@contoso.example", (SyncFilter("south only", territories=frozenset({"South"})),))
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "mailbox": "broken@contoso.example", "action": "status", "status": 400,
                                                  "code": "ErrorInvalidRequest"}]})
    await run_cycle(settings)
    ids["waiting_for_next_cycle"] = seed.booking(people["healthy"], soon + timedelta(hours=6))
    ids["booking_not_found"] = str(uuid.uuid4())
    seed.update("bookableresourcebookings", past, {"_bookingstatus_value": seed.canceled})
    propagating = {"canceled": ids["canceled_not_propagated"], "canceled_event_in_past": past}     # X2
    async with Clients(settings) as rt:
        found = {expected: await diagnose(booking_id, rt.source(env), rt.store, settings.sync, datetime.now(UTC))
                 for expected, booking_id in ids.items()}
        x2 = replace(settings.sync, propagate_cancellations=True)
        found |= {expected: await diagnose(booking_id, rt.source(env), rt.store, x2, datetime.now(UTC))
                  for expected, booking_id in propagating.items()}
    assert set(found) == set(CODES)
    for expected, diagnosis in found.items():
        assert diagnosis.code == expected, (expected, diagnosis)
        assert diagnosis.sentence
    assert "access_denied" in found["mailbox_test_failed"].sentence
    assert "south only" in found["excluded_by_filter"].sentence
    assert "rejected by Graph" in found["last_attempt_failed"].sentence
    assert found["synced"].in_outlook and found["synced"].details["event_id"]
    assert "other.crm.dynamics.com" in found["bound_to_another_environment"].sentence


async def test_r_m4_one_environment_at_a_time_and_move_is_explicit(tenant, settings):
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        tenant.control("POST", "/mailboxes", [{"address": "tech@contoso.example"}])
        await admin.register("tech@contoso.example", settings.environments[0])
        with pytest.raises(AdminError) as err:
            await admin.register("tech@contoso.example", "https://second.crm.dynamics.com")
        assert settings.environments[0].lower() in str(err.value) and "move" in str(err.value)
        await admin.approve(["tech@contoso.example"])
        with pytest.raises(AdminError):
            await admin.test_and_enable(["tech@contoso.example"], NOW, environment="https://second.crm.dynamics.com")
        moved = await admin.move("tech@contoso.example", "https://second.crm.dynamics.com")
        assert moved.environment == "https://second.crm.dynamics.com" and not moved.eligible   # must be tested again
        reports = await admin.test_and_enable(["tech@contoso.example"], NOW, environment="https://second.crm.dynamics.com")
        assert reports[0].ok


async def test_r_m5_turning_sync_off_keeps_everything_and_on_resumes_without_duplicates(tenant, settings):
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    first = seed.booking(tech, NOW + timedelta(days=1))
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register("tech@contoso.example", settings.environments[0], approved=True)
        await admin.test_and_enable(["tech@contoso.example"], NOW)
    await run_cycle(settings)
    async with Clients(settings) as rt:
        await MailboxAdmin(rt.store.mailboxes).set_enabled("tech@contoso.example", False)
    seed.booking(tech, NOW + timedelta(days=2))
    seed.delete("bookableresourcebookings", first)
    await run_cycle(settings)
    events = tenant.control("GET", "/mailboxes/tech@contoso.example/events")["value"]
    assert len(events) == 1                                            # nothing deleted, nothing new
    async with Clients(settings) as rt:
        await MailboxAdmin(rt.store.mailboxes).set_enabled("tech@contoso.example", True)
    await run_cycle(settings)
    events = tenant.control("GET", "/mailboxes/tech@contoso.example/events")["value"]
    assert len(events) == 1 and events[0]["start"]["dateTime"].startswith((NOW + timedelta(days=2)).strftime("%Y-%m-%d"))


async def test_r_m3_bulk_test_and_enable_of_1000_mailboxes(tenant, settings):
    addresses = [f"tech{i:04d}@contoso.example" for i in range(1000)]
    missing = set(addresses[::50])                       # 20 not in Exchange
    outside = set(addresses[7::100])                     # 10 outside the app's access scope
    tenant.control("POST", "/mailboxes", [{"address": a, "in_scope": a not in outside} for a in addresses if a not in missing])
    tenant.control("PUT", "/faults", {"latency_ms": {"graph": 10}})
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for a in addresses:
            await admin.register(a, settings.environments[0], approved=True)
        progress = []
        started = time.monotonic()
        reports = await admin.test_and_enable(addresses, NOW, progress=lambda done, total: progress.append(done))
        seconds = time.monotonic() - started
        rows = {r.address: r for r in await rt.store.mailboxes.all()}
    print(f"\ntest & enable of 1000 mailboxes: {seconds:.1f} s")
    failures = {r.address: r.reason for r in reports if not r.ok}
    assert failures == {**{a: "mailbox_not_found" for a in missing}, **{a: "access_denied" for a in outside}}
    assert all(rows[a].mailbox.test_status.value == "failure" and rows[a].mailbox.test_reason for a in failures)
    assert sum(rows[a].mailbox.test_status.value == "success" for a in addresses) == 970
    assert progress[-1] == 1000 and len(progress) == 1000
    assert tenant.control("GET", "/stats")["max_concurrency_overall_mailbox"] <= 4


def cli(tenant, settings_env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env}
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_real_entry_point(tenant, table_prefix):
    tenant.control("POST", "/demo", {"technicians": 5, "bookings": 60})
    env = {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    assert cli(tenant, env, "mailboxes", "discover").returncode == 0
    assert cli(tenant, env, "mailboxes", "approve", "--all").returncode == 0
    tested = cli(tenant, env, "--json", "mailboxes", "test", "--all")
    assert tested.returncode == 1                                               # two demo mailboxes fail their test
    reasons = {r["reason"] for r in json.loads(tested.stdout)["results"] if r["result"] == "failure"}
    assert reasons == {"mailbox_not_found", "access_denied"}
    ran = cli(tenant, env, "--json", "run")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["totals"]["created"] > 0
    listing = json.loads(cli(tenant, env, "--json", "mailboxes", "list").stdout)["mailboxes"]
    assert {r["test"] for r in listing} == {"success", "failure"} and any(r["written"] for r in listing)
    assert all(re.fullmatch(r"mbx-[0-9a-f]{12}", r["ref"]) for r in listing) and len({r["ref"] for r in listing}) == len(listing)
    added = cli(tenant, env, "filters", "add", "repairs", "--type", "Repair")
    assert added.returncode == 0 and "repairs" in added.stdout
    assert json.loads(cli(tenant, env, "--json", "filters", "list").stdout)["filters"][0]["work_order_types"] == ["Repair"]
    booking_id = tenant.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"][0]["bookableresourcebookingid"]
    diag = cli(tenant, env, "--json", "diagnose", booking_id)
    assert diag.returncode == 0 and json.loads(diag.stdout)["code"]
    assert cli(tenant, env, "diagnose", "not-a-guid").returncode == 2
    assert cli(tenant, env, "mailboxes", "move", "a@b.example").returncode == 2
    bad = cli(tenant, {**env, "SYNC_PROFILE": "turbo"}, "run")
    assert bad.returncode == 2 and "SYNC_PROFILE" in bad.stderr


async def test_r_s5_filters_over_the_shared_admin_operation(tenant, settings):
    from sync.admin.dispatch import InvalidRequest
    from sync.admin.filters import filter_request, filters_action
    seed = DvSeed(tenant)
    seed.add("territories", {"name": "South"})

    async def act(*args, **kw):
        return await filters_action(rt, settings.environments, filter_request(*args, **kw), settings.sync, NOW)

    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        await MailboxAdmin(rt.store.mailboxes).register("tech@contoso.example", settings.environments[0])
        added = await act("add", None, "south", territories=["South"])
        assert added["filters"][0]["territories"] == ["South"]
        await act("add", None, "repairs", work_order_types=["Repair"])
        assert [f.name for f in await rt.store.config.global_filters()] == ["south", "repairs"]
        mine = await act("add", "tech@contoso.example", "mine", booking_statuses=["Scheduled"])
        assert mine["scope"] == "mailbox tech@contoso.example" and len(mine["filters"]) == 1
        with pytest.raises(InvalidRequest):
            await act("add", None, "empty")
        with pytest.raises(AdminError):
            await act("remove", None, "nope")
        with pytest.raises(AdminError):
            await act("list", "unknown@contoso.example")
        removed = await act("remove", None, "south")
        assert [f["name"] for f in removed["filters"]] == ["repairs"]


async def test_cli_plan_is_a_dry_run(tenant, table_prefix, monkeypatch):
    from sync.engine.collect import collect
    tenant.control("POST", "/demo", {"technicians": 3, "bookings": 30})
    env = {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load()
    from tests.stack_helpers import enable_all_mailboxes
    reports = await enable_all_mailboxes(settings)
    address = next(a for a, r in sorted(reports.items()) if r.ok)
    async with Clients(settings) as rt:                                           # observations collected, not yet synced
        await collect(rt.source(settings.environments[0]), rt.store, settings.sync, datetime.now(UTC))
        pending_before = len(await rt.store.partitions.observations(address))
    graph_before = tenant.control("GET", "/stats")["services"].get("graph", {}).get("requests", 0)
    planned = cli(tenant, env, "--json", "plan", address)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["outcome"] == "dry-run" and plan["counts"].get("create", 0) > 0
    assert tenant.control("GET", "/stats")["services"].get("graph", {}).get("requests", 0) == graph_before
    async with Clients(settings) as rt:
        assert len(await rt.store.partitions.observations(address)) == pending_before and await rt.store.partitions.links(address) == {}
    assert cli(tenant, env, "plan", "nobody@contoso.example").returncode == 3


async def test_r_g2_status_listing_shows_what_an_admin_looks_at_first(tenant, settings):
    from sync.admin.dispatch import mailbox_action
    seed = DvSeed(tenant)
    ok = seed.technician("ok@contoso.example")
    seed.technician("denied@contoso.example", in_scope=False)
    seed.booking(ok, NOW + timedelta(days=1))
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for address in ("ok@contoso.example", "denied@contoso.example"):
            await admin.register(address, settings.environments[0], approved=True)
        await admin.test_and_enable(["ok@contoso.example", "denied@contoso.example"], NOW)
    await run_cycle(settings)
    async with Clients(settings) as rt:
        rows = {r["mailbox"]: r for r in (await mailbox_action(rt, settings, "list", [], False, None, NOW))["mailboxes"]}
    good, bad = rows["ok@contoso.example"], rows["denied@contoso.example"]
    assert good["environment"] == settings.environments[0].lower() and good["sync_method"] == "server-side" and good["approved"] == "yes"
    assert good["test"] == "success" and good["last_cycle"] and good["outcome"] == "synced" and good["written"] == 1 and good["last_error"] == ""
    assert bad["test"] == "failure" and bad["reason"].startswith("access_denied") and bad["outcome"] == ""
