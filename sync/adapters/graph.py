"""Calendar on Microsoft Graph through msgraph-sdk (GraphServiceClient), with Kiota's retry middleware.

Writes for one mailbox go out as JSON batches: each batch is one `dependsOn` chain of at most 20 items
(Graph accepts fully sequential or fully parallel batches, and items of a parallel batch to one mailbox
are throttled one by one), with at most 4 batches in flight per mailbox, Outlook's concurrency limit.
Items that come back throttled (429) or unexecuted (424 after a failed dependency) are sent again after
their Retry-After; the SDK does not retry batch items itself. Every status is classified so the engine
can act (M6, C5, E1-E3).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import UrlReplaceHandler
from kiota_http.middleware.options import RetryHandlerOption
from kiota_http.observability_options import ObservabilityOptions
from msgraph import GraphServiceClient
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from ..core import mailbox_reasons
from ..core.operations import CalendarOp, OpKind, OpResult, Outcome
from ..core.render import TAG_BOOKING, TAG_ENVIRONMENT
from ..core.tenants import HOME, TENANT_REASONS
from ..ports import MailboxProbe
from .graph_errors import RETRYABLE, classified, classify, error_code, mailbox_reason, refused_probe, tenant_refusal, token_failure_probe
from .graph_transport import AiohttpTransport

MAX_BATCH = 20
# Graph, "Obtain immutable identifiers for Outlook resources": by default an event's id changes when it moves to another
# calendar or folder; with this header the id does not change while the event stays in the mailbox. "This header only
# applies to the request it is included with": the client sends it on every request, and on every $batch item.
IMMUTABLE_IDS = 'IdType="ImmutableId"'
MAILBOX_CONCURRENCY = 4
# Connections to Graph the client may hold open at once, all kept alive between requests: a worker's 8
# activities with up to 4 requests each (host.json) must not close and reopen TLS connections (httpx's own pool
# keeps 20; the bench's initial sync then opened 372 where 32 were in use).
GRAPH_CONNECTIONS = 100
MAX_ATTEMPTS = 6
MAX_WAIT_S = 120.0
# M2: the documented least-privilege grant (Exchange RBAC "Application Calendars.ReadWrite") does not cover
# GET /mailboxSettings (MailboxSettings.Read); the time zone only shapes the body text, so the mailbox stays writable.
SETTINGS_DENIED = ("mailbox_settings_not_granted: the app may not read this mailbox's settings, so its time zone is shown as UTC; "
                   "grant \"Application MailboxSettings.Read\" in the same management scope to show local times")


class SequentialBatchItem(BatchRequestItem):
    """BatchRequestItem that writes `dependsOn`, the key Graph reads (msgraph-sdk-python-core writes
    `depends_on`, which Graph ignores; see microsoftgraph/msgraph-sdk-python-core PR #996)."""

    def serialize(self, writer) -> None:
        writer.write_str_value("id", self.id)
        writer.write_str_value("method", self.method)
        writer.write_str_value("url", self.url)
        if self.depends_on:
            writer.write_collection_of_primitive_values("dependsOn", self.depends_on)
        writer.write_additional_data_value({"headers": self.headers or {}})
        if self.body:
            writer.write_additional_data_value({"body": json.loads(self.body)})


class MailboxSlots:
    """E2: at most `limit` requests in flight per mailbox. A mailbox's semaphore lives only while it has requests in
    flight or waiting, so a long-lived worker holds the mailboxes it is writing now, never every mailbox it has seen."""

    def __init__(self, limit: int):
        self.limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, mailbox: str) -> AsyncIterator[None]:
        key = mailbox.lower()
        slot, users = self._slots.setdefault(key, (asyncio.Semaphore(self.limit), [0]))
        users[0] += 1
        try:
            async with slot:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._slots[key]

    def __len__(self) -> int:
        return len(self._slots)


class GraphCalendar:
    """One Graph endpoint. Async; create it inside the event loop that uses it (msgraph-sdk is async-only)."""

    def __init__(self, base_url: str, credential: Any, *, max_retries: int = 3, timeout_s: float = 60.0,
                 max_wait_s: float = MAX_WAIT_S, tenant: str = HOME):
        parts = urlsplit(base_url)
        self.tenant = tenant                  # the Entra tenant whose mailboxes this client reaches (HOME or its id)
        self.base_url = base_url.rstrip("/")
        scope = f"{parts.scheme}://{parts.netloc}/.default"
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[scope], allowed_hosts=[parts.hostname or ""])
        # Kiota's default middleware, less UrlReplaceHandler: it only rewrites /users/me-token-to-replace, which
        # this service never calls, and it records the full URL (which holds the mailbox address) on its span.
        middleware = [m for m in KiotaClientFactory.get_default_middleware(
            {RetryHandlerOption.get_key(): RetryHandlerOption(delay=1, max_retries=max_retries)}) if not isinstance(m, UrlReplaceHandler)]
        middleware.append(GraphTelemetryHandler())
        # trust_env=False: the transport has read the environment's proxy already, once.
        self.transport = AiohttpTransport(self.base_url, connections=GRAPH_CONNECTIONS)
        # C9: ids that survive the owner moving an event to another calendar, on every request the client sends.
        self.http = GraphClientFactory.create_with_custom_middleware(middleware, client=httpx.AsyncClient(
            timeout=timeout_s, transport=self.transport, trust_env=False, headers={"Prefer": IMMUTABLE_IDS}))
        self.adapter = GraphRequestAdapter(auth, client=self.http)
        self.adapter.base_url = self.base_url
        # No end-user identifiable attributes (request URLs) on Kiota's spans.
        self.adapter.observability_options = ObservabilityOptions(include_euii_attributes=False)
        self.client = GraphServiceClient(request_adapter=self.adapter)
        self.max_wait_s = max_wait_s
        self._slots = MailboxSlots(MAILBOX_CONCURRENCY)
        self.http_requests = 0

    async def close(self) -> None:
        await self.http.aclose()
        await self.transport.aclose()            # msgraph-core's transport around it does not pass the close on

    async def __aenter__(self) -> GraphCalendar:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- mailbox test (M2) ---------------------------------------------------------------------------
    async def test_mailbox(self, mailbox: str) -> MailboxProbe:
        user = self.client.users.by_user_id(mailbox)
        async with self._slots.hold(mailbox):
            try:
                self.http_requests += 1
                calendar = await user.calendar.get()
                self.http_requests += 1
                try:
                    settings = await user.mailbox_settings.get()
                except APIError as err:
                    if (err.response_status_code or 0) != 403:
                        raise
                    settings = None
            except (APIError, ClientAuthenticationError) as err:
                refused = tenant_refusal(self.tenant, err)
                if refused is not None:
                    return MailboxProbe(False, refused[0], refused[1])
                if isinstance(err, ClientAuthenticationError):
                    return token_failure_probe()
                status, code = err.response_status_code or 0, error_code(err)
                if status in RETRYABLE:
                    return MailboxProbe(False, "transient", f"Graph answered {status}; try again later.", transient=True)
                return refused_probe(mailbox_reason(status, code))
            except Exception as exc:
                name = type(exc).__name__
                if "Authentication" in name or "Credential" in name:
                    return token_failure_probe()
                return MailboxProbe(False, "transient", f"Graph did not answer ({name}); try again later.", transient=True)
        if calendar is not None and calendar.can_edit is False:
            return refused_probe(mailbox_reasons.CALENDAR_READ_ONLY)
        if settings is None:
            return MailboxProbe(True, time_zone="UTC", warning=SETTINGS_DENIED)
        return MailboxProbe(True, time_zone=settings.time_zone or "UTC")

    async def test_mailboxes(self, mailboxes: Sequence[str], concurrency: int = 8) -> dict[str, MailboxProbe]:
        """M2 in bulk: the calendar and mailbox settings of 10 mailboxes per fully parallel $batch (2 requests
        per mailbox, under Outlook's 4). Mailboxes whose items were throttled are tested one by one after."""
        groups = [list(mailboxes[i:i + MAX_BATCH // 2]) for i in range(0, len(mailboxes), MAX_BATCH // 2)]
        slots = asyncio.Semaphore(concurrency)
        probes: dict[str, MailboxProbe] = {}

        async def one(group: list[str]) -> None:
            content = BatchRequestContent()
            for i, address in enumerate(group):
                user = self.client.users.by_user_id(address)
                reads = (("c", user.calendar.to_get_request_information()), ("s", user.mailbox_settings.to_get_request_information()))
                for suffix, info in reads:
                    item = SequentialBatchItem(info, id=f"{i}{suffix}")
                    item.url = item.url if item.url.startswith("/") else "/" + item.url
                    content.add_request(item.id, item)
            async with slots:
                self.http_requests += 1
                try:
                    raw = await self.adapter.send_primitive_async(await self.client.batch.to_post_request_information(content), "bytes", {})
                    answers = {str(r.get("id")): r for r in json.loads(raw or b"{}").get("responses", [])}
                except (TimeoutError, APIError, ClientAuthenticationError, httpx.TransportError, json.JSONDecodeError) as exc:
                    refused = tenant_refusal(self.tenant, exc)
                    if refused is not None:                  # the tenant refused the app: every mailbox of the group alike
                        probes.update({address: MailboxProbe(False, refused[0], refused[1]) for address in group})
                        return
                    answers = {}
            for i, address in enumerate(group):
                calendar, settings = answers.get(f"{i}c"), answers.get(f"{i}s")
                if calendar is None or settings is None or {calendar.get("status"), settings.get("status")} & RETRYABLE:
                    probes[address] = await self.test_mailbox(address)
                    continue
                settings_denied = int(settings.get("status") or 0) == 403 and int(calendar.get("status") or 0) < 300
                for item in (calendar, *(() if settings_denied else (settings,))):
                    status = int(item.get("status") or 0)
                    if status >= 300:
                        code = ((item.get("body") or {}).get("error") or {}).get("code")
                        probes[address] = refused_probe(mailbox_reason(status, code))
                        break
                else:
                    if (calendar.get("body") or {}).get("canEdit") is False:
                        probes[address] = refused_probe(mailbox_reasons.CALENDAR_READ_ONLY)
                    elif settings_denied:
                        probes[address] = MailboxProbe(True, time_zone="UTC", warning=SETTINGS_DENIED)
                    else:
                        probes[address] = MailboxProbe(True, time_zone=(settings.get("body") or {}).get("timeZone") or "UTC")

        await asyncio.gather(*(one(g) for g in groups))
        return probes

    # -- ownership tag lookup ----------------------------------------------------------------------------
    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]:
        flt = (f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_BOOKING}' and ep/value eq '{_literal(booking_id.lower())}')")
        expand = (f"singleValueExtendedProperties($filter=id eq '{TAG_ENVIRONMENT}' or id eq '{TAG_BOOKING}')")
        params = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(filter=flt, expand=[expand], select=["id"], top=50)
        config = RequestConfiguration(query_parameters=params)
        async with self._slots.hold(mailbox), classified(self.tenant):
            self.http_requests += 1
            page = await self.client.users.by_user_id(mailbox).events.get(request_configuration=config)
        found: list[str] = []
        for event in (page.value if page else []) or []:
            tags = {(p.id or "").lower(): (p.value or "").lower() for p in event.single_value_extended_properties or []}
            if (event.id and tags.get(TAG_ENVIRONMENT.lower()) == environment.lower()
                    and tags.get(TAG_BOOKING.lower()) == booking_id.lower()):
                found.append(event.id)
        return found

    async def list_events(self, mailbox: str, top: int = 50) -> list[dict]:
        """A mailbox's events, soonest first (for people looking at a calendar: the demo and diagnose)."""
        params = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(select=["subject", "start", "end", "showAs"], top=top,
                                                                              orderby=["start/dateTime"])
        async with self._slots.hold(mailbox), classified(self.tenant):
            self.http_requests += 1
            config = RequestConfiguration(query_parameters=params)
            page = await self.client.users.by_user_id(mailbox).events.get(request_configuration=config)
        return [{"id": e.id, "subject": e.subject, "start": e.start.date_time if e.start else None,
                 "end": e.end.date_time if e.end else None, "tagged": None} for e in (page.value if page else []) or []]

    # -- writes ---------------------------------------------------------------------------------------
    @staticmethod
    def _batch_item(mailbox: str, op: CalendarOp, item_id: str, previous: str | None) -> dict[str, Any]:
        """One JSON batch item, written as the SDK's request builders address it (every reserved character of the
        mailbox and event id percent-encoded, as RFC 6570 simple expansion does), with the payload as rendered.
        (Building each item through the request builders and Kiota's serializer cost more CPU than the rest of a
        write; parsing the payload into the SDK's Event model cost about 50 ms per event.)"""
        events = f"/users/{quote(mailbox, safe='')}/events"
        url = events if op.kind == OpKind.CREATE else f"{events}/{quote(op.event_id or '', safe='')}"
        if op.kind == OpKind.CANCEL:
            url += "/cancel"
        method = {OpKind.CREATE: "POST", OpKind.UPDATE: "PATCH", OpKind.DELETE: "DELETE", OpKind.CANCEL: "POST"}[op.kind]
        item: dict[str, Any] = {"id": item_id, "method": method, "url": url,
                                "headers": {"accept": "application/json", "prefer": IMMUTABLE_IDS}}
        if previous is not None:
            item["dependsOn"] = [previous]
        if op.kind != OpKind.DELETE:
            item["headers"]["content-type"] = "application/json"
            item["body"] = {"Comment": op.comment or ""} if op.kind == OpKind.CANCEL else (op.payload or {})
        return item

    def _batch_request(self, items: list[dict[str, Any]]) -> RequestInformation:
        """POST /$batch through the SDK's request adapter (its auth provider, retry and telemetry middleware)."""
        info = RequestInformation(Method.POST)
        # The URL as it is, not the "{+baseurl}/$batch" template: Kiota expands a template (stduritemplate) each time
        # the URL is read, three times per request, and this one never changes.
        info.url = f"{self.base_url}/$batch"
        info.headers.try_add("Accept", "application/json")
        info.set_stream_content(json.dumps({"requests": items}).encode(), "application/json")
        return info

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]:
        pending = list(ops)
        attempts: dict[str, int] = defaultdict(int)
        results: dict[str, OpResult] = {}
        deadline = time.monotonic() + self.max_wait_s
        while pending:
            chains = [pending[i:i + MAX_BATCH] for i in range(0, len(pending), MAX_BATCH)]
            outcomes = await asyncio.gather(*(self._send_chain(mailbox, chain) for chain in chains))
            retry, wait = [], 0.0
            for chain, (answers, retry_after) in zip(chains, outcomes, strict=True):
                for op in chain:
                    status, code, message, event_id = answers[op.key]
                    attempts[op.key] += 1
                    outcome = classify(status, code, op.kind)
                    if outcome == Outcome.OK and op.kind in (OpKind.DELETE, OpKind.CANCEL):
                        event_id = op.event_id
                    if outcome == Outcome.TRANSIENT and attempts[op.key] < MAX_ATTEMPTS and time.monotonic() < deadline:
                        retry.append(op)
                        wait = max(wait, retry_after.get(op.key, 0.0))
                        continue
                    if outcome == Outcome.MAILBOX_UNAVAILABLE:       # said in the product's words, whatever Graph's code
                        code = mailbox_reason(status, code)
                        message = message if code in TENANT_REASONS else mailbox_reasons.sentence(code)
                    results[op.key] = OpResult(op.key, outcome, event_id, status, code, message)
            if any(r.outcome == Outcome.MAILBOX_UNAVAILABLE for r in results.values()):
                for op in retry:   # the mailbox itself is gone: nothing else will succeed this cycle
                    results[op.key] = OpResult(op.key, Outcome.TRANSIENT, None, None, "mailbox_unavailable", "not attempted")
                break
            pending = retry
            if pending:
                await asyncio.sleep(min(wait or 1.0, max(0.0, deadline - time.monotonic())))
        return results

    async def _send_chain(self, mailbox: str, chain: list[CalendarOp]) -> tuple[dict[str, tuple], dict[str, float]]:
        """One batch whose items run in order: at most one request in flight for the mailbox per chain."""
        ids = {str(index + 1): op.key for index, op in enumerate(chain)}
        items = [self._batch_item(mailbox, op, str(index + 1), str(index) if index else None) for index, op in enumerate(chain)]
        answers: dict[str, tuple] = {}
        retry_after: dict[str, float] = {}
        async with self._slots.hold(mailbox):
            self.http_requests += 1
            try:
                # The SDK's adapter sends the batch (auth, retry middleware); its BatchResponseItem drops JSON item
                # bodies (it reads them as base64 bytes), so the raw answer is parsed here.
                raw = await self.adapter.send_primitive_async(self._batch_request(items), "bytes", {})
            except (APIError, ClientAuthenticationError) as err:
                refused = tenant_refusal(self.tenant, err)
                if refused is not None:
                    return {op.key: (401, refused[0], refused[1], None) for op in chain}, {}
                if isinstance(err, ClientAuthenticationError):
                    raise
                status = err.response_status_code or 503
                return {op.key: (status, error_code(err), "batch refused", None) for op in chain}, {}
            except (TimeoutError, httpx.TransportError) as exc:
                # Applied or not, every item is safe to send again: creates carry their transactionId,
                # and a repeated delete or cancel answers 404, which counts as done.
                return {op.key: (503, "network", type(exc).__name__, None) for op in chain}, {}
        try:
            responses = {str(r.get("id")): r for r in json.loads(raw or b"{}").get("responses", [])}
        except (json.JSONDecodeError, AttributeError):
            responses = {}
        for item_id, key in ids.items():
            answer = responses.get(item_id)
            if answer is None:
                answers[key] = (503, "missing", "no response for this item", None)
                continue
            body = answer.get("body") if isinstance(answer.get("body"), dict) else {}
            error = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
            headers = {str(k).lower(): v for k, v in (answer.get("headers") or {}).items()}
            if "retry-after" in headers:
                try:
                    retry_after[key] = float(headers["retry-after"])
                except ValueError:
                    retry_after[key] = 1.0
            answers[key] = (int(answer.get("status") or 0), error.get("code"), error.get("message"), body.get("id"))
        return answers, retry_after


def _literal(value: str) -> str:
    return value.replace("'", "''")
