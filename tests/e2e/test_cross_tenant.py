"""Mailboxes in two Microsoft Entra tenants on the local stack, with no secret anywhere: the home tenant's through
the managed identity, the subcontractor's through the cross-tenant app's federated credential (the emulator's
token endpoint stands in for Entra ID). Test & enable, a full cycle, updates, deletes and a webhook change reach
both; revoking consent in one tenant fails its mailboxes alone (M6) with the reason, and restoring it resumes
without duplicates."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from devtenant.demo import PARTNER_DOMAIN, PARTNER_TENANT, partner_settings
from sync.admin.diagnose import diagnose
from sync.admin.dispatch import mailbox_action
from sync.admin.mailboxes import AdminError, MailboxAdmin
from sync.app.clients import Clients
from sync.core.render import TAG_BOOKING
from sync.local.cycle import run_cycle
from sync.local.webhook_host import LocalWebhookHost
from tests.stack_helpers import enable_all_mailboxes, stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
KEY = "local-function-key"


def tagged(tenant, address: str) -> dict[str, dict]:
    """The service's events in a mailbox, by booking id (a Counter of booking ids would show a duplicate)."""
    out: dict[str, dict] = {}
    for event in tenant.control("GET", f"/mailboxes/{address}/events")["value"]:
        booking = next((p["value"] for p in event.get("singleValueExtendedProperties", []) if p["id"] == TAG_BOOKING), None)
        if booking:
            assert booking not in out, f"duplicate event for booking {booking} in {address}"
            out[booking] = event
    return out


def future(events: dict[str, dict]) -> str:
    return next(b for b, e in sorted(events.items(), key=lambda kv: kv[1]["start"]["dateTime"])
                if datetime.fromisoformat(e["start"]["dateTime"][:19]).replace(tzinfo=UTC) > NOW + timedelta(days=1))


def move(tenant, booking: str, days: int) -> str:
    row = next(r for r in tenant.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
               if r["bookableresourcebookingid"] == booking)
    start = datetime.fromisoformat(row["starttime"].replace("Z", "+00:00")) + timedelta(days=days)
    end = datetime.fromisoformat(row["endtime"].replace("Z", "+00:00")) + timedelta(days=days)
    tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{booking}",
                   {"starttime": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "endtime": end.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return start.strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def two_tenants(tenant, table_prefix, monkeypatch):
    summary = tenant.control("POST", "/demo", {"technicians": 8, "bookings": 120, "now": NOW.isoformat(),
                                               "partner": {"tenant": PARTNER_TENANT, "domain": PARTNER_DOMAIN, "technicians": 3}})
    settings = stack_settings(tenant, table_prefix, monkeypatch, **partner_settings())
    partner = summary["edge_cases"]["partner_mailboxes"]
    home = [a for a in summary["mailboxes"] if a not in partner and "outside" not in a]
    return settings, home, partner


async def test_r_m2_m6_two_tenants_sync_and_one_tenants_revoked_consent_fails_its_mailboxes_alone(tenant, two_tenants):
    settings, home, partner = two_tenants
    reports = await enable_all_mailboxes(settings)
    assert all(reports[a].ok for a in home + partner), {a: reports[a].reason for a in home + partner}
    tokens = [e for e in tenant.control("GET", "/log")["value"] if e["service"] == "entra"]
    assert tokens and all(e["path"].startswith(f"/{PARTNER_TENANT}/") and e["status"] == 200 for e in tokens)
    assert all(e["body"]["client_assertion"] == "<redacted>" and "client_secret" not in e["body"] for e in tokens)

    first = await run_cycle(settings)
    assert first["outcome"] == "succeeded"
    assert all(tagged(tenant, a) for a in partner) and all(tagged(tenant, a) for a in home[:3])

    # Updates and deletes reach the second tenant like the first.
    moved = future(tagged(tenant, partner[0]))
    new_start = move(tenant, moved, 1)
    gone = future(tagged(tenant, partner[1]))
    tenant.control("DELETE", f"/orgs/default/tables/bookableresourcebookings/{gone}")
    await run_cycle(settings)
    assert tagged(tenant, partner[0])[moved]["start"]["dateTime"].startswith(new_start)
    assert gone not in tagged(tenant, partner[1])

    # A webhook change reaches it within seconds, without a timer cycle.
    host = LocalWebhookHost(settings, KEY)
    url = await host.start()
    try:
        tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}"})
        hooked = future(tagged(tenant, partner[2]))
        hooked_start = move(tenant, hooked, 2)
        deadline = time.monotonic() + 15
        while not tagged(tenant, partner[2])[hooked]["start"]["dateTime"].startswith(hooked_start):
            assert time.monotonic() < deadline, "the webhook change did not reach the second tenant's mailbox"
            await asyncio.sleep(0.1)
    finally:
        await host.stop()

    # The subcontractor's admin revokes consent: its mailboxes fail with the reason; the home tenant keeps syncing.
    tenant.control("PATCH", f"/tenants/{PARTNER_TENANT}", {"consented": False})
    partner_change, home_change = future(tagged(tenant, partner[0])), future(tagged(tenant, home[0]))
    partner_start = move(tenant, partner_change, 1)
    home_start = move(tenant, home_change, 1)
    during = await run_cycle(settings)
    rows = {r["mailbox"]: r for r in during["mailboxes"]}
    assert rows[partner[0]]["outcome"] == "failed" and "tenant_consent_missing" in (rows[partner[0]].get("error") or "")
    assert tagged(tenant, home[0])[home_change]["start"]["dateTime"].startswith(home_start)
    async with Clients(settings) as rt:
        listing = {r["mailbox"]: r for r in (await mailbox_action(rt, settings.environments, "list", [], True, None, NOW))["mailboxes"]}
        diagnosis = await diagnose(partner_change, rt.source(settings.environments[0]), rt.store, settings.sync, NOW)
    assert listing[partner[0]]["tenant"] == PARTNER_TENANT and listing[partner[0]]["test"] == "failure"
    assert listing[partner[0]]["reason"].startswith("tenant_consent_missing") and listing[partner[0]]["enabled"] == "no"
    assert listing[home[0]]["tenant"] == "home" and listing[home[0]]["enabled"] == "yes"
    assert not diagnosis.in_outlook and diagnosis.code == "mailbox_test_failed" and "tenant_consent_missing" in diagnosis.sentence
    retest = await enable_all_mailboxes(settings)
    assert retest[partner[1]].reason == "tenant_consent_missing" and retest[home[0]].ok

    # Consent restored and the mailboxes tested again: the waiting change lands, nothing is doubled.
    tenant.control("PATCH", f"/tenants/{PARTNER_TENANT}", {"consented": True})
    restored = await enable_all_mailboxes(settings)
    assert all(restored[a].ok for a in partner)
    after = await run_cycle(settings)
    assert after["outcome"] == "succeeded"
    assert tagged(tenant, partner[0])[partner_change]["start"]["dateTime"].startswith(partner_start)
    for address in partner + home:
        tagged(tenant, address)                                   # asserts one event per booking
    assert Counter(r["outcome"] for r in (await run_cycle(settings))["mailboxes"]).get("failed", 0) == 0


async def test_a_mailbox_whose_domain_is_in_no_tenant_is_refused_at_registration(tenant, two_tenants):
    settings, home, partner = two_tenants
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar, tenants=rt.tenants)
        with pytest.raises(AdminError, match=r"tenant_not_mapped: the mailbox.s domain elsewhere\.example is in no tenant"):
            await admin.register("tech@elsewhere.example", settings.environments[0])
        assert await rt.store.mailboxes.get("tech@elsewhere.example") is None
        await admin.register(partner[0], settings.environments[0])     # a mapped domain registers as before


async def test_a_token_of_one_tenant_is_refused_for_another_tenants_mailbox(tenant, two_tenants):
    """Routing is the product's job; the emulator holds it to it (the answer for a wrong tenant is a documented guess)."""
    import httpx
    settings, home, partner = two_tenants
    async with httpx.AsyncClient() as http:
        wrong = await http.get(f"{settings.graph_base_url}/users/{partner[0]}/calendar", headers={"Authorization": "Bearer devtenant:x"})
        token = (await http.post(f"{tenant.emulator_url}/_entra/{PARTNER_TENANT}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": partner_settings()["CROSS_TENANT_APP_CLIENT_ID"], "scope": "x",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "devtenant:api://AzureADTokenExchange/.default"})).json()["access_token"]
        right = await http.get(f"{settings.graph_base_url}/users/{partner[0]}/calendar", headers={"Authorization": f"Bearer {token}"})
        other = await http.get(f"{settings.graph_base_url}/users/{home[0]}/calendar", headers={"Authorization": f"Bearer {token}"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert right.status_code == 200 and other.status_code == 401
