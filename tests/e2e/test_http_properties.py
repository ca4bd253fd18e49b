"""E3, T3, M4 as properties: random bodies, headers and parameters sent to the webhook handler and the administrative
routes never answer 5xx, never change a calendar, and never stop a mailbox (a real change afterwards still syncs).

Hypothesis drives the same `handle` the Functions app and the local receiver run, and the Functions app's own route
functions, against the local stack (the tenant emulator and Azurite)."""
from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.admin.mailboxes import MailboxAdmin
from sync.app import functions
from sync.app.activities import Activities
from sync.app.orchestrators import ORCHESTRATORS
from sync.app.principal import easy_auth_header
from sync.app.webhook import handle
from sync.core.access import APPROVER, OPERATOR
from sync.local.cycle import run_cycle
from sync.local.durable import DurableRunner
from sync.local.webhook_host import LocalDurableClient
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
A = "ana@contoso.example"
ENTITY = "bookableresourcebooking"


def _json_values() -> st.SearchStrategy:
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                        max_leaves=12)


def _ids(real: str) -> st.SearchStrategy[object]:
    suffixes = st.sampled_from(["", "\n", "\r\n", " ", "\t", "\x00", "\u202e", "%0a", "'", "/..", "#", "?x"])
    return st.one_of(st.builds(lambda s, up: (real.upper() if up else real) + s, suffixes, st.booleans()),
                     st.builds(lambda s: s + real, suffixes), st.uuids().map(str), st.text(max_size=40), _json_values())


def _bodies(real: str) -> st.SearchStrategy[bytes]:
    context = st.fixed_dictionaries(
        {"PrimaryEntityName": st.one_of(st.just(ENTITY), st.just(ENTITY.upper()), _json_values()),
         "MessageName": st.one_of(st.sampled_from(["Create", "Update", "Delete", "Assign", "create"]), _json_values()),
         "PrimaryEntityId": _ids(real)},
        optional={"CorrelationId": _json_values(), "InputParameters": _json_values(), "PostEntityImages": _json_values(),
                  "ParentContext": _json_values()})
    deep = st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n)
    return st.one_of(context.map(lambda c: json.dumps(c).encode()), st.binary(max_size=300), deep,
                     _json_values().map(lambda v: json.dumps(v).encode()),
                     st.just(b'{"PrimaryEntityName": "' + ENTITY.encode() + b'", "MessageName": "Update", "PrimaryEntityId": "\xff"}'))


def _params(environments: tuple[str, ...]) -> st.SearchStrategy[dict[str, str]]:
    env = st.one_of(st.sampled_from(environments), st.sampled_from(environments).map(str.upper),
                    st.sampled_from(environments).map(lambda e: e + "/"), st.text(max_size=60))
    return st.dictionaries(st.sampled_from(["environment", "code", "limit", "mailbox", "x"]),
                           st.one_of(env, st.sampled_from(["1", "¹", "٣", "0", "1001", "-1", " 5", "50\n"]), st.text(max_size=20)),
                           max_size=3)


def _principals() -> st.SearchStrategy[dict[str, str]]:
    raw = st.one_of(st.text(max_size=40), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
                    _json_values().map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()))
    junk_roles = st.lists(st.sampled_from(["Reader", "sync.operator", "", "Mailbox.Approver "]), max_size=2)
    return st.one_of(st.just({}), raw.map(lambda r: {"X-MS-CLIENT-PRINCIPAL": r}),
                     junk_roles.map(lambda roles: easy_auth_header("00000000-0000-0000-0000-0000000000b1", "Mallory", roles)))


@pytest.fixture
def synced_stack(tenant, table_prefix, monkeypatch):
    """One mailbox with one synced event, on an event loop the examples share (clients stay bound to it)."""
    settings = stack_settings(tenant, table_prefix, monkeypatch, WEBSITE_AUTH_ENABLED="true")
    seed = DvSeed(tenant)
    booking = seed.booking(seed.technician(A, "Ana"), NOW + timedelta(days=1))
    loop = asyncio.new_event_loop()
    activities = Activities(lambda: settings)
    monkeypatch.setattr(functions, "_activities", activities)

    async def setup():
        rt = await activities.clients()
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
        await admin.register(A, settings.environments[0], approved=True)
        await admin.test_and_enable([A], NOW)
        await run_cycle(settings)
        return rt

    services = loop.run_until_complete(setup())
    client = LocalDurableClient(DurableRunner(ORCHESTRATORS, activities.by_name()))
    yield settings, seed, booking, loop, services, client
    loop.run_until_complete(client.idle())
    loop.run_until_complete(activities.close())
    loop.close()


def _calendar(tenant) -> list[dict]:
    return [{k: e[k] for k in ("id", "subject", "start", "end")} for e in tenant.control("GET", f"/mailboxes/{A}/events")["value"]]


def _still_syncs(tenant, settings, seed: DvSeed, booking: str, loop) -> None:
    start = NOW + timedelta(days=5, hours=1)
    seed.update("bookableresourcebookings", booking, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    summary = loop.run_until_complete(run_cycle(settings))
    assert [r["outcome"] for r in summary["mailboxes"]] == ["synced"], summary["mailboxes"]
    assert [e["start"]["dateTime"][:16] for e in _calendar(tenant)] == [start.strftime("%Y-%m-%dT%H:%M")]


def test_r_e3_t3_random_webhook_requests_never_answer_5xx_change_a_calendar_or_stop_a_mailbox(tenant, synced_stack):
    settings, seed, booking, loop, services, client = synced_stack
    before = _calendar(tenant)
    headers = st.dictionaries(st.sampled_from(["x-fssync-webhook-key", "x-ms-dynamics-msg-size-exceeded", "Content-Type",
                                               "x-ms-dynamics-organization", "X-MS-CLIENT-PRINCIPAL"]), st.text(max_size=30), max_size=3)
    statuses: set[int] = set()

    @given(body=_bodies(booking), headers=headers, params=_params(settings.environments))
    def one_request(body: bytes, headers: dict[str, str], params: dict[str, str]) -> None:
        status, answer = loop.run_until_complete(handle(body, headers, params, settings, client, datetime.now(UTC).isoformat(), services))
        assert status < 500, (status, answer)
        assert isinstance(answer, dict) and ("error" in answer) == (status >= 400)
        statuses.add(status)

    one_request()
    loop.run_until_complete(client.idle())
    assert {202, 400} <= statuses                       # the examples reached both the handler's ends
    assert _calendar(tenant) == before
    _still_syncs(tenant, settings, seed, booking, loop)


def test_r_e3_random_admin_requests_never_answer_5xx_and_change_nothing(tenant, synced_stack):
    """Without a role the platform signed in, no route does anything, whatever the header, body or parameters say; a
    malformed principal header is 401, never 500."""
    settings, seed, booking, loop, services, client = synced_stack
    before = _calendar(tenant)
    routes = [(functions.mailboxes_status, "GET", {}), (functions.audit_trail, "GET", {}), (functions.sync_filters, "GET", {}),
              (functions.sync_filters, "POST", {}), (functions.booking_diagnosis, "GET", {"booking_id": booking}),
              (functions.mailboxes_admin, "POST", {"action": "disable"}), (functions.mailboxes_admin, "POST", {"action": "move"})]
    statuses: set[int] = set()

    @given(route=st.sampled_from(routes), principal=_principals(), params=_params(settings.environments),
           body=st.one_of(st.just(b""), _json_values().map(lambda v: json.dumps(v).encode()), st.binary(max_size=80),
                          st.integers(1, 100_000).map(lambda n: b"{\"a\":" * n + b"1" + b"}" * n)),
           booking_id=_ids(booking))
    def one_request(route, principal, params, body, booking_id) -> None:
        function, method, route_params = route
        if "booking_id" in route_params:
            route_params = {"booking_id": booking_id if isinstance(booking_id, str) else str(booking_id)}
        request = func.HttpRequest(method, "/api/x", headers=principal, params=params, route_params=route_params, body=body)
        response = loop.run_until_complete(function._function.get_user_function()(request))
        assert response.status_code < 500, (response.status_code, response.get_body()[:300])
        assert response.status_code in (401, 403), response.get_body()[:300]
        statuses.add(response.status_code)

    one_request()
    assert statuses == {401, 403}
    assert _calendar(tenant) == before
    _still_syncs(tenant, settings, seed, booking, loop)


@pytest.mark.parametrize("route,params", [(functions.audit_trail, {"limit": "¹"}), (functions.audit_trail, {"limit": "٣"}),
                                          (functions.audit_trail, {"limit": "1001"}),
                                          (functions.booking_diagnosis, {"environment": "https://elsewhere.crm.dynamics.com"})])
def test_r_e3_parameters_a_role_holder_sends_are_validated_400(tenant, synced_stack, route, params):
    settings, seed, booking, loop, services, client = synced_stack
    request = func.HttpRequest("GET", "/api/x", headers=easy_auth_header("00000000-0000-0000-0000-0000000000a1", "Ana", [OPERATOR]),
                               params=params, route_params={"booking_id": booking}, body=b"")
    response = loop.run_until_complete(route._function.get_user_function()(request))
    assert response.status_code == 400 and "error" in json.loads(response.get_body())


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"addresses": ' * 50_000 + b"1" + b"}" * 50_000])
def test_r_e3_deeply_nested_admin_bodies_are_400(tenant, synced_stack, body):
    settings, seed, booking, loop, services, client = synced_stack
    request = func.HttpRequest("POST", "/api/mailboxes/approve", headers=easy_auth_header("00000000-0000-0000-0000-0000000000a1", "Ana",
                                                                                         [APPROVER]),
                               params={}, route_params={"action": "approve"}, body=body)
    response = loop.run_until_complete(functions.mailboxes_admin._function.get_user_function()(request))
    assert response.status_code == 400


def test_the_run_route_answers_with_the_products_status_route_never_durables_management_urls(tenant, synced_stack):
    """The management URLs carry the task hub's system key (start, terminate, purge any instance)."""
    settings, seed, booking, loop, services, client = synced_stack
    request = func.HttpRequest("POST", "https://app.example/api/sync/run", headers=easy_auth_header(
        "00000000-0000-0000-0000-0000000000a1", "Ana", [OPERATOR]), params={}, body=b"")
    run_now = functions.sync_run_now._function.get_user_function().__wrapped__      # past the SDK's client binding
    response = loop.run_until_complete(run_now(request, client))
    loop.run_until_complete(client.idle())
    answer = json.loads(response.get_body())
    assert response.status_code == 202 and set(answer) == {"instanceId", "statusUri"} and answer["statusUri"] == "/api/sync/status"
    assert "code=" not in response.get_body().decode() and response.headers.get("Location") == "/api/sync/status"


def test_r_e3_random_parameters_a_signed_in_reader_sends_never_answer_5xx(tenant, synced_stack):
    """With a role, the read routes get past the sign-in: what they are sent is validated (400), never a 500."""
    settings, seed, booking, loop, services, client = synced_stack
    before = _calendar(tenant)
    reads = [(functions.mailboxes_status, {}), (functions.audit_trail, {}), (functions.sync_filters, {}),
             (functions.booking_diagnosis, {"booking_id": booking})]
    statuses: set[int] = set()

    @given(route=st.sampled_from(reads), params=_params(settings.environments), booking_id=_ids(booking),
           roles=st.sampled_from([[OPERATOR], [APPROVER], [OPERATOR, APPROVER]]))
    def one_request(route, params, booking_id, roles) -> None:
        function, route_params = route
        if "booking_id" in route_params:
            route_params = {"booking_id": booking_id if isinstance(booking_id, str) else str(booking_id)}
        request = func.HttpRequest("GET", "/api/x", headers=easy_auth_header("00000000-0000-0000-0000-0000000000a1", "Ana", roles),
                                   params=params, route_params=route_params, body=b"")
        response = loop.run_until_complete(function._function.get_user_function()(request))
        assert response.status_code in (200, 400), (response.status_code, response.get_body()[:300])
        statuses.add(response.status_code)

    one_request()
    assert statuses == {200, 400}
    assert _calendar(tenant) == before
