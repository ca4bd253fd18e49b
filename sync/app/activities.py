"""Activity bodies: plain dict in, small plain dict out. function_app.py and the local runner call these.

Mailbox and environment problems are answered as results (outcome, error, retryable), never raised,
so one mailbox's failure can never stop another's (T2, M6). Only a transient failure of the collect
step is raised, for the orchestrator's retry options to handle.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError

from ..core.pseudonym import mailbox_ref
from ..engine.collect import collect
from ..engine.mailbox import MailboxSync
from ..ports import PermanentError, TransientError
from . import telemetry
from .clients import Clients
from .orchestrators import COLLECT_ACTIVITY, RECORD_RUN_ACTIVITY, SYNC_MAILBOX_ACTIVITY
from .settings import AppSettings, load

log = logging.getLogger("sync.activities")
SettingsLoader = Callable[[], AppSettings]
MAILBOX_LEASE_S = 600.0          # longer than any mailbox sync (functionTimeout is 10 minutes)


FILTERS_TTL_S = 60.0


class Activities:
    """Activity bodies. Clients are made once per event loop and reused by every activity that runs on it
    (the Functions worker runs async activities on one loop), so connections and tokens are reused."""

    def __init__(self, settings: SettingsLoader = load):
        self._settings_loader = settings
        self._settings: AppSettings | None = None
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Clients]] = {}
        self._telemetry_key: str | None = None
        self._filters: tuple[float, tuple] | None = None

    async def clients(self) -> Clients:
        """This event loop's clients, made on first use."""
        loop = asyncio.get_running_loop()
        known = self._clients.get(id(loop))
        if known is not None and known[0] is loop:
            return known[1]
        clients = await Clients(self.settings).__aenter__()
        await clients.store.ensure_tables()
        self._clients[id(loop)] = (loop, clients)
        return clients

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        known = self._clients.pop(id(loop), None)
        if known is not None:
            await known[1].__aexit__(None, None, None)

    async def _global_filters(self, rt: Clients) -> tuple:
        if self._filters is None or time.monotonic() - self._filters[0] > FILTERS_TTL_S:
            self._filters = (time.monotonic(), await rt.store.global_filters())
        return self._filters[1]

    async def _mailbox_ref(self, rt: Clients, mailbox: str) -> str:
        if self._telemetry_key is None:
            self._telemetry_key = await rt.store.telemetry_key()
        return mailbox_ref(self._telemetry_key, mailbox)

    def by_name(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """The activity functions under the names the orchestrators call them by."""
        return {COLLECT_ACTIVITY: self.collect_environment, SYNC_MAILBOX_ACTIVITY: self.sync_mailbox, RECORD_RUN_ACTIVITY: self.record_run}

    @property
    def settings(self) -> AppSettings:
        if self._settings is None:
            self._settings = self._settings_loader()
        return self._settings

    async def collect_environment(self, payload: dict) -> dict:
        environment, now = payload["environment"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        rt = await self.clients()
        source = rt.source(environment)
        requests_before = source.requests
        try:
            with telemetry.span("sync.collect", environment=environment):
                result = await collect(source, rt.store, self.settings.sync, now)
        except TransientError:
            raise                                          # the orchestrator's retry options take it from here
        except PermanentError as exc:
            log.error("collect failed: environment=%s code=%s", environment, exc.code)
            return {"environment": environment, "error": str(exc), "mailboxes": []}
        out = result.to_dict()
        out["seconds"] = round(time.monotonic() - started, 3)
        out["dataverse_requests"] = source.requests - requests_before
        telemetry.record_collect(out)
        log.info("collected: environment=%s mode=%s read=%d deleted=%d mailboxes=%d", environment, out["mode"],
                 out["bookings_read"], out["deleted"], len(out["mailboxes"]))
        return out

    async def sync_mailbox(self, payload: dict) -> dict:
        mailbox, now = payload["mailbox"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        ref = "mbx-unknown"
        try:
            rt = await self.clients()
            ref = await self._mailbox_ref(rt, mailbox)
            lease, holder = f"mailbox:{mailbox.lower()}", f"{ref}:{uuid.uuid4()}"
            # Two syncs of one mailbox never overlap: the timer cycle and a webhook-started sync share this lease.
            if not await rt.store.acquire_lease(lease, holder, datetime.now(UTC), MAILBOX_LEASE_S):
                return {"mailbox": mailbox, "outcome": "busy", "retryable": True, "counts": {}, "error": None}
            try:
                with telemetry.span("sync.mailbox", mailbox_ref=ref) as current:
                    sync = MailboxSync(rt.store, rt.calendar, self.settings.sync, now, global_filters=await self._global_filters(rt))
                    result = (await sync.run(mailbox, dry_run=payload.get("dry_run", False), force=payload.get("force", False))).to_dict()
                    result["pending_left"] = len(await rt.store.pending(mailbox))
                    current.set_attributes({"outcome": result["outcome"], **{f"count.{k}": v for k, v in result["counts"].items()}})
            finally:
                await rt.store.release_lease(lease, holder)
        except (TransientError, AzureError, OSError) as exc:
            log.warning("mailbox sync failed transiently: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"mailbox": mailbox, "outcome": "error", "retryable": True, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                      "counts": {}}
        except Exception as exc:
            # the type only: exception texts can quote addresses
            log.error("mailbox sync failed: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"mailbox": mailbox, "outcome": "error", "retryable": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                      "counts": {}}
        seconds = time.monotonic() - started
        result["seconds"] = round(seconds, 3)
        result.setdefault("retryable", result["outcome"] == "transient")
        telemetry.record_mailbox(result, ref, seconds)
        log.info("mailbox synced: mailbox_ref=%s outcome=%s counts=%s", ref, result["outcome"], result["counts"])
        return result

    async def record_run(self, summary: dict) -> dict:
        rt = await self.clients()
        await rt.store.record_run({k: v for k, v in summary.items() if k != "mailboxes"})
        started, finished = datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])
        telemetry.record_cycle(summary, (finished - started).total_seconds())
        return {"recorded": summary["id"]}
