"""M8: Exchange applies a change of the app's RBAC for Applications scope after 30 minutes to 2 hours (Exchange,
"Role Based Access Control for Applications", Limitations: "Changes to app permissions are subject to cache
maintenance that varies between 30 minutes and 2 hours"). The emulator now delays a scope change likewise (here by
a second and a half). An administrator who grants the scope and tests at once gets access denied, told why and what
to check, and the following cycles test the mailbox again until it passes, then sync it. (6c040fe: the mailbox
stayed in Failure until someone tested it again by hand, and the reason said nothing of the delay.)"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sync.admin.mailboxes import MailboxAdmin
from sync.app.clients import Clients
from sync.local.cycle import run_cycle
from tests.dvseed import DvSeed
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
TECH = "newhire@contoso.example"
NOW = datetime.now(UTC).replace(microsecond=0)


async def test_r_m8_a_mailbox_refused_while_exchange_applies_its_scope_is_tested_again_by_the_cycles(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    tech = seed.technician(TECH, "New Hire", in_scope=False)
    seed.booking(tech, NOW + timedelta(days=1))
    tenant.control("PATCH", f"/mailboxes/{TECH}", {"in_scope": True, "scope_delay_s": 1.5})    # the grant script just ran
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        admin = MailboxAdmin(clients.store.mailboxes, clients.calendar)
        await admin.register(TECH, settings.environments[0], approved=True)
        [report] = await admin.test_and_enable([TECH], datetime.now(UTC))
        record = await clients.store.mailboxes.get(TECH)
    assert (report.ok, report.reason) == (False, "access_denied")
    assert "30 minutes to 2 hours" in report.message and "Test-ServicePrincipalAuthorization" in report.message
    assert record.mailbox.test_status.value == "failure" and record.retest_until

    first = await run_cycle(settings)                                     # still within the delay: refused again
    assert first["retested"] == {"tested": 1, "succeeded": 0}
    async with Clients(settings) as clients:
        assert (await clients.store.mailboxes.get(TECH)).retest_until == record.retest_until   # not extended by a retest
    await asyncio.sleep(1.6)
    second = await run_cycle(settings)                                    # Exchange has applied it: the retest passes
    assert second["retested"] == {"tested": 1, "succeeded": 1}
    third = await run_cycle(settings)                                     # enabled, its window read: the booking syncs
    assert third["totals"].get("created") == 1 and "retested" not in third
    async with Clients(settings) as clients:
        after = await clients.store.mailboxes.get(TECH)
    assert after.mailbox.test_status.value == "success" and after.retest_until == ""


async def test_r_m8_a_mailbox_still_refused_after_two_hours_is_left_in_failure(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    DvSeed(tenant).technician(TECH, "New Hire", in_scope=False)
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        admin = MailboxAdmin(clients.store.mailboxes, clients.calendar)
        await admin.register(TECH, settings.environments[0], approved=True)
        await admin.test_and_enable([TECH], datetime.now(UTC) - timedelta(hours=2, minutes=1))   # refused two hours ago
    summary = await run_cycle(settings)
    assert "retested" not in summary
