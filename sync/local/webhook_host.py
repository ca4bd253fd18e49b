"""A local stand-in for the Functions host's webhook endpoint: POST /api/dataverse/webhook with function-key
auth (the `code` query parameter or the x-functions-key header, as the host checks them), the same
handler the Functions app runs (sync/app/webhook.py), and the orchestrations it starts run in process by
the local Durable runner. Used by the tests, the latency benchmark and `python -m sync serve-webhook`.
"""
from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from ..app.activities import Activities
from ..app.orchestrators import ORCHESTRATORS
from ..app.settings import AppSettings
from ..app.webhook import handle
from .durable import DurableRunner


class LocalDurableClient:
    """get_status / start_new over the local runtime; each instance runs as a task."""

    def __init__(self, runner: DurableRunner):
        self.runner = runner
        self.tasks: dict[str, asyncio.Task] = {}
        self.outputs: dict[str, list[Any]] = {}
        self.starts = 0

    async def get_status(self, instance_id: str) -> Any:
        task = self.tasks.get(instance_id)
        if task is None:
            return None
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Running" if not task.done() else "Completed"))

    async def start_new(self, name: str, instance_id: str, input_: Any) -> str:
        self.starts += 1

        async def run() -> None:
            output = await self.runner.run(name, input_, instance_id)
            self.outputs.setdefault(instance_id, []).append(output)

        self.tasks[instance_id] = asyncio.get_running_loop().create_task(run())
        return instance_id

    async def idle(self, timeout: float = 60) -> None:
        """Wait until no instance runs (tests and benchmarks)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(not t.done() for t in self.tasks.values()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("orchestrations still running")
            await asyncio.sleep(0.05)


class LocalWebhookHost:
    def __init__(self, settings: AppSettings, function_key: str):
        self.settings, self.function_key = settings, function_key
        self.activities = Activities(lambda: settings)
        # Durable timers wait, as on the Functions host: a busy mailbox's sync waits BUSY_WAIT_S per round for the
        # timer cycle to finish, instead of spending its rounds in milliseconds and giving up.
        runner = DurableRunner(ORCHESTRATORS, self.activities.by_name(), sleep_timers=True)
        self.client = LocalDurableClient(runner)
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _webhook(self, request: web.Request) -> web.Response:
        self.requests += 1
        given = request.query.get("code") or request.headers.get("x-functions-key") or ""
        if not hmac.compare_digest(given.encode(), self.function_key.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        status, body = await handle(await request.read(), dict(request.headers), dict(request.query), self.settings, self.client,
                                    datetime.now(UTC).isoformat(), await self.activities.clients())
        return web.json_response(body, status=status)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        app.add_routes([web.post("/api/dataverse/webhook", self._webhook)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}/api/dataverse/webhook"
        return self.url

    async def stop(self) -> None:
        await self.client.idle()
        await self.activities.close()
        if self._runner is not None:
            await self._runner.cleanup()
