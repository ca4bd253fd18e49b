"""The emulated webhook service retries as Dataverse's does. Microsoft Learn, "Use webhooks to create external handlers
for server events", Troubleshoot WebHook registrations: "The timeout is 60 seconds. Generally, if no response is
returned before the timeout period or if the response StatusCode value is not within the 2xx range to indicate success
it will fail. The exception is when the error returned is [502 Bad Gateway, 503 Service Unavailable, 504 Gateway
Timeout] ... The WebHook service will make one more attempt only when these error codes are returned."."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

pytestmark = pytest.mark.stack


class Receiver:
    """A webhook endpoint that answers the statuses it is given, in order (then 200), or hangs for `hang` attempts."""

    def __init__(self, statuses: list[int], hang: int = 0):
        self.statuses, self.hang, self.attempts = list(statuses), hang, 0
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []     # (query, headers) of each attempt

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.attempts += 1
        self.requests.append((dict(request.query), {k.lower(): v for k, v in request.headers.items()}))
        if self.hang:
            self.hang -= 1
            await asyncio.sleep(5)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]          # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def settled(tenant, expected_attempts: int, receiver: Receiver) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = tenant.control("GET", "/orgs/default/webhooks")
        if receiver.attempts >= expected_attempts and status["in_flight"] == 0:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"webhook not settled: {receiver.attempts} attempts")


def create_booking(tenant) -> str:
    row = tenant.control("POST", "/orgs/default/tables/bookableresourcebookings",
                         [{"name": "b", "starttime": "2026-11-23T09:00:00Z", "endtime": "2026-11-23T10:00:00Z"}])["value"][0]
    return row["bookableresourcebookingid"]


async def deliver(tenant, receiver: Receiver, attempts: int, linger_s: float = 0.3, **registration: object) -> tuple[dict, str]:
    """Registers the receiver, changes a booking, waits for the delivery to settle, then lingers long enough to see an
    attempt too many; returns the webhook status and the booking id."""
    async with receiver as url:
        tenant.control("POST", "/orgs/default/webhooks", {"url": url, "retry_delay_ms": 50, **registration})
        booking = create_booking(tenant)
        await settled(tenant, attempts, receiver)
        await asyncio.sleep(linger_s)
        return tenant.control("GET", "/orgs/default/webhooks"), booking


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_one_more_attempt_after_502_503_504_and_it_can_succeed(tenant, status):
    receiver = Receiver([status])
    state, _ = await deliver(tenant, receiver, 2)
    assert receiver.attempts == 2 and state["redelivered"] == 1 and state["delivered"] == 1 and state["failed_jobs"] == []


async def test_only_one_more_attempt_then_a_failed_system_job(tenant):
    receiver = Receiver([503, 503, 503])
    state, booking = await deliver(tenant, receiver, 2)
    assert receiver.attempts == 2 and state["failed"] == 1
    assert [j["PrimaryEntityId"] for j in state["failed_jobs"]] == [booking]


@pytest.mark.parametrize("status", [400, 401, 404, 500])
async def test_any_other_error_is_not_retried(tenant, status):
    receiver = Receiver([status])
    state, _ = await deliver(tenant, receiver, 1)
    assert receiver.attempts == 1 and state["redelivered"] == 0 and state["failed"] == 1


async def test_no_answer_within_the_timeout_fails_without_another_attempt(tenant):
    receiver = Receiver([], hang=1)
    state, _ = await deliver(tenant, receiver, 1, linger_s=1.0, timeout_s=0.5)
    assert receiver.attempts == 1 and state["failed"] == 1 and state["redelivered"] == 0


@pytest.mark.parametrize("auth,query,header", [
    ({"type": "WebhookKey", "value": "k-1"}, {"code": "k-1"}, {}),
    ({"type": "HttpQueryString", "values": {"Key1": "Value1", "Key2": "Value2"}}, {"Key1": "Value1", "Key2": "Value2"}, {}),
    ({"type": "HttpHeader", "values": {"x-fssync-webhook-key": "s-1"}}, {}, {"x-fssync-webhook-key": "s-1"}),
])
async def test_a_delivery_carries_the_documented_headers_and_only_its_authentication_in_the_query(tenant, auth, query, header):
    """Learn, "Use webhooks to create external handlers for server events", Data passed to the service: "The only data
    you pass as a query string are the authentication values if you configure the WebHook to use the WebhookKey or
    HttpQueryString options"; every request carries x-ms-dynamics-organization ("The domain name of the environment
    sending the request"), x-ms-dynamics-entity-name, x-ms-dynamics-request-name and x-ms-correlation-request-id.
    The authentication types are "Register a webhook"'s: HttpHeader, WebhookKey (`?code=`), HttpQueryString."""
    receiver = Receiver([])
    await deliver(tenant, receiver, 1, auth=auth)
    [(got_query, got_headers)] = receiver.requests
    assert got_query == query
    assert {k: got_headers[k] for k in header} == header
    assert got_headers["x-ms-dynamics-organization"] == f"{tenant.emulator_url.split('://', 1)[1]}/orgs/default"
    assert got_headers["x-ms-dynamics-entity-name"] == "bookableresourcebooking"
    assert got_headers["x-ms-dynamics-request-name"] == "Create" and got_headers["x-ms-correlation-request-id"]


def test_a_registration_with_an_unknown_authentication_type_is_refused(tenant):
    import httpx
    answer = httpx.post(f"{tenant.emulator_url}/_control/orgs/default/webhooks",
                        json={"url": "http://127.0.0.1:9/hook", "auth": {"type": "Basic", "value": "x"}})
    assert answer.status_code == 400 and "WebhookKey" in answer.text
