"""Emulated Microsoft Graph v1.0: the calendar surface of a user's mailbox, and JSON batching.

Shapes follow Microsoft's reference (shared/reference/graph): event properties are validated against
the OpenAPI subset (unknown property -> 400 RequestBodyRead), errors carry `error.code`, `message` and
`innerError`. Outlook's limits are enforced per mailbox: more than 4 concurrent requests -> 429
ApplicationThrottled (MailboxConcurrency) with Retry-After, and a request budget per 10 minutes.
Batch items count against their mailbox one by one, as in the real service.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web

from . import odata
from .schema import GRAPH
from .tenant import HOME_TENANT, FaultRule, Mailbox, Tenant, iso, redacted, scope_now, token_tenant, utcnow

WINDOWS_ZONES = {
    "utc": "UTC", "pacific standard time": "America/Los_Angeles", "mountain standard time": "America/Denver",
    "central standard time": "America/Chicago", "eastern standard time": "America/New_York",
    "gmt standard time": "Europe/London", "w. europe standard time": "Europe/Berlin",
    "romance standard time": "Europe/Paris", "aus eastern standard time": "Australia/Sydney",
}
EVENT_TYPE = "microsoft.graph.event"
MAX_BATCH = 20
DEFAULT_PAGE = 10


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_body(code: str, message: str, request_id: str) -> dict:
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": utcnow().strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                                     "client-request-id": request_id}}}


def zone(name: str) -> ZoneInfo:
    key = WINDOWS_ZONES.get(name.lower(), name)
    try:
        return ZoneInfo(key)
    except Exception as exc:
        raise GraphError(400, "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{name}'.") from exc


def to_utc(dtz: dict) -> datetime:
    try:
        local = datetime.fromisoformat(str(dtz["dateTime"]).rstrip("Z")[:26])
    except (KeyError, ValueError) as exc:
        raise GraphError(400, "ErrorInvalidRequest", "Cannot convert the literal to the expected type 'Edm.DateTimeOffset'.") from exc
    return local.replace(tzinfo=zone(dtz.get("timeZone") or "UTC")).astimezone(UTC)


def graph_datetime(dt: datetime, tz: str = "UTC") -> dict:
    local = dt.astimezone(zone(tz))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": tz}


def validate(type_name: str, value: Any, path: str = "") -> None:
    """Reject properties the type does not define and enum values the type does not allow, as Graph does."""
    if value is None:
        return
    if type_name in GRAPH.enums:
        allowed = {v.lower() for v in GRAPH.enums[type_name]}
        if not isinstance(value, str) or value.lower() not in allowed:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{value}' was not found.")
        return
    props = GRAPH.types.get(type_name)
    if props is None or not isinstance(value, dict):
        return
    for key, inner in value.items():
        if key.startswith("@odata.") or "@odata." in key:
            continue
        spec = props.get(key)
        if spec is None:
            raise GraphError(400, "RequestBodyRead",
                             f"The property '{key}' does not exist on type '{type_name}'. Make sure to only use property names that are defined by the type or mark the type as open type.")
        if "ref" in spec:
            items = inner if spec.get("array") and isinstance(inner, list) else [inner]
            for item in items:
                validate(spec["ref"], item, f"{path}{key}.")


def new_id(prefix: str = "AAMkAG") -> str:
    return prefix + base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:6]).decode().rstrip("=") + "AAA="


IMMUTABLE = re.compile(r'IdType\s*=\s*"ImmutableId"', re.I)


def wants_immutable_ids(headers: dict) -> bool:
    """Graph, "Obtain immutable identifiers for Outlook resources": `Prefer: IdType="ImmutableId"` "only applies to
    the request it is included with"."""
    return bool(IMMUTABLE.search(str(_ci_get(headers, "prefer") or "")))


def find_event(mailbox: Mailbox, event_id: str) -> dict | None:
    """An event by its id: the current one, or its immutable id (the emulator's guess: Graph takes either in a URL)."""
    found = mailbox.events.get(event_id)
    if found is not None:
        return found
    return next((e for e in mailbox.events.values() if e["_immutable"] == event_id), None)


def move_event(mailbox: Mailbox, event_id: str, calendar: str) -> dict | None:
    """The owner moves an event to another calendar of the mailbox: its default id changes (Graph: "By default, this
    value changes when the item is moved from one container (such as a folder or calendar) to another"), its
    immutable id stays, and it leaves the default calendar's listings."""
    event = find_event(mailbox, event_id)
    if event is None:
        return None
    del mailbox.events[event["id"]]
    event["id"] = new_id()
    event["_calendar"] = calendar
    mailbox.events[event["id"]] = event
    return event


def require_role(mailbox: Mailbox, method: str, rest: str) -> None:
    """Exchange RBAC for Applications: a call needs a role granted for the mailbox's scope. Graph reference, "Get
    user mailbox settings", Permissions: MailboxSettings.Read (application); "Get calendar" and "List events":
    Calendars.Read; "Create event", "Update event", "Delete event", "event: cancel": Calendars.ReadWrite. Without it,
    Graph answers 403 ErrorAccessDenied."""
    if rest.startswith("/mailboxSettings"):
        needed = {"MailboxSettings.Read", "MailboxSettings.ReadWrite"} if method == "GET" else {"MailboxSettings.ReadWrite"}
    else:
        needed = {"Calendars.Read", "Calendars.ReadWrite"} if method == "GET" else {"Calendars.ReadWrite"}
    if not needed & set(mailbox.roles):
        raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


class GraphService:
    def check_tenant(self, mailbox: Mailbox, tid: str) -> None:
        """A token is good for the mailboxes of the tenant that issued it, while the app still holds consent there.
        What Graph answers otherwise is a guess (docs/emulator-fidelity.md): 401 InvalidAuthenticationToken."""
        directory = self.tenant.graph.directories.get(tid)
        if directory is None or not directory.consented:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure: the app has no consent in the token's tenant.")
        if mailbox.tenant_id != tid:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure: the token's tenant does not hold this mailbox.")

    def __init__(self, tenant: Tenant):
        self.tenant = tenant

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/v1.0/{path:.*}", self.handle)]

    # --- transport ------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        auth = request.headers.get("Authorization", "")
        path = request.match_info["path"]
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            self.tenant.log.add(service="graph", kind="http", method=request.method, path=path, status=401, mailbox=None)
            return web.json_response(error_body("InvalidAuthenticationToken", "Access token is empty.", request_id), status=401)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return web.json_response(error_body("BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.", request_id), status=400)
        if path == "$batch" and request.method == "POST":
            fault = self.tenant.fault_for("graph", "POST", "/$batch")
            if fault is not None and fault.action == "status":
                self.tenant.log.add(service="graph", kind="http", method="POST-BATCH", path="/$batch", status=fault.status, mailbox=None)
                return self._fault_response(fault, request_id)
            status, headers, payload = await self.batch(body, request_id, token_tenant(auth))
            item_dropped = bool(headers.pop("x-devtenant-dropped", ""))
            self.tenant.log.add(service="graph", kind="http", method="POST-BATCH", path="/$batch", status=status, mailbox=None,
                                items=len((body or {}).get("requests", []) if isinstance(body, dict) else 0), query=request.query_string,
                                headers=redacted(request.headers), body=body, response=payload)
            if item_dropped or (fault is not None and fault.action == "drop_after_apply"):
                return self._drop(request)
            return web.json_response(payload, status=status, headers=headers)
        target = path + (("?" + request.query_string) if request.query_string else "")
        status, headers, payload, dropped = await self.execute(request.method, target, dict(request.headers), body, request_id, kind="http",
                                                               tid=token_tenant(auth))
        if dropped:
            return self._drop(request)
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        # The write was applied; the client never hears back, as when a connection is cut mid-response.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError()

    def _fault_response(self, fault: FaultRule, request_id: str) -> web.Response:
        status, headers, body = self._fault_result(fault, request_id)
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _fault_result(fault: FaultRule, request_id: str) -> tuple[int, dict, dict]:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(int(fault.retry_after)) if float(fault.retry_after).is_integer() else str(fault.retry_after)
        code = fault.code or {429: "ApplicationThrottled", 503: "ServiceNotAvailable", 504: "GatewayTimeout",
                              500: "InternalServerError", 502: "BadGateway"}.get(fault.status, "ErrorInternalServerError")
        message = "Application is over its MailboxConcurrency limit." if fault.status == 429 else "The service is temporarily unavailable."
        return fault.status, headers, error_body(code, message, request_id)

    # --- one operation (top-level request or batch item) ------------------------------------------
    async def execute(self, method: str, target: str, headers: dict, body: Any, request_id: str, kind: str,
                      tid: str = HOME_TENANT) -> tuple[int, dict, Any, bool]:
        split = urlsplit(target if target.startswith("/") else "/" + target)
        path = unquote(split.path).lstrip("/")
        if path.startswith("v1.0/"):
            path = path[5:]
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        m = re.match(r"users/([^/]+)(/.*)?$", path)
        mailbox = self.tenant.graph.find(m.group(1)) if m else None
        log_mailbox = mailbox.address if mailbox else None
        dropped = False
        try:
            if not m:
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path.split('/')[0]}'.")
            if mailbox is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{m.group(1)}' is invalid.")
            self.check_tenant(mailbox, tid)
            if not scope_now(mailbox):
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            if mailbox.state != "enabled":
                raise GraphError(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
            require_role(mailbox, method, m.group(2) or "")
            status, out_headers, payload, dropped = await self._admitted(mailbox, method, m.group(2) or "", query, headers, body, request_id)
        except GraphError as err:
            status, out_headers, payload = err.status, err.headers, error_body(err.code, err.message, request_id)
        out_headers = {"request-id": request_id, "client-request-id": headers.get("client-request-id", request_id), **out_headers}
        self.tenant.log.add(service="graph", kind=kind, method=method, path="/" + path, status=status, mailbox=log_mailbox,
                            query=split.query, headers=redacted(headers), body=body, response=payload)
        return status, out_headers, payload, dropped

    async def _admitted(self, mailbox: Mailbox, method: str, rest: str, query: dict, headers: dict, body: Any, request_id: str):
        g = self.tenant.graph
        now = time.monotonic()
        while mailbox.window and now - mailbox.window[0] > g.mailbox_window_s:
            mailbox.window.popleft()
        mailbox.inflight += 1
        log = self.tenant.log
        log.max_concurrency[mailbox.address] = max(log.max_concurrency[mailbox.address], mailbox.inflight)
        try:
            if mailbox.inflight > g.mailbox_concurrency:
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", {"Retry-After": "1"})
            if len(mailbox.window) >= g.mailbox_budget:
                wait = max(1, int(g.mailbox_window_s - (now - mailbox.window[0])))
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequestLimit limit.", {"Retry-After": str(wait)})
            mailbox.window.append(now)
            fault = self.tenant.fault_for("graph", method, "/users/" + mailbox.id + rest, mailbox)
            delay = self.tenant.latency("graph") + (fault.delay_ms if fault and fault.action == "latency" else 0)
            if delay:
                await asyncio.sleep(delay / 1000)
            if fault is not None and fault.action == "status":
                status, fheaders, fbody = self._fault_result(fault, request_id)
                return status, fheaders, fbody, False
            status, out_headers, payload = self.route(mailbox, method, rest, query, headers, body)
            return status, out_headers, payload, fault is not None and fault.action == "drop_after_apply"
        finally:
            mailbox.inflight -= 1

    # --- resources ------------------------------------------------------------------------------
    def route(self, mailbox: Mailbox, method: str, rest: str, query: dict, headers: dict, body: Any) -> tuple[int, dict, Any]:
        rest = rest.rstrip("/")
        if rest == "/calendar" and method == "GET":
            return 200, {}, self.calendar(mailbox)
        if rest == "/mailboxSettings" and method == "GET":
            return 200, {}, {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{mailbox.id}')/mailboxSettings",
                             "timeZone": mailbox.time_zone, "language": {"locale": "en-US", "displayName": "English (United States)"},
                             "workingHours": {"timeZone": {"name": mailbox.time_zone}}}
        if rest in ("/events", "/calendar/events"):
            if method == "GET":
                return 200, {}, self.list_events(mailbox, query, headers)
            if method == "POST":
                return self.create_event(mailbox, body, headers)
        m = re.fullmatch(r"(?:/calendar)?/events/([^/]+)(/cancel)?", rest)
        if m:
            event = find_event(mailbox, m.group(1))
            if event is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if m.group(2):
                if method != "POST":
                    raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
                return self.cancel_event(mailbox, event, body)
            if method == "GET":
                return 200, {}, self.render(mailbox, event, query, headers)
            if method == "PATCH":
                return self.update_event(mailbox, event, body, headers)
            if method == "DELETE":
                del mailbox.events[event["id"]]
                return 204, {}, None
        raise GraphError(400, "BadRequest", f"Unsupported request: {method} /users/{{id}}{rest}")

    def calendar(self, mailbox: Mailbox) -> dict:
        return {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{mailbox.id}')/calendar/$entity",
                "id": mailbox.calendar_id, "name": "Calendar", "color": "auto", "hexColor": "", "isDefaultCalendar": True,
                "changeKey": "nfZyf7VcrEKLNoU37KWlkQAAA0x0+w==", "canShare": True, "canViewPrivateItems": True, "canEdit": True,
                "allowedOnlineMeetingProviders": ["teamsForBusiness"], "defaultOnlineMeetingProvider": "teamsForBusiness",
                "isTallyingResponses": True, "isRemovable": False,
                "owner": {"name": mailbox.display_name, "address": mailbox.address}}

    def _repeated_transaction(self, mailbox: Mailbox, existing: dict, headers: dict) -> tuple[int, dict, dict]:
        answer = self.tenant.graph.duplicate_transaction
        if answer == "201":
            return 201, {}, self.render(mailbox, existing, {}, headers)
        raise GraphError(409 if answer == "409" else 400, "ErrorDuplicateTransactionId",
                         "The TransactionId specified in the request has already been used to create a different event.")

    def create_event(self, mailbox: Mailbox, body: Any, headers: dict) -> tuple[int, dict, dict]:
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        validate(EVENT_TYPE, body)
        txn = body.get("transactionId")
        if txn:
            for existing in mailbox.events.values():
                if existing.get("transactionId") == txn:
                    return self._repeated_transaction(mailbox, existing, headers)
        for key in ("start", "end"):
            if not isinstance(body.get(key), dict):
                raise GraphError(400, "ErrorInvalidRequest", f"The event's '{key}' property is required.")
        start, end = to_utc(body["start"]), to_utc(body["end"])
        if end < start:
            raise GraphError(400, "ErrorInvalidRequest", "The end time of the event must be after its start time.")
        now = iso(utcnow())
        event_id = new_id()
        event = {
            "id": event_id, "createdDateTime": now, "lastModifiedDateTime": now, "changeKey": new_id("Zln")[:28],
            "categories": body.get("categories", []), "transactionId": txn,
            "originalStartTimeZone": body["start"].get("timeZone", "UTC"), "originalEndTimeZone": body["end"].get("timeZone", "UTC"),
            "iCalUId": "040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper(),
            "reminderMinutesBeforeStart": body.get("reminderMinutesBeforeStart", 15), "isReminderOn": body.get("isReminderOn", True),
            "hasAttachments": False, "subject": body.get("subject", ""), "importance": body.get("importance", "normal"),
            "sensitivity": body.get("sensitivity", "normal"), "isAllDay": body.get("isAllDay", False), "isCancelled": False,
            "isDraft": False, "isOrganizer": True, "responseRequested": body.get("responseRequested", True),
            "seriesMasterId": None, "showAs": body.get("showAs", "busy"), "type": "singleInstance", "recurrence": None,
            "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None, "isOnlineMeeting": False, "onlineMeetingProvider": "unknown", "onlineMeeting": None,
            "allowNewTimeProposals": body.get("allowNewTimeProposals", True), "hideAttendees": False,
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": {"contentType": (body.get("body") or {}).get("contentType", "html").lower(), "content": (body.get("body") or {}).get("content", "")},
            "_start": start, "_end": end,
            "location": body.get("location") or {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}},
            "locations": body.get("locations") or ([body["location"]] if body.get("location") else []),
            "attendees": body.get("attendees", []),
            "organizer": {"emailAddress": {"name": mailbox.display_name, "address": mailbox.address}},
            "_extended": {p["id"].lower(): {"id": p["id"], "value": p.get("value")} for p in body.get("singleValueExtendedProperties", [])},
            "_cancellations_sent": 0, "_immutable": new_id("AAkALg"), "_calendar": mailbox.calendar_id,
        }
        event["bodyPreview"] = re.sub(r"<[^>]+>", "", event["body"]["content"])[:255]
        mailbox.events[event_id] = event
        shown = event["_immutable"] if wants_immutable_ids(headers) else event_id
        return 201, {"Location": f"https://graph.microsoft.com/v1.0/users('{mailbox.id}')/events('{shown}')"}, self.render(mailbox, event, {}, headers)

    def update_event(self, mailbox: Mailbox, event: dict, body: Any, headers: dict) -> tuple[int, dict, dict]:
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        validate(EVENT_TYPE, body)
        for key, value in body.items():
            if key == "singleValueExtendedProperties":
                for p in value or []:
                    event["_extended"][p["id"].lower()] = {"id": p["id"], "value": p.get("value")}
            elif key == "start":
                event["_start"] = to_utc(value)
            elif key == "end":
                event["_end"] = to_utc(value)
            elif key == "body":
                event["body"] = {"contentType": value.get("contentType", "html").lower(), "content": value.get("content", "")}
                event["bodyPreview"] = re.sub(r"<[^>]+>", "", event["body"]["content"])[:255]
            else:
                event[key] = value
        if event["_end"] < event["_start"]:
            raise GraphError(400, "ErrorInvalidRequest", "The end time of the event must be after its start time.")
        event["lastModifiedDateTime"] = iso(utcnow())
        event["changeKey"] = new_id("Zln")[:28]
        return 200, {}, self.render(mailbox, event, {}, headers)

    def cancel_event(self, mailbox: Mailbox, event: dict, body: Any) -> tuple[int, dict, None]:
        if isinstance(body, dict):
            unknown = set(body) - {"Comment", "comment"}
            if unknown:
                raise GraphError(400, "RequestBodyRead", f"The parameter '{sorted(unknown)[0]}' in the request payload is not a valid parameter for the operation 'cancel'.")
        if not event.get("isOrganizer", True):
            raise GraphError(400, "ErrorInvalidRequest", "Your request can't be completed. This operation can only be performed by the meeting organizer.")
        if not event.get("attendees"):
            # Emulator's reading of Exchange: a cancellation is a meeting message; an appointment without attendees has no one to notify.
            raise GraphError(400, "ErrorInvalidRequest", "Your request can't be completed. The meeting has no attendees to send a cancellation to.")
        # The organizer's copy leaves the calendar and each attendee receives a cancellation.
        del mailbox.events[event["id"]]
        event["_cancellations_sent"] = len(event["attendees"])
        mailbox.cancellations.append({"id": event["id"], "attendees": len(event["attendees"]),
                                                             "comment": (body or {}).get("Comment") or (body or {}).get("comment")})
        return 202, {}, None

    # --- reading --------------------------------------------------------------------------------
    def render(self, mailbox: Mailbox, event: dict, query: dict, headers: dict) -> dict:
        tz = "UTC"
        prefer = headers.get("Prefer") or headers.get("prefer") or ""
        m = re.search(r'outlook\.timezone="([^"]+)"', prefer)
        if m:
            tz = m.group(1)
            zone(tz)
        out = {k: v for k, v in event.items() if not k.startswith("_")}
        if wants_immutable_ids(headers):
            out["id"] = event["_immutable"]
        out["start"] = graph_datetime(event["_start"], tz)
        out["end"] = graph_datetime(event["_end"], tz)
        out["@odata.etag"] = f'W/"{event["changeKey"]}"'
        out["@odata.context"] = f"https://graph.microsoft.com/v1.0/$metadata#users('{mailbox.id}')/events/$entity"
        select = odata.parse_select(query.get("$select"))
        if select:
            out = {k: v for k, v in out.items() if k in select or k in ("id", "@odata.etag")}
        for item in odata.parse_expand(query.get("$expand")):
            if item.name.lower() != "singlevalueextendedproperties":
                raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: Could not find a property named '{item.name}' on type 'microsoft.graph.event'.")
            props = list(event["_extended"].values())
            if item.filter:
                expr = odata.parse_filter(item.filter)
                props = [p for p in props if odata.evaluate(expr, lambda parts, p=p: _ci_get(p, parts[-1]), odata.BASIC_FUNCTIONS)]
            out["singleValueExtendedProperties"] = props
        return out

    def list_events(self, mailbox: Mailbox, query: dict, headers: dict) -> dict:
        # "The user's events. Default is to show Events under the Default Calendar." (the OpenAPI subset's description)
        events = sorted((e for e in mailbox.events.values() if e["_calendar"] == mailbox.calendar_id), key=lambda e: (e["_start"], e["id"]))
        if "$filter" in query:
            try:
                expr = odata.parse_filter(query["$filter"])
            except odata.ODataSyntaxError as exc:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: {exc}") from exc
            for parts in odata.referenced_paths(expr):
                if parts[0] not in GRAPH.types[EVENT_TYPE] and parts[0].lower() != "singlevalueextendedproperties":
                    raise GraphError(400, "BadRequest", f"Could not find a property named '{parts[0]}' on type 'microsoft.graph.event'.")
            events = [e for e in events if odata.evaluate(expr, self._resolver(e), odata.BASIC_FUNCTIONS)]
        size = DEFAULT_PAGE
        prefer = headers.get("Prefer") or headers.get("prefer") or ""
        m = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if "$top" in query:
            size = min(1000, int(query["$top"]))
        elif m:
            size = min(1000, int(m.group(1)))
        skip = int(query.get("$skip", 0))
        page = events[skip: skip + size]
        body: dict[str, Any] = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{mailbox.id}')/events",
                                "value": [self.render(mailbox, e, query, headers) for e in page]}
        if skip + size < len(events):
            rest = {k: v for k, v in query.items() if k != "$skip"}
            qs = "&".join(f"{k}={v}" for k, v in rest.items())
            body["@odata.nextLink"] = f"/v1.0/users/{mailbox.id}/events?{qs + '&' if qs else ''}$skip={skip + size}"
        return body

    @staticmethod
    def _resolver(event: dict):
        def resolve(parts: list[str]) -> Any:
            head = parts[0]
            if head.lower() == "singlevalueextendedproperties":
                return list(event["_extended"].values())
            if head in ("start", "end") and len(parts) > 1:
                return graph_datetime(event["_" + head])["dateTime"][:19] if parts[1] == "dateTime" else "UTC"
            value: Any = event
            for p in parts:
                value = value.get(p) if isinstance(value, dict) else None
            return value
        return resolve

    # --- JSON batching ----------------------------------------------------------------------------
    async def batch(self, body: Any, request_id: str, tid: str = HOME_TENANT) -> tuple[int, dict, dict]:
        def bad(message: str) -> tuple[int, dict, dict]:
            return 400, {}, error_body("BadRequest", message, request_id)

        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return bad("Invalid batch payload format.")
        requests = body["requests"]
        if len(requests) > MAX_BATCH:
            return bad(f"Number of requests in the batch request exceeds the allowed limit of {MAX_BATCH}.")
        ids: dict[str, dict] = {}
        for item in requests:
            if not isinstance(item, dict) or not item.get("id") or not item.get("method") or not item.get("url"):
                return bad("Each request in a batch must have 'id', 'method' and 'url'.")
            key = str(item["id"]).lower()
            if key in ids:
                return bad(f"Request ids in a batch must be unique; '{item['id']}' is repeated.")
            if "body" in item and "content-type" not in {h.lower() for h in (item.get("headers") or {})}:
                return bad(f"Request '{item['id']}': a Content-Type header is required when a body is given.")
            ids[key] = item
        for item in requests:
            for dep in item.get("dependsOn") or []:
                if str(dep).lower() not in ids:
                    return bad(f"Request '{item['id']}' depends on '{dep}', which is not in the batch.")
        if any(item.get("dependsOn") for item in requests):
            # Graph runs a batch either fully in parallel or as one chain, each item depending on the one before.
            chained = all([str(d).lower() for d in (item.get("dependsOn") or [])] == ([str(requests[i - 1]["id"]).lower()] if i else [])
                          for i, item in enumerate(requests))
            if not chained:
                return bad("Batch should be either fully sequential or fully parallel")
        results: dict[str, asyncio.Future] = {k: asyncio.get_running_loop().create_future() for k in ids}
        dropped: list[str] = []

        async def run(item: dict) -> dict:
            failed_dep = None
            for dep in item.get("dependsOn") or []:
                status = (await asyncio.shield(results[str(dep).lower()]))["status"]
                if status >= 400:
                    failed_dep = dep
            if failed_dep is not None:
                out = {"id": item["id"], "status": 424, "body": error_body("FailedDependency", f"The request depends on '{failed_dep}', which failed.", request_id)}
            else:
                status, headers, payload, lost = await self.execute(item["method"].upper(), item["url"], item.get("headers") or {},
                                                                    item.get("body"), request_id, kind="batch-item", tid=tid)
                if lost:
                    dropped.append(item["id"])
                out = {"id": item["id"], "status": status, "headers": {k: v for k, v in headers.items() if k in ("Retry-After", "Location")}}
                if payload is not None:
                    out["body"] = payload
            results[str(item["id"]).lower()].set_result(out)
            return out

        responses = await asyncio.gather(*(run(i) for i in requests))
        # An item-level drop_after_apply does what its top-level counterpart does: the item was applied, and the
        # answer is lost with the connection (a batch travels back as one HTTP response).
        return 200, {"x-devtenant-dropped": ",".join(dropped)} if dropped else {}, {"responses": list(responses)}


def _ci_get(d: dict, key: str) -> Any:
    for k, v in d.items():
        if k.lower() == key.lower():
            return v
    return None
