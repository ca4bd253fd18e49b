"""Dataverse webhook delivery: a registered service endpoint receives a RemoteExecutionContext for each
create, update and delete of a booking, posted asynchronously as Dataverse's asynchronous steps do.

What a request carries follows Learn, "Use webhooks to create external handlers for server events", Data passed to
the service: in the query string only the authentication values (WebhookKey: `code=<value>`; HttpQueryString: the
registered pairs); in the headers, the HttpHeader authentication's pairs and `x-ms-dynamics-organization` ("the
domain name of the environment sending the request"), `x-ms-dynamics-entity-name`, `x-ms-dynamics-request-name`,
`x-ms-correlation-request-id`, and `x-ms-dynamics-msg-size-exceeded` when the payload was cut. The three
authentication types are those of "Register a webhook", Authentication options.

Redelivery follows Microsoft Learn, "Use webhooks to create external handlers for server events", Troubleshoot
WebHook registrations: "The timeout is 60 seconds. Generally, if no response is returned before the timeout
period or if the response StatusCode value is not within the 2xx range to indicate success it will fail. The
exception is when the error returned is [502, 503, 504] ... The WebHook service will make one more attempt only
when these error codes are returned." A failed asynchronous step leaves a failed system job; here, a record in
`failed_jobs`. How long the service waits before its one more attempt is not documented: `retry_delay_ms`
(default 1 s) is the guess.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
AUTH_TYPES = ("WebhookKey", "HttpHeader", "HttpQueryString")
RETRIED_STATUSES = {502, 503, 504}
TIMEOUT_S = 60.0


def _date(dt: datetime) -> str:
    return f"/Date({int(dt.timestamp() * 1000)})/"


def _attributes(row: dict | None) -> list[dict]:
    if not row:
        return []
    out = []
    for key, value in row.items():
        if key.startswith("_") and key.endswith("_value"):
            name = key[1:-6]
            out.append({"key": name, "value": {"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                                               "Id": value, "LogicalName": name, "Name": None} if value else None})
        elif key not in ("versionnumber",):
            out.append({"key": key, "value": value})
    return out


def remote_execution_context(org: str, message: str, row: dict, before: dict | None) -> dict:
    entity = {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts", "Attributes": _attributes(row),
              "Id": row["bookableresourcebookingid"], "LogicalName": "bookableresourcebooking"}
    now = datetime.now(UTC)
    return {
        "BusinessUnitId": "00000000-0000-0000-0000-000000000001", "CorrelationId": str(uuid.uuid4()), "Depth": 1,
        "InitiatingUserId": "00000000-0000-0000-0000-0000000000a1",
        "InputParameters": [] if message == "Delete" else [{"key": "Target", "value": entity}],
        "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False, "IsolationMode": 2, "MessageName": message,
        "Mode": 1, "OperationCreatedOn": _date(now), "OperationId": str(uuid.uuid4()), "OrganizationId": "00000000-0000-0000-0000-0000000000f1",
        "OrganizationName": org, "OutputParameters": [], "OwningExtension": {"Id": str(uuid.uuid4()), "LogicalName": "sdkmessageprocessingstep",
                                                                            "Name": f"fssync: {message} of bookableresourcebooking"},
        "ParentContext": None, "PostEntityImages": [],
        "PreEntityImages": [{"key": "PreImage", "value": {**entity, "Attributes": _attributes(before)}}] if before else [],
        "PrimaryEntityId": row["bookableresourcebookingid"], "PrimaryEntityName": "bookableresourcebooking", "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": "00000000-0000-0000-0000-0000000000a1",
    }


def _url(endpoint: dict) -> str:
    """The endpoint URL with the query-string authentication added (WebhookKey's `code`, HttpQueryString's pairs)."""
    auth = endpoint["auth"] or {}
    pairs = {"code": auth["value"]} if auth.get("type") == "WebhookKey" else auth.get("values", {}) if auth.get("type") == "HttpQueryString" else {}
    if not pairs:
        return endpoint["url"]
    return endpoint["url"] + ("&" if "?" in endpoint["url"] else "?") + urlencode(pairs)


class WebhookRegistry:
    def __init__(self) -> None:
        self.endpoints: list[dict] = []
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self.redelivered = 0
        self.failed_jobs: list[dict[str, Any]] = []          # the system jobs of failed asynchronous steps
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def register(self, spec: dict) -> dict:
        auth = spec.get("auth") or ({"type": "HttpHeader", "values": spec["headers"]} if spec.get("headers") else None)
        if auth is not None and (auth.get("type") not in AUTH_TYPES
                                 or not isinstance(auth.get("value") if auth["type"] == "WebhookKey" else auth.get("values"), (str, dict))):
            raise ValueError(f"auth: a type of {', '.join(AUTH_TYPES)} with its value (WebhookKey) or values (the others)")
        endpoint = {"url": spec["url"], "auth": auth, "organization": spec.get("organization", ""), "drop": int(spec.get("drop", 0)),
                    "size_exceeded": bool(spec.get("size_exceeded", False)), "delay_ms": float(spec.get("delay_ms", 0)),
                    "retry_delay_ms": float(spec.get("retry_delay_ms", 1000)), "timeout_s": float(spec.get("timeout_s", TIMEOUT_S))}
        self.endpoints.append(endpoint)
        return endpoint

    def notify(self, org: str, message: str, row: dict, before: dict | None) -> None:
        for endpoint in self.endpoints:
            if endpoint["drop"] > 0:                                   # lost on the way
                endpoint["drop"] -= 1
                self.dropped += 1
                continue
            task = asyncio.get_running_loop().create_task(self._post(endpoint, remote_execution_context(org, message, row, before)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, endpoint: dict, payload: dict) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        auth = endpoint["auth"] or {}
        headers = {"Content-Type": "application/json", "x-ms-dynamics-organization": endpoint["organization"],
                   "x-ms-dynamics-entity-name": payload["PrimaryEntityName"], "x-ms-dynamics-request-name": payload["MessageName"],
                   "x-ms-correlation-request-id": payload["CorrelationId"],
                   **(auth.get("values", {}) if auth.get("type") == "HttpHeader" else {})}
        if endpoint["size_exceeded"]:                                # Dataverse strips the large parts and says so
            headers[SIZE_EXCEEDED_HEADER] = "true"
            payload = {**payload, "InputParameters": [], "PreEntityImages": [], "PostEntityImages": [], "ParentContext": None}
        if endpoint["delay_ms"]:
            await asyncio.sleep(endpoint["delay_ms"] / 1000)
        status = await self._attempt(endpoint, payload, headers)
        if status in RETRIED_STATUSES:                               # one more attempt, for these three only
            self.redelivered += 1
            await asyncio.sleep(endpoint["retry_delay_ms"] / 1000)
            status = await self._attempt(endpoint, payload, headers)
        if status is not None and status < 300:
            self.delivered += 1
            return
        self.failed += 1
        self.failed_jobs.append({"PrimaryEntityId": payload.get("PrimaryEntityId"), "MessageName": payload.get("MessageName"),
                                 "statuscode": 31, "message": f"the endpoint answered {status}" if status else "no answer"})

    async def _attempt(self, endpoint: dict, payload: dict, headers: dict) -> int | None:
        """The endpoint's status, or None when it did not answer within the timeout or the connection failed."""
        assert self._session is not None
        try:
            async with self._session.post(_url(endpoint), data=json.dumps(payload), headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=endpoint["timeout_s"])) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    def status(self) -> dict[str, Any]:
        return {"endpoints": len(self.endpoints), "delivered": self.delivered, "dropped": self.dropped, "failed": self.failed,
                "redelivered": self.redelivered, "failed_jobs": list(self.failed_jobs), "in_flight": len(self._tasks)}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
