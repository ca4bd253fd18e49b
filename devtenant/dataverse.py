"""Emulated Dataverse Web API (v9.2) for the tables the sync reads.

Answers like the documented service (shared/reference/dataverse/examples): `$select`, `$filter`,
`$expand` of single-valued navigation properties, `$orderby`, `$top`, formatted-value and lookup
annotations on request, paging with `Prefer: odata.maxpagesize` and `@odata.nextLink`, change tracking
with `@odata.deltaLink` and `$deletedEntity` rows, `x-ms-dop-hint`, service-protection 429s and 401
without a bearer token. An org is addressed as `/api/data/v9.2/...` (org "default") or
`/orgs/{org}/api/data/v9.2/...`.
"""
from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from aiohttp import web

from . import odata
from .schema import DATAVERSE, Table
from .tenant import DataverseOrg, Tenant, redacted, utcnow

API = "/api/data/v9.2"
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAV_ANNOTATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
MAX_PAGE = 5000
RESULT_SETS_KEPT = 32                 # paged lists whose matching rows are kept for their next pages
TRACKING_UNSUPPORTED = ("$filter", "$orderby", "$expand", "$top")
QUERY_SAFE = ",()=$/:'@"
# Learn, "Compose HTTP requests and handle errors", Maximum URL length: 32 KB (32,768 characters) for a request,
# 64 KB (65,536) for a request inside a $batch body. What the service answers past them is not documented; the
# emulator answers 414 URI Too Long (a guess: IIS may answer 404.15 instead). The product keeps its URLs near
# 9 KB (sync/adapters/dataverse.py ID_BATCH), so either answer would only show a bug.
MAX_URL, MAX_BATCH_URL = 32_768, 65_536


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(err: DataverseError, dop_hint: int | None = None) -> web.Response:
    headers = {"OData-Version": "4.0", **err.headers}
    if dop_hint:
        headers["x-ms-dop-hint"] = str(dop_hint)
    return web.json_response({"error": {"code": err.code, "message": err.message}}, status=err.status, headers=headers)


def _url_too_long(limit: int) -> DataverseError:
    return DataverseError(414, "0x80048d19", f"The request URL is longer than the {limit:,} characters allowed.")


def _property_error(table: Table, name: str) -> DataverseError:
    return DataverseError(400, "0x80060888",
                          f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical_name}'.")


def parse_prefer(header: str | None) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for part in odata.split_top_level(header or "", ","):
        key, _, value = part.partition("=")
        prefs[key.strip().lower()] = value.strip().strip('"')
    return prefs


def _format_datetime(value: str) -> str:
    dt = odata.parse_datetime(value)
    hour = dt.hour % 12 or 12
    return f"{dt.month}/{dt.day}/{dt.year} {hour}:{dt.minute:02d} {'AM' if dt.hour < 12 else 'PM'}"


class Query:
    """Evaluates one collection or single-row request against an org."""

    def __init__(self, org: DataverseOrg, table: Table, base_url: str, annotations: str | None):
        self.org, self.table, self.base_url = org, table, base_url
        self.annotations = annotations or ""
        self._wanted: dict[str, bool] = {}               # per annotation: asked once per request, not once per value

    def wants(self, annotation: str) -> bool:
        known = self._wanted.get(annotation)
        if known is None:
            wanted = [a.strip() for a in self.annotations.split(",") if a.strip()]
            known = self._wanted[annotation] = any(
                pattern == "*" or pattern == annotation or (pattern.endswith(".*") and annotation.startswith(pattern[:-1]))
                for pattern in wanted)
        return known

    # --- projection ---------------------------------------------------------------------------
    def project(self, table: Table, row: dict, select: list[str] | None, expand: list[odata.ExpandItem]) -> dict:
        names = select if select is not None else sorted(k for k in row if k in table.web_api_properties)
        for name in names:
            if name not in table.web_api_properties:
                raise _property_error(table, name)
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["versionnumber"]}"'}
        for name in names:
            value = row.get(name)
            self._annotate(table, name, value, out)
            out[name] = value
        out[table.primary_id] = row[table.primary_id]
        for item in expand:
            nav = table.navigations.get(item.name)
            if nav is None:
                raise _property_error(table, item.name)
            target_table = DATAVERSE.tables[nav.target]
            target_id = row.get(nav.lookup_property)
            target = self.org.rows[nav.target].get(str(target_id).lower()) if target_id else None
            out[item.name] = self.project(target_table, target, item.select, item.expand) if target else None
        return out

    def _annotate(self, table: Table, name: str, value: Any, out: dict) -> None:
        if value is None:
            return
        col = table.column_for_property(name) or {}
        ctype = col.get("type")
        formatted = None
        if name.startswith("_") and name.endswith("_value"):
            targets = col.get("targets") or []
            target = next((t for t in targets if str(value).lower() in self.org.rows.get(t, {})), targets[0] if targets else None)
            if target and target in self.org.rows:
                trow = self.org.rows[target].get(str(value).lower())
                if trow:
                    formatted = trow.get(DATAVERSE.tables[target].primary_name)
            if target and self.wants(LOOKUP_LOGICAL):
                out[f"{name}@{LOOKUP_LOGICAL}"] = target
            nav = table.navigation_by_lookup.get(name)
            if nav and self.wants(NAV_ANNOTATION):
                out[f"{name}@{NAV_ANNOTATION}"] = nav
        elif ctype in ("Picklist", "State", "Status"):
            formatted = DATAVERSE.option_label(table.logical_name, name, value)
        elif ctype == "Boolean":
            formatted = "Yes" if value else "No"
        elif ctype == "DateTime":
            formatted = _format_datetime(value)
        elif ctype in ("Integer", "BigInt", "Double", "Decimal", "Money"):
            formatted = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        if formatted is not None and self.wants(FORMATTED):
            out[f"{name}@{FORMATTED}"] = formatted

    # --- filtering ----------------------------------------------------------------------------
    def resolver(self, table: Table, row: dict):
        def resolve(parts: list[str]) -> Any:
            current_table, current = table, row
            for i, part in enumerate(parts):
                if current is None:
                    return None
                if i < len(parts) - 1:
                    nav = current_table.navigations.get(part)
                    if nav is None:
                        raise _property_error(current_table, part)
                    target_id = current.get(nav.lookup_property)
                    current = self.org.rows[nav.target].get(str(target_id).lower()) if target_id else None
                    current_table = DATAVERSE.tables[nav.target]
                else:
                    if part not in current_table.web_api_properties:
                        raise _property_error(current_table, part)
                    return current.get(part)
            return None
        return resolve

    def functions(self, table: Table) -> dict:
        def in_(resolve, PropertyName=None, PropertyValues=None):
            if PropertyName is None or PropertyValues is None:
                raise odata.ODataSyntaxError("Microsoft.Dynamics.CRM.In requires PropertyName and PropertyValues.")
            name = str(PropertyName)
            if re.fullmatch(r"_\w+_value", name):
                # Query functions name a column (the lookup's logical name), never the lookup's _x_value property:
                # Dataverse answers such a request with this 400 (seen in the field for Microsoft.Dynamics.CRM.In).
                raise DataverseError(400, "0x80041103", f"'{table.logical_name}' entity doesn't contain attribute with Name = '{name}'.")
            value = resolve(name.split("/"))
            wanted = {str(v).lower() for v in PropertyValues}
            return value is not None and str(value).lower() in wanted

        def not_in(resolve, PropertyName=None, PropertyValues=None):
            return not in_(resolve, PropertyName, PropertyValues)

        return {**odata.BASIC_FUNCTIONS, "microsoft.dynamics.crm.in": in_, "microsoft.dynamics.crm.notin": not_in}

    def validate(self, expr: Any) -> None:
        """Refuses a filter naming what the table does not have before any row is read, as Dataverse validates a query
        against the table's metadata: on an empty table too (an error found only while matching rows would answer an
        empty table's query with 200)."""
        no_row: dict = {}
        check = self.resolver(self.table, no_row)
        try:
            for parts in odata.referenced_paths(expr):
                self._check_path(parts)
            for call in odata.calls(expr):
                odata.evaluate(call, check, self.functions(self.table))
        except odata.ODataSyntaxError as exc:
            raise DataverseError(400, "0x80060888", str(exc)) from exc

    def _check_path(self, parts: list[str]) -> None:
        table = self.table
        for i, part in enumerate(parts):
            if i < len(parts) - 1:
                nav = table.navigations.get(part)
                if nav is None:
                    raise _property_error(table, part)
                table = DATAVERSE.tables[nav.target]
            elif part not in table.web_api_properties and part not in table.navigations:
                raise _property_error(table, part)

    def matches(self, expr: Any, row: dict) -> bool:
        try:
            return bool(odata.evaluate(expr, self.resolver(self.table, row), self.functions(self.table)))
        except odata.ODataSyntaxError as exc:
            raise DataverseError(400, "0x80060888", str(exc)) from exc

    def matching(self, expr: Any, rows: list[dict]) -> list[dict]:
        """The rows `expr` matches, as `matches` tells each, with the filter worked out once for all of them."""
        test = odata.compiled(expr, self.functions(self.table))
        try:
            return [row for row in rows if test(self.resolver(self.table, row))]
        except odata.ODataSyntaxError as exc:
            raise DataverseError(400, "0x80060888", str(exc)) from exc


def _validate_shape(table: Table, select: list[str] | None, expand: list[odata.ExpandItem]) -> None:
    for name in select or []:
        if name not in table.web_api_properties:
            raise _property_error(table, name)
    for item in expand:
        nav = table.navigations.get(item.name)
        if nav is None:
            raise _property_error(table, item.name)
        _validate_shape(DATAVERSE.tables[nav.target], item.select, item.expand)


def _query_params(request: web.Request) -> dict[str, str]:
    # Dataverse accepts query option names case-sensitively as $select etc.; keep raw values.
    return {k: v for k, v in request.query.items()}


def _paging_cookie(page: int, last: str | None, tracking_version: int | None) -> str:
    inner = f'<cookie page="{page}"><id last="{{{(last or "").upper()}}}" /></cookie>'
    tracking = "True" if tracking_version is not None else "False"
    cookie = (f'<cookie pagenumber="{page + 1}" pagingcookie="{quote(quote(inner, safe=""), safe="")}" '
              f'istracking="{tracking}"' + (f' trackingversion="{tracking_version}"' if tracking_version is not None else "") + " />")
    return quote(cookie, safe="")


def _parse_paging_cookie(token: str) -> tuple[int, int | None]:
    text = unquote(token)
    page = re.search(r'pagenumber="(\d+)"', text)
    version = re.search(r'trackingversion="(\d+)"', text)
    if not page:
        raise DataverseError(400, "0x80040203", "Invalid $skiptoken.")
    return int(page.group(1)), int(version.group(1)) if version else None


def _delta_token(version: int) -> str:
    return quote(f"{version}!{utcnow().strftime('%m/%d/%Y %H:%M:%S')}", safe="")


def _parse_delta_token(token: str) -> int:
    m = re.match(r"(\d+)!", unquote(token))
    if not m:
        raise DataverseError(400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync.")
    return int(m.group(1))


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}T.*", value):
        return (2, odata.parse_datetime(value).timestamp())
    return (3, str(value).lower())


class DataverseService:
    def __init__(self, tenant: Tenant):
        self.tenant = tenant

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", API + "/{path:.*}", self.handle),
            web.route("*", "/orgs/{org}" + API + "/{path:.*}", self.handle),
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        org = self.tenant.org(request.match_info.get("org", "default"))
        base = str(request.url.origin()) + request.path[: request.path.index(API) + len(API)]
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return web.Response(status=401, headers={
                "WWW-Authenticate": f"Bearer authorization_uri=https://login.microsoftonline.com/{self.tenant.graph.tenant_id}/oauth2/authorize, resource_id={request.url.origin()}/"})
        if len(request.raw_path) > MAX_URL:
            return error_response(_url_too_long(MAX_URL), org.dop_hint)
        wait = org.admit()
        if wait is not None:
            self.tenant.log.add(service="dataverse", kind="http", method=request.method, path=request.path, status=429, mailbox=None)
            return error_response(DataverseError(429, "0x80072322",
                                                 f"Number of requests exceeded the limit of {org.request_budget} over time window of {int(org.budget_window_s)} seconds.",
                                                 {"Retry-After": str(round(wait))}), org.dop_hint)
        if org.inflight >= org.max_concurrent:
            return error_response(DataverseError(429, "0x80072326",
                                                 f"Number of concurrent requests exceeded the limit of {org.max_concurrent}.",
                                                 {"Retry-After": "1"}), org.dop_hint)
        org.inflight += 1
        self.tenant.log.max_concurrency_dataverse = max(self.tenant.log.max_concurrency_dataverse, org.inflight)
        try:
            fault = self.tenant.fault_for("dataverse", request.method, request.path)
            latency = self.tenant.latency("dataverse") + (fault.delay_ms if fault and fault.action == "latency" else 0)
            if latency:
                await asyncio.sleep(latency / 1000)
            if fault is not None and fault.action == "status":
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                raise DataverseError(fault.status, fault.code or "0x80040216", "An unexpected error occurred (injected).", headers)
            if request.method == "POST" and request.match_info["path"] == "$batch":
                raw = await request.read()
                response = self.batch(org, base, request.headers.get("Content-Type", ""), raw,
                                      "odata.continue-on-error" in parse_prefer(request.headers.get("Prefer")))
                self.tenant.log.add(service="dataverse", kind="http", method="POST-BATCH", path=request.path, status=response.status,
                                    mailbox=None, query=request.query_string, headers=redacted(request.headers),
                                    body=raw.decode("utf-8", "replace"), response=response.text)
                return response
            if request.method != "GET":
                raise DataverseError(405, "0x80060888", f"The HTTP method '{request.method}' is not supported by the emulator for this resource; change data through the control API.")
            body, headers = self.get(org, base, request.match_info["path"], _query_params(request), parse_prefer(request.headers.get("Prefer")))
            headers.update({"OData-Version": "4.0", "x-ms-dop-hint": str(org.dop_hint)})
            self.tenant.log.add(service="dataverse", kind="http", method=request.method, path=request.path, status=200, mailbox=None,
                                query=request.query_string, headers=redacted(request.headers), body=None, response=body)
            if fault is not None and fault.action == "drop_after_apply":
                request.transport.abort()
                raise asyncio.CancelledError()
            return web.json_response(body, headers=headers)
        except DataverseError as err:
            self.tenant.log.add(service="dataverse", kind="http", method=request.method, path=request.path, status=err.status, mailbox=None,
                                query=request.query_string, headers=redacted(request.headers), response={"error": {"code": err.code}})
            return error_response(err, org.dop_hint)
        finally:
            org.inflight -= 1

    def batch(self, org: DataverseOrg, base: str, content_type: str, body: bytes, continue_on_error: bool = False) -> web.Response:
        """OData $batch of GET requests (no change sets): run in order, answered in order, as Dataverse does.

        Microsoft Learn, "Execute batch operations using the Web API", Handling errors: "When an error occurs for a
        request within a batch, the error for that request will be returned for the batch request and more requests
        won't be processed"; with `Prefer: odata.continue-on-error` "the batch request will return 200 OK and
        individual response errors will be returned in the batch response body". The documented example shows a
        failing first request answered `400` with that one part. Where an earlier part succeeded the page is silent:
        the emulator answers the parts processed so far, the failing one last, under the failing part's status (the
        product sends continue-on-error and reads any answer part by part, so either shape works)."""
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        if not content_type.startswith("multipart/mixed") or not m:
            raise DataverseError(400, "0x80048d19", "The batch request must be multipart/mixed with a boundary.")
        chunks = body.decode("utf-8", "replace").split("--" + m.group(1))
        parts = [c for c in chunks[1:] if not c.startswith("--") and c.strip()]
        if len(parts) > 1000:
            raise DataverseError(400, "0x80048d19", "A batch request can contain at most 1000 requests.")
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        answers = []
        failed_status = None
        for part in parts:
            _, _, inner = part.partition("\r\n\r\n")
            request_line, _, rest = inner.partition("\r\n")
            headers = dict(line.split(": ", 1) for line in rest.split("\r\n\r\n")[0].split("\r\n") if ": " in line)
            method, _, url = request_line.partition(" ")
            url = url.rsplit(" HTTP/", 1)[0]
            status, payload = 200, {}
            try:
                if method != "GET":
                    raise DataverseError(405, "0x80060888", "The emulator's $batch accepts GET requests only.")
                if len(url) > MAX_BATCH_URL:
                    raise _url_too_long(MAX_BATCH_URL)
                item_fault = self.tenant.fault_for("dataverse-item", method, urlsplit(url).path)
                if item_fault is not None and item_fault.action == "status":
                    raise DataverseError(item_fault.status, item_fault.code or "0x80040216", "An unexpected error occurred (injected).")
                split = urlsplit(url)
                path = split.path[split.path.index(API) + len(API) + 1:] if API in split.path else split.path.lstrip("/")
                payload, _ = self.get(org, base, path, dict(parse_qsl(split.query, keep_blank_values=True)), parse_prefer(headers.get("Prefer")))
            except DataverseError as err:
                status, payload = err.status, {"error": {"code": err.code, "message": err.message}}
            split_url = urlsplit(url)
            self.tenant.log.add(service="dataverse", kind="batch-item", method=method, path=split_url.path, status=status, mailbox=None,
                                query=split_url.query, headers=redacted(headers), body=None, response=payload)
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long", 429: "Too Many Requests"}.get(status, "Error")
            answers.append(f"--{out_boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                           f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n"
                           f"{json.dumps(payload)}\r\n")
            if status >= 400 and not continue_on_error:
                failed_status = status                               # "more requests won't be processed"
                break
        text = "".join(answers) + f"--{out_boundary}--\r\n"
        applied = {"Preference-Applied": "odata.continue-on-error"} if continue_on_error else {}
        return web.Response(body=text.encode(), status=failed_status or 200, headers={**applied, "Content-Type": f"multipart/mixed; boundary={out_boundary}",
                                                                       "OData-Version": "4.0", "x-ms-dop-hint": str(org.dop_hint)})

    def get(self, org: DataverseOrg, base: str, path: str, params: dict, prefs: dict) -> tuple[dict, dict]:
        """A GET: WhoAmI, a read by key, or a list (a query, a page of one, or a change-tracking delta)."""
        if path == "WhoAmI":
            return ({"@odata.context": f"{base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                     "BusinessUnitId": "00000000-0000-0000-0000-000000000001", "UserId": "00000000-0000-0000-0000-0000000000a1",
                     "OrganizationId": "00000000-0000-0000-0000-0000000000f1"}, {})
        definition = re.fullmatch(r"EntityDefinitions\(LogicalName='(\w+)'\)", path)
        if definition:
            # Learn, "Use change tracking to synchronize data with external systems" and "Query table definitions using
            # the Web API": EntityDefinitions(LogicalName='x')?$select=ChangeTrackingEnabled.
            name = definition.group(1)
            if name not in org.rows:
                raise DataverseError(404, "0x80060888", f"Could not find an entity with LogicalName = '{name}'.")
            return ({"@odata.context": f"{base}/$metadata#EntityDefinitions(ChangeTrackingEnabled)/$entity",
                     "ChangeTrackingEnabled": name not in org.untracked, "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, name))}, {})
        m = re.fullmatch(r"(\w+)(?:\(([^)]*)\))?", path)
        table = DATAVERSE.by_entity_set.get(m.group(1)) if m else None
        if m is None or table is None:
            raise DataverseError(404, "0x80060888", f"Resource not found for the segment '{path.split('(')[0]}'.")
        annotations = prefs.get("odata.include-annotations")
        query = Query(org, table, base, annotations)
        headers: dict[str, str] = {}
        if annotations:
            headers["Preference-Applied"] = f'odata.include-annotations="{annotations}"'
        select = odata.parse_select(params.get("$select"))
        try:
            expand = odata.parse_expand(params.get("$expand"))
        except odata.ODataSyntaxError as exc:
            raise DataverseError(400, "0x80060888", str(exc)) from exc
        _validate_shape(table, select, expand)
        if m.group(2) is not None:
            return self._read_by_key(org, base, table, query, m.group(2), select, expand), headers
        return self._list(org, base, table, query, params, prefs, select, expand, headers)

    @staticmethod
    def _read_by_key(org: DataverseOrg, base: str, table: Table, query: Query, raw_key: str, select: list[str] | None,
                     expand: list[odata.ExpandItem]) -> dict:
        key = raw_key.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", key):
            raise DataverseError(400, "0x80060888", f"Bad Request - Error in query syntax: invalid key '{raw_key}'.")
        row = org.rows[table.logical_name].get(key)
        if row is None:
            raise DataverseError(404, "0x80040217", f"{table.logical_name} With Id = {key} Does Not Exist")
        context_cols = f"({','.join(select)})" if select else ""
        return {"@odata.context": f"{base}/$metadata#{table.entity_set}{context_cols}/$entity", **query.project(table, row, select, expand)}

    def _list(self, org: DataverseOrg, base: str, table: Table, query: Query, params: dict, prefs: dict, select: list[str] | None,
              expand: list[odata.ExpandItem], headers: dict[str, str]) -> tuple[dict, dict]:
        tracking = "odata.track-changes" in prefs or "$deltatoken" in params
        if tracking and table.logical_name in org.untracked:
            # Learn, "Web service error codes": ChangeTrackingNotEnabledForEntity, 0x80072491, "Entity {0} isn't
            # enabled for change tracking." The page gives no HTTP status; 400 is a guess, and the product reads the code.
            raise DataverseError(400, "0x80072491", f"Entity {table.logical_name} isn't enabled for change tracking.")
        if tracking:
            for option in TRACKING_UNSUPPORTED:
                if option in params:
                    raise DataverseError(400, "0x80060888", f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')
        page_size = _page_size(prefs, headers)
        if tracking:
            headers["Preference-Applied"] = ", ".join(filter(None, [headers.get("Preference-Applied"), "odata.track-changes"]))
        page, start_version = _parse_paging_cookie(params["$skiptoken"]) if "$skiptoken" in params else (1, None)
        current = start_version if start_version is not None else org.version
        delta = "$deltatoken" in params
        # The next pages of a list reuse the rows its first page matched while no row changed (the org's version is
        # in the key): filtering and ordering the whole table again for every page made a paged read of a large
        # table cost rows x pages. A write in between makes the next page match afresh, as before.
        result_key = (table.logical_name, tuple(sorted((k, v) for k, v in params.items() if k != "$skiptoken")), current, tracking,
                      org.version)
        if result_key in org.result_sets:
            rows, deleted = org.result_sets[result_key]
        else:
            rows, deleted = self._candidates(org, base, table, params, current, tracking)
            rows = _ordered(table, self._filtered(query, params, rows), params.get("$orderby"))
            while len(org.result_sets) >= RESULT_SETS_KEPT:
                org.result_sets.pop(next(iter(org.result_sets)))
            org.result_sets[result_key] = (rows, deleted)
        if "$top" in params and "odata.maxpagesize" not in prefs:
            rows = rows[: int(params["$top"])]
        # Only the page's rows are projected (with their expansions): projecting every row for every page made a
        # paged read of n rows cost n x pages. The answer is the same slice of rows, then $deletedEntity entries.
        offset = (page - 1) * page_size
        chunk: list[dict] = [query.project(table, r, select, expand) for r in rows[offset: offset + page_size]]
        chunk += deleted[max(0, offset - len(rows)): max(0, offset + page_size - len(rows))]
        total = len(rows) + len(deleted)
        context_cols = f"({','.join(select)})" if select else ""
        body: dict[str, Any] = {"@odata.context": f"{base}/$metadata#{table.entity_set}{context_cols}" + ("/$delta" if delta else ""),
                                "value": chunk}
        if offset + page_size < total:
            keep = {k: v for k, v in params.items() if k != "$skiptoken"}
            qs = "&".join(f"{k}={quote(v, safe=QUERY_SAFE)}" for k, v in keep.items())
            cookie = _paging_cookie(page, chunk[-1].get(table.primary_id) or chunk[-1].get("id"), current if tracking else None)
            body["@odata.nextLink"] = f"{base}/{table.entity_set}?{qs + '&' if qs else ''}$skiptoken={cookie}"
        elif delta and total == 0:
            # Learn, "Use change tracking to synchronize data with external systems": "An empty JSON response is returned
            # if no table changes have occurred after the initial change tracking request was called." No delta link:
            # the client keeps the one it asked with.
            return {}, headers
        elif tracking:
            sel = f"$select={params['$select']}&" if "$select" in params else ""
            body["@odata.deltaLink"] = f"{base}/{table.entity_set}?{sel}$deltatoken={_delta_token(current)}"
        return body, headers

    @staticmethod
    def _candidates(org: DataverseOrg, base: str, table: Table, params: dict, current: int, tracking: bool) -> tuple[list[dict], list[dict]]:
        """The rows a list answers from, and the $deletedEntity entries of a delta."""
        if "$deltatoken" not in params:
            rows = list(org.rows[table.logical_name].values())
            return ([r for r in rows if r["versionnumber"] <= current] if tracking else rows), []
        since = _parse_delta_token(params["$deltatoken"])
        if since < org.min_valid_version:
            raise DataverseError(400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync.")
        rows = [r for r in org.rows[table.logical_name].values() if since < r["versionnumber"] <= current]
        deleted = [{"@odata.context": f"{base}/$metadata#{table.entity_set}/$deletedEntity", "id": rid, "reason": "deleted"}
                   for v, rid in org.tombstones[table.logical_name] if since < v <= current]
        return rows, deleted

    @staticmethod
    def _filtered(query: Query, params: dict, rows: list[dict]) -> list[dict]:
        if "$filter" not in params:
            return rows
        try:
            expr = odata.parse_filter(params["$filter"])
        except odata.ODataSyntaxError as exc:
            raise DataverseError(400, "0x80060888", str(exc)) from exc
        query.validate(expr)
        lookup = _values_of_one_property(expr)
        if lookup is None:
            return query.matching(expr, rows)
        # `id eq a or id eq b ...`: only rows holding one of the values can match, and only through the comparisons
        # that name their own value, so each is matched against the filter with the `or` narrowed to those: the same
        # answers, at a cost that no longer grows with the table's rows or the ids per request.
        prop, group, by_value = lookup
        kept = []
        for row in rows:
            named = by_value.get(str(row.get(prop)).lower())
            if named is not None and query.matches(_narrowed(expr, group, named), row):
                kept.append(row)
        return kept


def _or_items(expr: Any) -> list[Any]:
    if isinstance(expr, odata.BoolOp) and expr.op == "or":
        return [leaf for item in expr.items for leaf in _or_items(item)]
    return [expr]


def _values_of_one_property(expr: Any) -> tuple[str, Any, dict[str, list[Any]]] | None:
    """For a filter that is (or, ANDed with anything, contains) `p eq 'x' or p eq 'y' ...` with string literals: the
    property, that `or` node, and its comparisons by lower-cased value. A literal that reads as a date-time is left to
    the full evaluation: it equals other spellings of the same instant, which lower-casing does not see."""
    if isinstance(expr, odata.BoolOp) and expr.op == "and":
        return next((found for item in expr.items if (found := _values_of_one_property(item)) is not None), None)
    prop: str | None = None
    by_value: dict[str, list[Any]] = {}
    for item in _or_items(expr):
        if not (isinstance(item, odata.Compare) and item.op == "eq" and isinstance(item.left, odata.Path) and len(item.left.parts) == 1
                and isinstance(item.right, odata.Literal) and isinstance(item.right.value, str)
                and not odata.DATETIME_TEXT.fullmatch(item.right.value)):
            return None
        if prop not in (None, item.left.parts[0]):
            return None
        prop = item.left.parts[0]
        by_value.setdefault(item.right.value.lower(), []).append(item)
    return (prop, expr, by_value) if prop is not None else None


def _narrowed(expr: Any, group: Any, comparisons: list[Any]) -> Any:
    """`expr` with its node `group` (found among `and` items) replaced by the `or` of `comparisons` alone."""
    if expr is group:
        return comparisons[0] if len(comparisons) == 1 else odata.BoolOp("or", comparisons)
    if isinstance(expr, odata.BoolOp):
        return odata.BoolOp(expr.op, [_narrowed(item, group, comparisons) for item in expr.items])
    return expr


def _page_size(prefs: dict, headers: dict[str, str]) -> int:
    if "odata.maxpagesize" not in prefs:
        return MAX_PAGE
    try:
        page_size = max(1, min(MAX_PAGE, int(prefs["odata.maxpagesize"])))
    except ValueError as exc:
        raise DataverseError(400, "0x80060888", "odata.maxpagesize must be an integer.") from exc
    headers["Preference-Applied"] = ", ".join(filter(None, [headers.get("Preference-Applied"), f"odata.maxpagesize={page_size}"]))
    return page_size


def _ordered(table: Table, rows: list[dict], order: str | None) -> list[dict]:
    rows = sorted(rows, key=lambda r: r[table.primary_id])
    for clause in reversed(odata.split_top_level(order, ",") if order else []):
        name, _, direction = clause.partition(" ")
        if name not in table.web_api_properties:
            raise _property_error(table, name)
        rows.sort(key=lambda r, n=name: _sort_key(r.get(n)), reverse=direction.strip().lower() == "desc")
    return rows

