"""Dataverse webhook delivery: a registered service endpoint receives a RemoteExecutionContext for each
create, update and delete of a booking, posted asynchronously as Dataverse's asynchronous steps do."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"


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


class WebhookRegistry:
    def __init__(self) -> None:
        self.endpoints: list[dict] = []
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def register(self, spec: dict) -> dict:
        endpoint = {"url": spec["url"], "headers": spec.get("headers", {}), "drop": int(spec.get("drop", 0)),
                    "size_exceeded": bool(spec.get("size_exceeded", False)), "delay_ms": float(spec.get("delay_ms", 0))}
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
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        headers = {"Content-Type": "application/json", **endpoint["headers"]}
        if endpoint["size_exceeded"]:                                # Dataverse strips the large parts and says so
            headers[SIZE_EXCEEDED_HEADER] = "true"
            payload = {**payload, "InputParameters": [], "PreEntityImages": [], "PostEntityImages": [], "ParentContext": None}
        if endpoint["delay_ms"]:
            await asyncio.sleep(endpoint["delay_ms"] / 1000)
        try:
            async with self._session.post(endpoint["url"], data=json.dumps(payload), headers=headers) as resp:
                await resp.read()
                if resp.status < 300:
                    self.delivered += 1
                else:
                    self.failed += 1
        except aiohttp.ClientError:
            self.failed += 1

    def status(self) -> dict[str, Any]:
        return {"endpoints": len(self.endpoints), "delivered": self.delivered, "dropped": self.dropped, "failed": self.failed,
                "in_flight": len(self._tasks)}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
