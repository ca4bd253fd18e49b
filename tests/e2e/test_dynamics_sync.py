"""M7: a technician whose Dynamics mailbox already synchronizes appointments, contacts and tasks through server-side
synchronization receives Field Service bookings from Dynamics itself ("bookings from Field Service start
synchronizing automatically"). Enabling that mailbox here too would put every booking in the calendar twice: the
test refuses it with that reason unless the administrator confirms, the preflight counts such mailboxes, and
diagnose names the cause. The emulator's `mailboxes` table carries the columns of Learn's "Mailbox table/entity
reference" (actdeliverymethod 1: Server-Side Synchronization; actstatus 1: Success). (6c040fe: enabled, no warning.)"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from sync.admin.diagnose import diagnose
from sync.admin.preflight import preflight
from sync.app.clients import Clients
from sync.local.cycle import run_cycle
from tests.conftest import REPO
from tests.dvseed import DvSeed
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
TECH, OTHER = "synced.by.dynamics@contoso.example", "plain@contoso.example"
NOW = datetime.now(UTC).replace(microsecond=0)


def _cli(tenant, table_prefix, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    return subprocess.run([sys.executable, "-m", "sync", "--json", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def test_r_m7_a_mailbox_dynamics_already_syncs_is_refused_unless_confirmed(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    booking = seed.booking(seed.technician(TECH, "Synced"), NOW + timedelta(days=1))
    seed.booking(seed.technician(OTHER, "Plain"), NOW + timedelta(days=1))
    seed.add("mailboxes", {"name": "Synced", "emailaddress": TECH, "actdeliverymethod": 1, "actstatus": 1, "enabledforact": True})
    seed.add("mailboxes", {"name": "Plain", "emailaddress": OTHER, "actdeliverymethod": 2, "actstatus": 0, "enabledforact": True})
    for action in ("discover", "approve --all", "test --all"):
        ran = _cli(tenant, table_prefix, "mailboxes", *action.split())
    results = {r["mailbox"]: r for r in __import__("json").loads(ran.stdout)["results"]}
    assert results[TECH]["result"] == "failure" and results[TECH]["reason"] == "dynamics_sync" and "twice" in results[TECH]["message"]
    assert results[OTHER]["result"] == "success"
    summary = await run_cycle(settings)
    outcomes = {r["mailbox"]: r["outcome"] for r in summary["mailboxes"]}
    assert outcomes[OTHER] == "synced" and outcomes.get(TECH, "skipped") == "skipped"
    assert tenant.control("GET", f"/mailboxes/{TECH}/events")["value"] == []       # nothing written to its calendar
    async with Clients(settings) as clients:
        found = await diagnose(booking, clients.source(settings.environments[0]), clients.store, settings.sync, NOW)
        checked = await preflight(clients, settings.environments, NOW)
    assert "dynamics_sync" in found.sentence
    dynamics = next(c for c in checked["checks"] if c["check"].startswith("dynamics sync"))
    assert dynamics["status"] == "warn" and dynamics["found"] == {"served_by_dynamics": 1, "registered_here": 1}
    confirmed = _cli(tenant, table_prefix, "mailboxes", "test", TECH, "--confirm-dynamics-sync")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert (await run_cycle(settings))["totals"].get("created") == 1
