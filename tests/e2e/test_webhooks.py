"""T3 near real time on the local stack: the emulator posts Dataverse webhook payloads to the local
webhook host, which runs the same handler and orchestrations as the Functions app."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sync.admin.mailboxes import MailboxAdmin
from sync.app.activities import Activities
from sync.app.clients import Clients
from sync.app.settings import load
from sync.local.cycle import run_cycle
from sync.local.webhook_host import LocalWebhookHost
from sync.ports import LeaseHeld, MailboxCommit
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import webhook_payload

pytestmark = pytest.mark.stack
KEY = "local-function-key"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
A, B = "ana@contoso.example", "ben@contoso.example"


@pytest.fixture
async def world(tenant, table_prefix, monkeypatch):
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    seed = DvSeed(tenant)
    techs = {A: seed.technician(A, "Ana"), B: seed.technician(B, "Ben")}
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for address in techs:
            await admin.register(address, settings.environments[0], approved=True)
        await admin.test_and_enable(list(techs), NOW)
    host = LocalWebhookHost(settings, KEY)
    url = await host.start()
    yield settings, seed, techs, host, url
    await host.stop()


def events(tenant, address) -> list[dict]:
    return tenant.control("GET", f"/mailboxes/{address}/events")["value"]


async def wait_for(predicate, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_r_t3_booking_change_reaches_outlook_within_seconds(tenant, world):
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    await run_cycle(settings)
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}"})
    new_start = NOW + timedelta(days=2, hours=3)
    started = time.monotonic()
    seed.update("bookableresourcebookings", booking, {"starttime": iso(new_start), "endtime": iso(new_start + timedelta(hours=2))})
    await wait_for(lambda: events(tenant, A)[0]["start"]["dateTime"].startswith(new_start.strftime("%Y-%m-%dT%H:%M")))
    assert time.monotonic() - started < 5


async def test_r_t3_new_booking_and_reassignment_sync_both_mailboxes(tenant, world):
    settings, seed, techs, host, url = world
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}"})
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    await wait_for(lambda: len(events(tenant, A)) == 1)
    seed.update("bookableresourcebookings", booking, {"_resource_value": techs[B]})
    await wait_for(lambda: len(events(tenant, B)) == 1)
    await host.client.idle()
    async with Clients(settings) as rt:
        assert [l.state.value for l in (await rt.store.partitions.links(A)).values()] == ["unlinked"]    # C6 / D3 in the old mailbox


async def test_r_t3_burst_of_100_changes_coalesces_into_few_syncs(tenant, world):
    settings, seed, techs, host, url = world
    bookings = [seed.booking(techs[A], NOW + timedelta(days=1, hours=h)) for h in range(20)]
    await run_cycle(settings)
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}"})
    final = {}
    for round_ in range(5):
        for i, booking in enumerate(bookings):
            start = NOW + timedelta(days=2 + round_, hours=i)
            final[booking] = start
            seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=1))})
    expected = sorted(s.strftime("%Y-%m-%dT%H:%M") for s in final.values())
    await wait_for(lambda: sorted(e["start"]["dateTime"][:16] for e in events(tenant, A)) == expected, timeout=60)
    await host.client.idle()
    syncs = sum(record.activities.count("sync_mailbox") for record in host.client.runner.instances.values())
    assert host.requests == 100
    assert syncs < 25 and host.client.starts < 25, (syncs, host.client.starts)
    assert len(events(tenant, A)) == 20


async def test_r_t3_duplicate_delivery_creates_nothing_twice(tenant, world):
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    payload = webhook_payload(tenant, booking)
    async with httpx.AsyncClient() as client:
        first = await client.post(url + f"?code={KEY}", content=payload)
        second = await client.post(url + f"?code={KEY}", content=payload)
        assert first.status_code == second.status_code == 202
        await host.client.idle()
        await client.post(url + f"?code={KEY}", content=payload)
        await host.client.idle()
    assert len(events(tenant, A)) == 1


async def test_r_t3_missing_or_wrong_key_is_401_and_nothing_runs(tenant, world):
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    payload = webhook_payload(tenant, booking)
    async with httpx.AsyncClient() as client:
        assert (await client.post(url, content=payload)).status_code == 401
        assert (await client.post(url + "?code=wrong", content=payload)).status_code == 401
    assert host.client.starts == 0
    async with Clients(settings) as rt:
        assert await rt.store.partitions.observations(A) == []


async def test_r_t3_header_secret_is_checked_in_constant_time(tenant, world, monkeypatch):
    settings, seed, techs, host, url = world
    from dataclasses import replace
    host.settings = replace(settings, webhook_secret="s3cret-header-value")
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    payload = webhook_payload(tenant, booking)
    async with httpx.AsyncClient() as client:
        assert (await client.post(url + f"?code={KEY}", content=payload)).status_code == 401
        ok = await client.post(url + f"?code={KEY}", content=payload, headers={"x-fssync-webhook-key": "s3cret-header-value"})
        assert ok.status_code == 202


async def test_r_t3_a_header_secret_still_to_be_created_closes_the_webhook(tenant, world):
    """Bicep turns the header secret on by default; until the secret exists in Key Vault the reference stays unresolved,
    and the webhook refuses every request (the timer cycle syncs meanwhile). Nothing sent opens it, not even the
    reference's own text."""
    settings, seed, techs, host, url = world
    from dataclasses import replace
    host.settings = replace(settings, webhook_secret=None, webhook_secret_unresolved=True)
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    payload = webhook_payload(tenant, booking)
    reference = "@Microsoft.KeyVault(VaultName=kv1;SecretName=webhook-header-secret)"
    async with httpx.AsyncClient() as client:
        for headers in ({}, {"x-fssync-webhook-key": reference}, {"x-fssync-webhook-key": ""}):
            answer = await client.post(url + f"?code={KEY}", content=payload, headers=headers)
            assert answer.status_code == 503 and "webhook-header-secret" in answer.json()["error"]
    assert host.client.starts == 0
    await run_cycle(settings)
    assert len(events(tenant, A)) == 1


@pytest.mark.parametrize("body,expected", [(b"not json", 400), (b"[]", 400),
                                           (json.dumps({"PrimaryEntityName": "account", "MessageName": "Update", "PrimaryEntityId": "00000000-0000-0000-0000-000000000001"}).encode(), 400),
                                           (json.dumps({"PrimaryEntityName": "bookableresourcebooking", "MessageName": "Assign", "PrimaryEntityId": "00000000-0000-0000-0000-000000000001"}).encode(), 400),
                                           (json.dumps({"PrimaryEntityName": "bookableresourcebooking", "MessageName": "Update", "PrimaryEntityId": "1' or '1'='1"}).encode(), 400),
                                           (b"{" + b" " * (600 * 1024) + b"}", 413)])
async def test_r_t3_malformed_body_is_rejected(tenant, world, body, expected):
    settings, seed, techs, host, url = world
    async with httpx.AsyncClient() as client:
        response = await client.post(url + f"?code={KEY}", content=body)
    assert response.status_code == expected and "error" in response.json()
    assert host.client.starts == 0


async def test_r_t3_message_too_large_is_answered_by_reading_the_booking(tenant, world):
    settings, seed, techs, host, url = world
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}", "size_exceeded": True})
    seed.booking(techs[A], NOW + timedelta(days=1))
    await wait_for(lambda: len(events(tenant, A)) == 1)


async def test_r_t3_a_lost_webhook_is_caught_by_the_next_timer_cycle(tenant, world):
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    await run_cycle(settings)
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}", "drop": 1})
    new_start = NOW + timedelta(days=3)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(new_start), "endtime": iso(new_start + timedelta(hours=2))})
    await asyncio.sleep(1)
    assert not events(tenant, A)[0]["start"]["dateTime"].startswith(new_start.strftime("%Y-%m-%dT%H:%M"))
    assert tenant.control("GET", "/orgs/default/webhooks")["dropped"] == 1
    await run_cycle(settings)
    assert events(tenant, A)[0]["start"]["dateTime"].startswith(new_start.strftime("%Y-%m-%dT%H:%M"))


async def test_two_syncs_of_one_mailbox_never_overlap(tenant, world):
    settings, seed, techs, host, url = world
    seed.booking(techs[A], NOW + timedelta(days=1))
    await run_cycle(settings)
    activities = Activities(lambda: settings)
    try:
        async with Clients(settings) as rt:
            claimed = await rt.store.partitions.claim(A, "timer-cycle", datetime.now(UTC), 600, (await rt.store.partitions.load(A)).lease)
            assert claimed is not None
            busy = await activities.sync_mailbox({"mailbox": A, "now": datetime.now(UTC).isoformat()})
            assert busy["outcome"] == "busy" and busy["retryable"]
            await rt.store.partitions.commit(A, MailboxCommit(LeaseHeld(claimed[0])))
        free = await activities.sync_mailbox({"mailbox": A, "now": datetime.now(UTC).isoformat()})
        assert free["outcome"] == "synced"
    finally:
        await activities.close()


@pytest.mark.parametrize("message", ["Create", "Update", "Delete"])
async def test_r_t3_a_webhook_message_is_a_hint_never_the_truth(tenant, world, message):
    """Forged messages for an existing, a missing and a foreign-environment booking: the calendars afterwards are
    what the timer cycle alone produces (the forged Delete of an existing booking removes nothing)."""
    settings, seed, techs, host, url = world
    existing = seed.booking(techs[A], NOW + timedelta(days=1))
    await run_cycle(settings)
    before = {address: events(tenant, address) for address in (A, B)}
    other = DvSeed(tenant, org="second")
    foreign = other.booking(other.technician(A, mailbox=False), NOW + timedelta(days=2))
    missing = DvSeed.new_id()
    async with httpx.AsyncClient() as client:
        for booking_id in (existing, missing, foreign):
            forged = {"MessageName": message, "PrimaryEntityName": "bookableresourcebooking", "PrimaryEntityId": booking_id,
                      "CorrelationId": DvSeed.new_id(), "InputParameters": [], "PostEntityImages": []}
            answer = await client.post(url + f"?code={KEY}", content=json.dumps(forged))
            assert answer.status_code == 202, answer.text
        await host.client.idle()
    after_webhooks = {address: events(tenant, address) for address in (A, B)}
    assert after_webhooks == before
    await run_cycle(settings)
    assert {address: events(tenant, address) for address in (A, B)} == after_webhooks


async def test_r_t3_no_change_waits_for_the_timer_and_mailbox_syncs_never_overlap(tenant, table_prefix, monkeypatch):
    """1,000 changes over 50 mailboxes, delivered by webhook while the mailboxes' own syncs run: every change
    reaches its calendar without a timer cycle, and no two syncs of one mailbox ever run at once."""
    import sync.engine.mailbox as executor
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    seed = DvSeed(tenant)
    addresses = [f"tech{i:02d}@contoso.example" for i in range(50)]
    techs = {a: seed.technician(a) for a in addresses}
    bookings = {a: [seed.booking(techs[a], NOW + timedelta(days=1, hours=h)) for h in range(20)] for a in addresses}
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        for address in addresses:
            await admin.register(address, settings.environments[0], approved=True)
        await admin.test_and_enable(addresses, NOW)
    await run_cycle(settings)

    running: dict[str, int] = {}
    most = [0]
    original = executor.MailboxSync.run

    async def watched(self, address, **kw):
        running[address] = running.get(address, 0) + 1
        most[0] = max(most[0], running[address])
        try:
            return await original(self, address, **kw)
        finally:
            running[address] -= 1

    monkeypatch.setattr(executor.MailboxSync, "run", watched)
    host = LocalWebhookHost(settings, KEY)
    url = await host.start()
    try:
        tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}"})
        expected: dict[str, list[str]] = {}
        for h in range(20):                                   # round by round, so changes land while syncs run
            for address in addresses:
                start = NOW + timedelta(days=3, hours=h, minutes=7)
                seed.update("bookableresourcebookings", bookings[address][h],
                            {"starttime": iso(start), "endtime": iso(start + timedelta(hours=1))})
                expected.setdefault(address, []).append(start.strftime("%Y-%m-%dT%H:%M"))
            await asyncio.sleep(0.02)

        def all_arrived() -> bool:
            return all(sorted(e["start"]["dateTime"][:16] for e in events(tenant, a)) == sorted(expected[a]) for a in addresses)

        await wait_for(all_arrived, timeout=180)
        await host.client.idle(timeout=120)
    finally:
        await host.stop()
    assert host.requests == 1000
    assert most[0] == 1, "two syncs of one mailbox ran at once"
    async with Clients(settings) as rt:
        assert [a for a in addresses if await rt.store.partitions.observations(a)] == []


async def test_r_t3_dataverse_down_answers_503_and_the_one_redelivery_reaches_outlook(tenant, world):
    """Dataverse's webhook service makes one more attempt for 502/503/504 only (Learn, "Use webhooks", Troubleshoot);
    a change the handler cannot read for the moment is answered 503, never 500, so that attempt comes."""
    settings, seed, techs, host, url = world
    tenant.control("POST", "/orgs/default/webhooks", {"url": url + f"?code={KEY}", "retry_delay_ms": 1500})
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse", "method": "GET", "path": "bookableresourcebookings$",
                                                 "action": "status", "status": 503, "retry_after": 0.05}]})
    seed.booking(techs[A], NOW + timedelta(days=1))
    await wait_for(lambda: tenant.control("GET", "/orgs/default/webhooks")["redelivered"] == 1)
    tenant.control("DELETE", "/faults")                     # Dataverse answers again before the one more attempt
    await wait_for(lambda: len(events(tenant, A)) == 1)
    state = tenant.control("GET", "/orgs/default/webhooks")
    assert state["delivered"] == 1 and state["failed"] == 0 and state["failed_jobs"] == []


async def test_r_e1_t3_a_token_endpoint_that_fails_answers_503_so_dataverse_posts_the_change_again(tenant, world, monkeypatch):
    """The managed identity's token endpoint fails now and then on Functions (reports in the Functions host's issue
    tracker). The endpoint cannot run here, so the credential is the seam: it refuses its next tokens as
    azure-identity does (ClientAuthenticationError). The webhook answers 503, after which Dataverse posts once more
    (Learn, "Use webhooks ...", Troubleshoot), never 500 (6c040fe: 500, and the change waited for the timer)."""
    from azure.core.exceptions import ClientAuthenticationError

    from sync.adapters.credentials import LoopbackDevCredential
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    failing = [2]
    issue = LoopbackDevCredential.get_token

    async def flaky(self, *scopes, **kw):
        if failing[0] > 0:
            failing[0] -= 1
            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable: the endpoint did not answer")
        return await issue(self, *scopes, **kw)

    monkeypatch.setattr(LoopbackDevCredential, "get_token", flaky)
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params={"code": KEY}, content=webhook_payload(tenant, booking, "Update"))
    assert answer.status_code == 503, answer.text
    failing[0] = 0
    async with httpx.AsyncClient() as client:
        again = await client.post(url, params={"code": KEY}, content=webhook_payload(tenant, booking, "Update"))
    assert again.status_code == 202
    await host.client.idle()
    assert len(events(tenant, A)) == 1


async def test_r_t3_a_webhook_sync_of_a_busy_mailbox_waits_for_the_timer_cycle_as_on_the_functions_host(tenant, world):
    """The mailbox's orchestration waits on a durable timer while the timer cycle holds the mailbox; the local host's
    timers now wait as the Functions host's do, so the change lands once the cycle lets go (6c040fe: its 20 rounds
    went by in milliseconds and the change waited for the next timer cycle)."""
    from sync.ports import LeaseHeld, MailboxCommit
    settings, seed, techs, host, url = world
    booking = seed.booking(techs[A], NOW + timedelta(days=1))
    await run_cycle(settings)
    async with Clients(settings) as rt:
        held, _ = await rt.store.partitions.claim(A, "timer-cycle", datetime.now(UTC), 600, (await rt.store.partitions.load(A)).lease)
        start = NOW + timedelta(days=6)
        seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
        async with httpx.AsyncClient() as client:
            answer = await client.post(url, params={"code": KEY}, content=webhook_payload(tenant, booking, "Update"))
        assert answer.status_code == 202 and answer.json()["started"] == 1
        await asyncio.sleep(3)                                           # the cycle holds the mailbox a while
        assert not events(tenant, A)[0]["start"]["dateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
        await rt.store.partitions.commit(A, MailboxCommit(LeaseHeld(held)))   # ... and lets go
    await wait_for(lambda: events(tenant, A)[0]["start"]["dateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M")), timeout=10)
