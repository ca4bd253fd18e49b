"""Leases when hosts die (T1, T2): one cycle at a time whatever its length, and no mailbox held hostage by a
sync that crashed. On the local stack: Azurite holds the leases, the emulator slows the services down."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

import sync.local.cycle as local_cycle
from sync.admin.mailboxes import MailboxAdmin
from sync.app.activities import MAILBOX_LEASE_S, Activities
from sync.app.clients import Clients
from sync.core.pseudonym import mailbox_ref
from tests.conftest import REPO
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)
TECH = "tech@contoso.example"


@pytest.fixture
async def settings(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    tech = seed.technician(TECH)
    for h in range(3):
        seed.booking(tech, NOW + timedelta(days=1, hours=h))
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register(TECH, settings.environments[0], approved=True)
        await admin.test_and_enable([TECH], NOW)
    return settings


async def test_r_t1_one_cycle_at_a_time_even_when_a_cycle_outlasts_its_lease_ttl_many_times(tenant, settings, monkeypatch):
    monkeypatch.setattr(local_cycle, "LEASE_TTL_S", 0.6)                   # renewed every 0.2 s
    tenant.control("PUT", "/faults", {"latency_ms": {"dataverse": 1500}})  # the cycle takes several seconds: many TTLs
    async with Clients(settings) as rt:
        first = asyncio.create_task(local_cycle.run_cycle_once(rt.store.leases, settings))
        refused = 0
        started = time.monotonic()
        while not first.done():
            await asyncio.sleep(0.5)
            if first.done():
                break
            with pytest.raises(local_cycle.CycleRunning):
                await local_cycle.run_cycle_once(rt.store.leases, settings)
            refused += 1
        summary = await first
        elapsed = time.monotonic() - started
    assert elapsed > 5 * 0.6 and refused >= 4, (elapsed, refused)
    assert summary["totals"].get("created") == 3
    tenant.control("DELETE", "/faults")
    async with Clients(settings) as rt:                                     # released at the end: the next one runs
        assert (await local_cycle.run_cycle_once(rt.store.leases, settings))["outcomes"] == {}


async def test_r_t2_a_rerun_of_the_same_activity_takes_over_the_lease_its_crashed_attempt_left(tenant, settings):
    activities = Activities(lambda: settings)
    try:
        rt = await activities.clients()
        ref = mailbox_ref(await rt.store.config.telemetry_key(), TECH)
        holder = f"fieldservice-outlook-sync-cycle:{ref}"
        seen = (await rt.store.partitions.load(TECH)).lease
        assert await rt.store.partitions.claim(TECH, holder, datetime.now(UTC), MAILBOX_LEASE_S, seen)   # the first attempt died
        stranger = await activities.sync_mailbox({"mailbox": TECH, "now": NOW.isoformat(), "lease_holder": "someone-else"})
        assert stranger["outcome"] == "busy" and stranger["retryable"]
        rerun = await local_cycle.run_cycle(settings)          # the same orchestration's call: takes the lease over at once
        assert [(r["outcome"], r["counts"].get("created")) for r in rerun["mailboxes"]] == [("synced", 3)]
    finally:
        await activities.close()


async def mailbox_lease_held(settings, address: str) -> bool:
    async with Clients(settings) as rt:
        lease = (await rt.store.partitions.load(address)).lease
        return lease is not None and lease.held_by_other("a-later-sync", datetime.now(UTC))   # held, and not expired


def test_r_t2_a_killed_sync_holds_its_mailbox_for_less_than_a_minute(tenant, settings):
    """SIGKILL a `python -m sync run` in the middle of its Graph writes, then run cycles until that mailbox syncs."""
    env = {**os.environ, **tenant.environment(), "STATE_TABLE_PREFIX": settings.table_prefix}
    seed = DvSeed(tenant)
    tech = seed.technician("busy@contoso.example")
    for h in range(40):
        seed.booking(tech, NOW + timedelta(days=2, hours=h))
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "action": "latency", "delay_ms": 3000, "times": 100}]})
    victim = subprocess.Popen([sys.executable, "-m", "sync", "mailboxes", "register", "busy@contoso.example"], cwd=REPO, env=env)
    victim.wait(timeout=60)
    for action in ("approve", "test"):
        subprocess.run([sys.executable, "-m", "sync", "mailboxes", action, "busy@contoso.example"], cwd=REPO, env=env, timeout=120,
                       capture_output=True)
    victim = subprocess.Popen([sys.executable, "-m", "sync", "run"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not asyncio.run(mailbox_lease_held(settings, "busy@contoso.example")):   # its mailbox sync is under way
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)                                                         # in the middle of its (slowed) Graph writes
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    crashed = time.monotonic()
    tenant.control("DELETE", "/faults")
    while True:
        ran = subprocess.run([sys.executable, "-m", "sync", "--json", "run"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=120)
        if ran.returncode == 0 and '"busy@contoso.example"' in ran.stdout and '"outcome": "synced"' in ran.stdout:
            break
        assert time.monotonic() - crashed < 90, ran.stdout[-2000:] + ran.stderr[-2000:]
        time.sleep(2)
    recovered = time.monotonic() - crashed
    print(f"crash to next successful sync of the mailbox: {recovered:.1f} s")
    assert recovered < 60
    events = tenant.control("GET", "/mailboxes/busy@contoso.example/events")["value"]
    assert len(events) == 40 and len({e["start"]["dateTime"] for e in events}) == 40       # none lost, none twice
    assert iso


async def test_r_m6_a_mailbox_row_that_does_not_read_is_left_out_and_the_others_sync(tenant, settings):
    """The cycle's listing of the mailbox rows serves every activity; one row an operator broke by hand (an unknown
    test status) must not stop the others, and is never synced on a guess."""
    from sync.adapters.tables import key
    async with Clients(settings) as rt:
        await rt.store.access.table("mailboxes").create_entity({"PartitionKey": "mailbox", "RowKey": key("broken@contoso.example"),
                                                         "address": "broken@contoso.example", "test_status": "half-tested",
                                                         "pending_mark": "x"})
    summary = await local_cycle.run_cycle(settings)
    assert [(r["outcome"], r["counts"].get("created")) for r in summary["mailboxes"] if r["mailbox"] == TECH] == [("synced", 3)]
