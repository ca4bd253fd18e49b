"""BookingSource on the Dataverse Web API, through an azure-core async pipeline.

The pipeline carries a bearer-token policy (scope `{environment}/.default`) and azure-core's retry
policy, which honours Retry-After on 429/503 and backs off exponentially otherwise, within a bounded
total time (E1). Concurrency per environment follows the service's `x-ms-dop-hint`, never above 52 (E2).
Rows become immutable domain objects; a malformed row becomes a SkippedRow with its reason (E3).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.core import AsyncPipelineClient
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import policies
from azure.core.rest import HttpRequest

from ..core.domain import Booking, SkippedRow
from ..core.ids import checked_guid, is_address, is_guid
from ..ports import (
    ChangeSet,
    ChangeTokenExpired,
    ChangeTrackingOff,
    EnvironmentFacts,
    PermanentError,
    ReadResult,
    TransientError,
    UserResource,
)
from .credentials import is_loopback_url
from .dataverse_rows import booking_from_row
from .transport import endpoint_transport, proxies_for

API = "/api/data/v9.2/"
MAX_DOP = 52
ID_BATCH = 125                # ids per `or` filter: URLs near 9 KB, well under the 32 KB Dataverse accepts
MAX_PAGE_SIZE = 5000            # odata.maxpagesize at most (Learn, "Page results using Web API": 5,000 for standard tables)
WINDOW_SLICES = 4               # a window read's slices, read together
EXPIRED_TOKEN_CODES = {"0x80044352"}
# Learn, "Web service error codes": ChangeTrackingNotEnabledForEntity, "Entity {0} isn't enabled for change tracking."
TRACKING_OFF_CODE = "0x80072491"
TRACKING_OFF_ENTITY = re.compile(r"Entity (\S+) isn't enabled for change tracking")
# Characters left as they are when a relative query is encoded: OData syntax, and % because filter
# literals arrive already percent-encoded (filter_literal).
URL_SAFE = "$(),;=/:@%[]?&*"

# Every name the client sends, in one place (tests/contract/test_dataverse_names.py checks them against
# Microsoft's column reference).
ENTITY_SETS = {"bookableresourcebooking": "bookableresourcebookings", "msdyn_workorder": "msdyn_workorders",
               "bookableresource": "bookableresources"}
BOOKING_SELECT = ["bookableresourcebookingid", "name", "starttime", "endtime", "statecode", "modifiedon",
                  "_resource_value", "_bookingstatus_value", "_msdyn_workorder_value",
                  "msdyn_worklocation", "msdyn_latitude", "msdyn_longitude"]
RESOURCE_SELECT = ["name", "resourcetype", "_userid_value"]
USER_SELECT = ["internalemailaddress", "isdisabled"]
STATUS_SELECT = ["name", "status", "msdyn_fieldservicestatus"]
WORK_ORDER_SELECT = ["msdyn_name", "_msdyn_priority_value", "_msdyn_workordertype_value", "_msdyn_primaryincidenttype_value",
                     "msdyn_workordersummary", "_msdyn_serviceaccount_value", "_msdyn_reportedbycontact_value",
                     "_msdyn_serviceterritory_value", "msdyn_addressname", "msdyn_address1", "msdyn_address2", "msdyn_address3",
                     "msdyn_city", "msdyn_stateorprovince", "msdyn_postalcode", "msdyn_country", "msdyn_latitude", "msdyn_longitude"]
# What sync filters name (S5): booking status names, work order type names, territory names. `territories` is the
# standard territory table (primary name `name`); the vendored column reference does not list it.
FILTER_VALUE_SOURCES = {"booking_statuses": ("bookingstatuses", "name"), "work_order_types": ("msdyn_workordertypes", "msdyn_name"),
                        "territories": ("territories", "name")}
NAVIGATIONS = {("bookableresourcebooking", "Resource"), ("bookableresourcebooking", "BookingStatus"),
               ("bookableresourcebooking", "msdyn_workorder"), ("bookableresource", "UserId")}
BOOKING_EXPAND = (f"Resource($select={','.join(RESOURCE_SELECT)};$expand=UserId($select={','.join(USER_SELECT)})),"
                  f"BookingStatus($select={','.join(STATUS_SELECT)}),"
                  f"msdyn_workorder($select={','.join(WORK_ORDER_SELECT)})")


class ReadOnlyRetryPolicy(policies.AsyncRetryPolicy):
    """Retries every request this client sends, POST included: its only POST is a $batch of GETs, which is
    as safe to repeat as the GETs are (azure-core retries POST on 500/503/504 only, not on 429)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._method_whitelist = frozenset(self._method_whitelist | {"POST"})


ANNOTATIONS = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'
TRACKED = (("bookableresourcebookings", "bookableresourcebookingid"), ("msdyn_workorders", "msdyn_workorderid"))


def _collect_changes(changes: ChangeSet, entity: str, key: str, rows: list[dict]) -> None:
    for row in rows:
        if str(row.get("@odata.context", "")).endswith("$deletedEntity"):
            if entity == "bookableresourcebookings" and is_guid(str(row.get("id", ""))):
                changes.deleted_bookings.add(row["id"].lower())
        elif is_guid(str(row.get(key, ""))):
            target = changes.changed_bookings if entity == "bookableresourcebookings" else changes.changed_work_orders
            target.add(row[key].lower())


def parse_batch_response(content_type: str, content: bytes) -> list[tuple[int, dict]]:
    """The parts of a multipart/mixed $batch answer: (status, JSON body) in order."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return []
    answers = []
    for part in content.decode("utf-8", "replace").split("--" + m.group(1))[1:]:
        if part.startswith("--"):
            break
        _, _, inner = part.partition("\r\n\r\n")                 # the part's own headers
        status_line, _, rest = inner.partition("\r\n")
        status = re.match(r"HTTP/1\.1 (\d{3})", status_line)
        _, _, body = rest.partition("\r\n\r\n")
        try:
            payload = json.loads(body.strip()) if body.strip() else {}
        except json.JSONDecodeError:
            payload = {}
        answers.append((int(status.group(1)) if status else 500, payload))
    return answers


# ---- safety: values that enter a URL or a filter -------------------------------------------------

def filter_literal(value: str) -> str:
    """An OData string literal: quotes doubled, then percent-encoded so no character can end the query option."""
    return quote("'" + str(value).replace("'", "''") + "'", safe="")


def odata_datetime(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- results -------------------------------------------------------------------------------------

# ---- mapping -----------------------------------------------------------------------------------------

def _json(response: Any) -> dict:
    try:
        return response.json()
    except Exception:
        return {}


def booking_query(filter_expr: str) -> str:
    return (f"bookableresourcebookings?$select={','.join(BOOKING_SELECT)}&$expand={BOOKING_EXPAND}"
            f"&$filter={filter_expr}")


class DataverseClient:
    """One environment. Async; create it inside the event loop that uses it."""

    def __init__(self, environment_url: str, credential: Any, *, page_size: int = 1000, retry_total: int = 6,
                 retry_timeout: float = 120.0, retry_backoff_max: float = 30.0, transport: Any = None):
        self.environment = environment_url.rstrip("/")
        # Bearer tokens travel over TLS only; the local emulator on loopback is the one exception.
        self._send_options = {"enforce_https": False} if is_loopback_url(self.environment) else {}
        self.page_size = page_size
        self.requests = 0
        self._dop = 4
        self._semaphore = asyncio.Semaphore(self._dop)
        pipeline_policies = [
            policies.HeadersPolicy({"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}),
            policies.UserAgentPolicy(user_agent="fieldservice-outlook-sync"),
            ReadOnlyRetryPolicy(retry_total=retry_total, retry_backoff_factor=0.5, retry_backoff_max=retry_backoff_max,
                                timeout=retry_timeout),
            policies.AsyncBearerTokenCredentialPolicy(credential, f"{self.environment}/.default"),
            policies.ProxyPolicy(proxies=proxies_for(self.environment)),
            policies.NetworkTraceLoggingPolicy(logging_enable=False),
        ]
        self._client: AsyncPipelineClient[HttpRequest, Any] = AsyncPipelineClient(
            base_url=self.environment + API, policies=pipeline_policies, transport=transport or endpoint_transport())

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport ------------------------------------------------------------------------------------
    def _absolute(self, url: str) -> str:
        return url if url.startswith(("http://", "https://")) else self.environment + API + quote(url, safe=URL_SAFE)

    async def _send(self, request: HttpRequest) -> Any:
        """One request through the pipeline, within the environment's degree of parallelism; transport and
        credential failures become the engine's error classes."""
        async with self._semaphore:
            try:
                response = await self._client.send_request(request, **self._send_options)
                await response.read()
            except ClientAuthenticationError as exc:
                raise PermanentError(f"could not get a token for environment {self.environment}: {exc.message}",
                                     code="auth_failed") from exc
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TransientError(f"environment {self.environment} did not answer: {type(exc).__name__}", code="network") from exc
            self.requests += 1
        self._adjust_dop(response.headers.get("x-ms-dop-hint"))
        return response

    async def _get(self, url: str, prefer: list[str]) -> dict:
        request = HttpRequest("GET", self._absolute(url), headers={"Prefer": ",".join(prefer)} if prefer else None)
        response = await self._send(request)
        return self._answer(response.status_code, _json(response), response.reason)

    def _answer(self, status: int, body: dict, reason: str | None = None) -> dict:
        if status == 200:
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code, message = error.get("code", ""), error.get("message", reason or "")
        if code in EXPIRED_TOKEN_CODES:
            raise ChangeTokenExpired(message)
        if code == TRACKING_OFF_CODE:
            named = TRACKING_OFF_ENTITY.search(message or "")
            raise ChangeTrackingOff(named.group(1) if named else "")
        if status == 429 or status >= 500:
            raise TransientError(f"environment {self.environment} answered {status} after retries: {code}", code=f"http_{status}")
        if status in (401, 403):
            raise PermanentError(f"environment {self.environment} refused the app's identity ({status}); "
                                 "check its application user and security role", code="access_denied")
        raise PermanentError(f"environment {self.environment} rejected a request ({status} {code}): {message}", code=f"http_{status}")

    async def _batch_get(self, parts: list[tuple[str, list[str]]]) -> list[dict]:
        """Several GETs in one OData $batch request (answers in order); each answer is checked like a GET's."""
        boundary = f"batch_{uuid.uuid4()}"
        lines: list[str] = []
        for url, prefer in parts:
            lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "",
                      f"GET {self._absolute(url)} HTTP/1.1", "Accept: application/json",
                      *([f"Prefer: {','.join(prefer)}"] if prefer else []), "", ""]
        lines.append(f"--{boundary}--")
        # Without continue-on-error Dataverse stops at the first failing part and answers the batch with its error
        # (Learn: "Execute batch operations using the Web API", Handling errors); with it, every part is answered.
        request = HttpRequest("POST", self.environment + API + "$batch", content="\r\n".join(lines).encode(),
                              headers={"Content-Type": f"multipart/mixed; boundary={boundary}", "Accept": "application/json",
                                       "Prefer": "odata.continue-on-error"})
        response = await self._send(request)
        answers = parse_batch_response(response.headers.get("Content-Type", ""), response.content)
        if response.status_code != 200:
            failing = next(((status, body) for status, body in answers if status >= 400), None)
            status, body = failing or (response.status_code, _json(response))
            self._answer(status, body, response.reason)
        if len(answers) != len(parts):
            raise TransientError(f"environment {self.environment} answered {len(answers)} of {len(parts)} batched requests", code="batch")
        out = []
        for (url, prefer), (status, body) in zip(parts, answers, strict=True):
            if status == 429 or status >= 500:           # a throttled or failed part is sent again alone, through the retry policy
                out.append(await self._get(url, prefer))
            else:
                out.append(self._answer(status, body))     # an expired change token raises ChangeTokenExpired (T4)
        return out

    def _adjust_dop(self, hint: str | None) -> None:
        if hint and hint.isdigit():
            dop = max(1, min(MAX_DOP, int(hint)))
            if dop != self._dop:
                self._dop = dop
                self._semaphore = asyncio.Semaphore(dop)

    async def _pages(self, url: str, prefer: list[str], page_size: int | None = None) -> tuple[list[dict], dict]:
        rows: list[dict] = []
        prefer = [*prefer, f"odata.maxpagesize={page_size or self.page_size}"]
        while True:
            body = await self._get(url, prefer)
            rows.extend(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return rows, body
            url = next_link

    async def _read(self, filter_expr: str) -> ReadResult:
        rows, _ = await self._pages(booking_query(filter_expr), [ANNOTATIONS])
        return self._map(rows)

    def _map(self, rows: list[dict]) -> ReadResult:
        result = ReadResult()
        for row in rows:
            mapped = booking_from_row(row, self.environment)
            if isinstance(mapped, SkippedRow):
                result.skipped.append(mapped)
            else:
                result.bookings.append(mapped)
        return result

    # -- reads ---------------------------------------------------------------------------------------------
    async def read_window(self, start: datetime, end: datetime) -> ReadResult:
        """Bookings overlapping [start, end), whatever their state (inactive ones matter for D3). Read in WINDOW_SLICES
        slices by start time, together: a page follows its nextLink only after the one before, so one query of a
        large window waited for every page in turn. The slices are disjoint (each booking is in the one its start
        falls in, the first also holding those that started before the window)."""
        bounds = [start + (end - start) * i / WINDOW_SLICES for i in range(WINDOW_SLICES + 1)]
        overlaps = f"endtime gt {odata_datetime(start)}"
        filters = [f"starttime lt {odata_datetime(bounds[1])} and {overlaps}"] + [
            f"starttime ge {odata_datetime(low)} and starttime lt {odata_datetime(high)} and {overlaps}"
            for low, high in itertools.pairwise(bounds[1:])]
        result = ReadResult()
        for part in await asyncio.gather(*(self._read(f) for f in filters)):
            result.extend(part)
        return result

    async def read_window_for(self, start: datetime, end: datetime, mailboxes: Iterable[str]) -> ReadResult:
        """By the mailboxes' user resources (`_resource_value eq ... or ...`, 50 a request, together): onboarding a few
        technicians reads their bookings, not every booking of the organisation's window."""
        wanted = {m.lower() for m in mailboxes}
        resources = [r.resource_id for r in await self.list_user_resources() if r.mailbox in wanted]
        window = f"starttime lt {odata_datetime(end)} and endtime gt {odata_datetime(start)}"
        return await self._read_in("_resource_value", resources, window) if resources else ReadResult()

    async def read_bookings(self, ids: Iterable[str]) -> ReadResult:
        return await self._read_in("bookableresourcebookingid", ids)

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime) -> ReadResult:
        window = f"starttime lt {odata_datetime(end)} and endtime gt {odata_datetime(start)}"
        return await self._read_in("_msdyn_workorder_value", work_order_ids, window)

    async def _read_in(self, prop: str, ids: Iterable[str], extra: str | None = None) -> ReadResult:
        checked = sorted({checked_guid(i) for i in ids})
        batches = [checked[i:i + ID_BATCH] for i in range(0, len(checked), ID_BATCH)]

        async def one(batch: list[str]) -> ReadResult:
            # `prop eq <guid> or ...`: the documented form for lookup values (_x_value) too; query functions such as
            # Microsoft.Dynamics.CRM.In take a column's PropertyName, which a lookup's _x_value is not. The GUIDs are
            # checked above and go unquoted, as OData GUID literals do. Learn ("Compose HTTP requests and handle
            # errors") sets the URL limit at 32 KB; 125 GUIDs make about 9 KB, so a cycle's 500 changed bookings are
            # 4 requests, one round at the usual dop hint.
            expr = "(" + " or ".join(f"{prop} eq {v}" for v in batch) + ")"
            return await self._read(f"{expr} and {extra}" if extra else expr)

        result = ReadResult()
        for part in await asyncio.gather(*(one(b) for b in batches)):
            result.extend(part)
        return result

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None:
        result = await self.read_bookings([booking_id])
        return (result.bookings or result.skipped or [None])[0]

    async def read_changes(self, delta_links: dict[str, str] | None) -> ChangeSet:
        """Ids that changed since the delta links (change tracking rejects $filter/$expand/$top, so ids only).

        Without delta links this starts tracking: the answer lists every row, and the caller reads the window."""
        changes = ChangeSet()
        links = [(delta_links or {}).get(entity) for entity, _ in TRACKED]
        # Rows of ids only: in pages of the most Dataverse gives (starting to track lists every row of the table)
        answers = await asyncio.gather(*(self._pages(link or f"{entity}?$select={key}", ["odata.track-changes"], MAX_PAGE_SIZE)
                                         for (entity, key), link in zip(TRACKED, links, strict=True)))     # independent feeds
        for (entity, key), link, (rows, last) in zip(TRACKED, links, answers, strict=True):
            # Nothing changed since `link`: Dataverse may answer an empty JSON object, without a new delta link (Learn,
            # "Use change tracking to synchronize data with external systems"); the link asked with still holds.
            kept = last.get("@odata.deltaLink") or link
            if kept is None:
                raise PermanentError(f"environment {self.environment} started change tracking for {entity} without a delta link",
                                     code="no_delta_link")
            changes.delta_links[entity] = kept
            if link is not None:
                _collect_changes(changes, entity, key, rows)
        changes.changed_bookings -= changes.deleted_bookings
        return changes

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None, slice_end: datetime) -> tuple[ChangeSet,
                                                                                                                        ReadResult]:
        """A cycle's reads in one $batch request: changes to bookings and to work orders since the delta links,
        and the bookings of the slice of time that entered the window. Further pages, if any, follow one by one."""
        # Change-feed rows hold ids only (the tracking link's $select): in pages of the most Dataverse gives, as when
        # tracking starts. A cycle of more changes than a booking page then still reads them in its one request.
        prefer_track = ["odata.track-changes", f"odata.maxpagesize={MAX_PAGE_SIZE}"]
        parts = [(delta_links[entity], prefer_track) for entity, _ in TRACKED]
        window_filter = None
        if slice_start is not None and slice_end > slice_start:
            window_filter = f"starttime lt {odata_datetime(slice_end)} and endtime gt {odata_datetime(slice_start)}"
            parts.append((booking_query(window_filter), [ANNOTATIONS, f"odata.maxpagesize={self.page_size}"]))
        answers = await self._batch_get(parts)
        changes = ChangeSet()
        for (entity, key), body in zip(TRACKED, answers, strict=False):
            rows = list(body.get("value", []))
            while body.get("@odata.nextLink"):
                body = await self._get(body["@odata.nextLink"], prefer_track)
                rows.extend(body.get("value", []))
            changes.delta_links[entity] = body.get("@odata.deltaLink") or delta_links[entity]   # {} when nothing changed
            _collect_changes(changes, entity, key, rows)
        changes.changed_bookings -= changes.deleted_bookings
        result = ReadResult()
        if window_filter is not None:
            body = answers[-1]
            rows = list(body.get("value", []))
            while body.get("@odata.nextLink"):
                body = await self._get(body["@odata.nextLink"], [ANNOTATIONS, f"odata.maxpagesize={self.page_size}"])
                rows.extend(body.get("value", []))
            result = self._map(rows)
        return changes, result

    async def environment_facts(self) -> EnvironmentFacts:
        """The application user the app's identity signs in as (WhoAmI), then whether each table the sync reads changes
        from has change tracking on (T5), from its definition (EntityDefinitions)."""
        user = str((await self._get("WhoAmI", []))["UserId"])
        names = {"bookableresourcebookings": "bookableresourcebooking", "msdyn_workorders": "msdyn_workorder"}
        tracking = {}
        for entity, _ in TRACKED:
            body = await self._get(f"EntityDefinitions(LogicalName='{names[entity]}')?$select=ChangeTrackingEnabled", [])
            tracking[names[entity]] = bool(body.get("ChangeTrackingEnabled"))
        return EnvironmentFacts(user, tracking)

    async def dynamics_synced(self) -> set[str]:
        # Learn, "Mailbox table/entity reference": actdeliverymethod 1 is Server-Side Synchronization, actstatus 1 Success.
        rows, _ = await self._pages("mailboxes?$select=emailaddress&$filter=actdeliverymethod eq 1 and actstatus eq 1", [])
        return {str(r["emailaddress"]).strip().lower() for r in rows if r.get("emailaddress")}

    async def filter_values(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for field, (entity_set, column) in FILTER_VALUE_SOURCES.items():
            rows, _ = await self._pages(f"{entity_set}?$select={column}", [])
            found[field] = {str(r[column]) for r in rows if r.get(column)}
        return found

    async def list_user_resources(self) -> list[UserResource]:
        url = (f"bookableresources?$select={','.join(RESOURCE_SELECT)}&$filter=resourcetype eq 3"
               f"&$expand=UserId($select={','.join(USER_SELECT)})")
        rows, _ = await self._pages(url, [])
        out = []
        for row in rows:
            user = row.get("UserId") or {}
            address = (user.get("internalemailaddress") or "").strip().lower() or None
            valid = address is not None and is_address(address)
            out.append(UserResource(row["bookableresourceid"], row.get("_userid_value"), address if valid else None,
                                    bool(user.get("isdisabled")), invalid_address=address is not None and not valid))
        return out
