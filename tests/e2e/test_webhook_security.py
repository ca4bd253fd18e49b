"""T3 and M4 under attack: a webhook message read from the wrong environment, forged or misrouted, never removes
an event of a mailbox bound to another environment, whatever work that mailbox has waiting.

Two environments are served. A technician's mailbox is bound to the second one and has work waiting (disabled,
failing, or held by D5's guard) when an authorised message names its booking with the first environment: that
environment answers 404, which is a delete for the first environment's links only."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sync.admin.mailboxes import MailboxAdmin
from sync.app.clients import Clients
from sync.app.settings import load
from sync.local.cycle import run_cycle
from sync.local.webhook_host import LocalWebhookHost
from tests.dvseed import DvSeed, iso

pytestmark = pytest.mark.stack
KEY = "local-function-key"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TECH = "tess@contoso.example"


def events(tenant, address) -> list[dict]:
    return tenant.control("GET", f"/mailboxes/{address}/events")["value"]


def forged(message: str, booking_id: str) -> bytes:
    return json.dumps({"MessageName": message, "PrimaryEntityName": "bookableresourcebooking", "PrimaryEntityId": booking_id,
                       "CorrelationId": DvSeed.new_id(), "InputParameters": [], "PostEntityImages": []}).encode()


@pytest.fixture
async def two_environments(tenant, table_prefix, monkeypatch):
    first = f"{tenant.emulator_url}/orgs/default"
    second = f"{tenant.emulator_url}/orgs/second"
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix,
                       "DATAVERSE_ENVIRONMENTS": f"{first},{second}"}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    DvSeed(tenant)                                              # the first environment exists, without this booking
    seed = DvSeed(tenant, org="second")
    tech = seed.technician(TECH, "Tess")
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register(TECH, second, approved=True)
        await admin.test_and_enable([TECH], NOW)
    host = LocalWebhookHost(settings, KEY)
    url = await host.start()
    yield settings, seed, tech, host, url, first, second
    await host.stop()


async def _set_enabled(settings, enabled: bool) -> None:
    async with Clients(settings) as rt:
        await MailboxAdmin(rt.store.mailboxes, rt.calendar).set_enabled(TECH, enabled)


async def _retest(settings) -> None:
    async with Clients(settings) as rt:
        await MailboxAdmin(rt.store.mailboxes, rt.calendar).test_and_enable([TECH], NOW)


async def _make_waiting(kind: str, tenant, settings, seed: DvSeed, tech: str, moved: str, others: list[str]) -> None:
    """Leave the mailbox with waiting work that includes `moved`'s new time."""
    if kind == "disabled":
        await _set_enabled(settings, False)
    elif kind == "failing":
        tenant.control("PATCH", f"/mailboxes/{TECH}", {"in_scope": False, "scope_delay_s": 0})     # M6: access denied, at once
    start = NOW + timedelta(days=3, hours=2)
    seed.update("bookableresourcebookings", moved, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    if kind == "held":
        for booking in others:                                # D5: most of the mailbox's bookings gone at once
            seed.delete("bookableresourcebookings", booking)
    await run_cycle(settings)
    async with Clients(settings) as rt:
        assert moved in [p.booking_id for p in await rt.store.partitions.observations(TECH)], "the mailbox has the moved booking waiting"


async def _release(kind: str, tenant, settings) -> dict:
    if kind == "disabled":
        await _set_enabled(settings, True)
    elif kind == "failing":
        tenant.control("PATCH", f"/mailboxes/{TECH}", {"in_scope": True, "scope_delay_s": 0})
        await _retest(settings)
    return await run_cycle(settings, force=kind == "held")


@pytest.mark.parametrize("kind", ["disabled", "failing", "held"])
@pytest.mark.parametrize("message", ["Create", "Update", "Delete"])
async def test_r_t3_m4_a_message_read_from_another_environment_never_removes_a_waiting_mailboxs_event(
        tenant, two_environments, kind, message):
    settings, seed, tech, host, url, first, second = two_environments
    moved = seed.booking(tech, NOW + timedelta(days=1))
    others = [seed.booking(tech, NOW + timedelta(days=2, hours=h)) for h in range(11)] if kind == "held" else []
    await run_cycle(settings)
    assert len(events(tenant, TECH)) == 1 + len(others)
    await _make_waiting(kind, tenant, settings, seed, tech, moved, others)

    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params={"code": KEY, "environment": first}, content=forged(message, moved))
    assert answer.status_code == 202, answer.text
    assert answer.json()["mailboxes"] == 0                    # nothing of the second environment's mailbox is touched
    await host.client.idle()
    async with Clients(settings) as rt:
        waiting = {p.booking_id: p.booking for p in await rt.store.partitions.observations(TECH)}
    assert waiting[moved] is not None, "the waiting observation is still the booking, not a delete"

    await _release(kind, tenant, settings)
    await run_cycle(settings)
    starts = [e["start"]["dateTime"][:16] for e in events(tenant, TECH)]
    assert starts == [(NOW + timedelta(days=3, hours=2)).strftime("%Y-%m-%dT%H:%M")], starts


async def test_r_t3_m4_a_message_naming_no_environment_is_refused_when_several_are_served(tenant, two_environments):
    """Which environment a message came from is never guessed: with two served, a message that names none is a
    400 that says so (Dataverse records the failure on its System Job) and nothing is read or routed."""
    settings, seed, tech, host, url, first, second = two_environments
    booking = seed.booking(tech, NOW + timedelta(days=1))
    await run_cycle(settings)
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params={"code": KEY}, content=forged("Delete", booking))
    assert answer.status_code == 400 and "environment" in answer.json()["error"]
    assert host.client.starts == 0
    async with Clients(settings) as rt:
        assert await rt.store.partitions.observations(TECH) == []


async def test_r_t3_m4_the_right_environment_still_syncs_in_seconds(tenant, two_environments):
    settings, seed, tech, host, url, first, second = two_environments
    booking = seed.booking(tech, NOW + timedelta(days=1))
    await run_cycle(settings)
    start = NOW + timedelta(days=4)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    async with httpx.AsyncClient() as client:
        # Any spelling of the configured URL names it (E3): case and a trailing slash are the same environment.
        answer = await client.post(url, params={"code": KEY, "environment": second.upper() + "/"}, content=forged("Update", booking))
    assert answer.status_code == 202 and answer.json()["mailboxes"] == 1, answer.text
    await host.client.idle()
    assert events(tenant, TECH)[0]["start"]["dateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M"))


async def test_r_e3_every_spelling_of_an_environment_shares_its_one_client(tenant, two_environments):
    """On 76ca131 each spelling made its own Dataverse client (its own connection pool and token scope), never evicted:
    2,000 posts with different capitals held 73 MB more and 1,521 sockets. Now the cache holds the configured ones."""
    settings, seed, tech, host, url, first, second = two_environments
    booking = seed.booking(tech, NOW + timedelta(days=1))
    letters = [k for k, ch in enumerate(second) if ch.isalpha()][-6:]               # "second": 64 spellings
    spellings = {"".join(ch.upper() if k in letters and (i >> letters.index(k)) & 1 else ch for k, ch in enumerate(second))
                 for i in range(64)}
    async with httpx.AsyncClient() as client:
        for spelling in sorted(spellings):
            answer = await client.post(url, params={"code": KEY, "environment": spelling}, content=forged("Update", booking))
            assert answer.status_code == 202, answer.text
    await host.client.idle()
    sources = (await host.activities.clients())._sources
    assert len(spellings) > 30 and set(sources) <= set(settings.environments) and len(sources) <= 2


async def test_r_e2_a_mailboxs_request_slots_live_only_while_it_has_requests(tenant, two_environments):
    from sync.adapters.graph import MailboxSlots
    slots = MailboxSlots(4)
    async with slots.hold("A@contoso.example"), slots.hold("a@contoso.example"):
        assert len(slots) == 1
    async with slots.hold("b@contoso.example"):
        assert len(slots) == 1
    assert len(slots) == 0


async def test_r_t3_the_environment_is_the_one_dataverse_names_in_its_organization_header(tenant, two_environments):
    """Learn, "Use webhooks to create external handlers for server events": every request carries
    x-ms-dynamics-organization, "the domain name of the environment sending the request", and the query string holds
    only the authentication values. The emulator now sends it (its orgs share a host: host and org path): with two
    environments served, a webhook registered as Dataverse registers it (no ?environment=) syncs its environment's
    mailbox. (6c040fe answered 400: it read the environment from the query string only.)"""
    settings, seed, tech, host, url, first, second = two_environments
    booking = seed.booking(tech, NOW + timedelta(days=1))
    await run_cycle(settings)
    tenant.control("POST", "/orgs/second/webhooks", {"url": url, "auth": {"type": "WebhookKey", "value": KEY}})
    start = NOW + timedelta(days=5)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    for _ in range(100):
        if tenant.control("GET", "/orgs/second/webhooks")["delivered"]:
            break
        await asyncio.sleep(0.05)
    await host.client.idle()
    assert tenant.control("GET", "/orgs/second/webhooks")["failed"] == 0
    assert events(tenant, TECH)[0]["start"]["dateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M"))


@pytest.mark.parametrize("case", ["an environment not served", "a parameter naming the other environment"])
async def test_r_t3_m4_a_message_whose_named_environment_is_not_the_sender_is_refused(tenant, two_environments, case):
    settings, seed, tech, host, url, first, second = two_environments
    booking = seed.booking(tech, NOW + timedelta(days=1))
    await run_cycle(settings)
    domain = second.split("://", 1)[1]
    headers, params = ({"x-ms-dynamics-organization": "contoso.crm4.dynamics.com"}, {"code": KEY}) if case.startswith("an") else \
        ({"x-ms-dynamics-organization": domain}, {"code": KEY, "environment": first})
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params=params, headers=headers, content=forged("Delete", booking))
    assert answer.status_code == 400 and "environment" in answer.json()["error"], answer.text
    assert host.client.starts == 0
