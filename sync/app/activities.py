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
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError

from ..core.pseudonym import mailbox_ref
from ..engine.collect import collect
from ..engine.mailbox import LEASE_TTL_S, MailboxSync
from ..engine.removals import deployment_guard
from ..ports import PermanentError, TransientError
from . import telemetry
from .clients import Clients
from .listing import CycleListing
from .orchestrators import (
    COLLECT_ACTIVITY,
    FINISH_MAILBOX_SYNC_ACTIVITY,
    GUARD_ACTIVITY,
    RECORD_RUN_ACTIVITY,
    RETEST_ACTIVITY,
    SYNC_MAILBOX_ACTIVITY,
)
from .settings import AppSettings, load

log = logging.getLogger("sync.activities")
SettingsLoader = Callable[[], AppSettings]
MAILBOX_LEASE_S = LEASE_TTL_S


class Activities:
    """Activity bodies. Clients are made once per event loop and reused by every activity that runs on it
    (the Functions worker runs async activities on one loop), so connections and tokens are reused. Beyond them,
    activities share one cache: the cycle's listing (listing.py)."""

    def __init__(self, settings: SettingsLoader = load, clients: Callable[[AppSettings], Clients] = Clients):
        self._settings_loader = settings
        self._settings: AppSettings | None = None
        self._make_clients = clients
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Clients]] = {}
        self.listing = CycleListing()

    async def clients(self) -> Clients:
        """This event loop's clients, made on first use."""
        loop = asyncio.get_running_loop()
        known = self._clients.get(id(loop))
        if known is not None and known[0] is loop:
            return known[1]
        clients = await self._make_clients(self.settings).__aenter__()
        await clients.store.ensure_tables()
        self._clients[id(loop)] = (loop, clients)
        return clients

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        known = self._clients.pop(id(loop), None)
        if known is not None:
            await known[1].__aexit__(None, None, None)

    async def _global_filters(self, clients: Clients) -> tuple:
        return await self.listing.global_filters(clients.store.config.global_filters)

    async def _telemetry_key_of(self, clients: Clients) -> str:
        return await self.listing.telemetry_key(clients.store.config.telemetry_key)

    async def _mailbox_ref(self, clients: Clients, mailbox: str) -> str:
        return mailbox_ref(await self._telemetry_key_of(clients), mailbox)

    async def mailbox_refs(self, addresses: list[str]) -> list[str]:
        clients = await self.clients()
        return [await self._mailbox_ref(clients, a) for a in addresses]

    def by_name(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """The activity functions under the names the orchestrators call them by."""
        return {COLLECT_ACTIVITY: self.collect_environment, SYNC_MAILBOX_ACTIVITY: self.sync_mailbox, RECORD_RUN_ACTIVITY: self.record_run,
                FINISH_MAILBOX_SYNC_ACTIVITY: self.finish_mailbox_sync, GUARD_ACTIVITY: self.check_removals,
                RETEST_ACTIVITY: self.retest_mailboxes}

    @property
    def settings(self) -> AppSettings:
        if self._settings is None:
            self._settings = self._settings_loader()
        return self._settings

    async def collect_environment(self, payload: dict) -> dict:
        environment, now = payload["environment"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        clients = await self.clients()
        self.listing.forget(payload.get("cycle"))         # this collect writes rows: an earlier listing no longer serves
        source = clients.source(environment)
        requests_before = source.requests
        try:
            with telemetry.span("sync.collect", environment=environment):
                result = await collect(source, clients.store, self.settings.sync, now)
        except TransientError:
            raise                                          # the orchestrator's retry options take it from here
        except PermanentError as exc:
            log.error("collect failed: environment=%s code=%s", environment, exc.code)
            return {"environment": environment, "error": str(exc), "mailboxes": []}
        out = result.to_dict()
        if payload.get("cycle") is not None:
            self.listing.remember(await self._telemetry_key_of(clients), result.listed, payload["cycle"], result.global_filters)
        out["mailboxes"] = await self.mailbox_refs(out["mailboxes"])     # orchestrations carry pseudonyms only
        out["carried"] = await self.mailbox_refs(out["carried"])
        out["retest"] = await self.mailbox_refs(out["retest"])
        out["seconds"] = round(time.monotonic() - started, 3)
        out["dataverse_requests"] = source.requests - requests_before
        telemetry.record_collect(out)
        log.info("collected: environment=%s mode=%s read=%d deleted=%d mailboxes=%d", environment, out["mode"],
                 out["bookings_read"], out["deleted"], len(out["mailboxes"]))
        return out

    async def sync_mailbox(self, payload: dict) -> dict:
        """One mailbox's sync. `mailbox_ref` (the pseudonym orchestrations carry) or, from in-process callers,
        `mailbox` (the address). The result names the mailbox by its pseudonym only."""
        now = datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        ref = payload.get("mailbox_ref") or "mbx-unknown"
        mailbox: str | None = payload.get("mailbox")
        try:
            clients = await self.clients()
            mailbox = mailbox or await self._address(clients, ref, payload.get("cycle"))
            ref = await self._mailbox_ref(clients, mailbox) if mailbox else ref
            result = await self._sync(clients, mailbox, ref, now, payload) if mailbox else {
                "outcome": "skipped", "counts": {}, "error": "no registered mailbox has this reference"}
        except (TransientError, AzureError, OSError) as exc:
            log.warning("mailbox sync failed transiently: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"outcome": "error", "retryable": True, "error": _error_text(exc), "counts": {}}
        except Exception as exc:
            log.error("mailbox sync failed: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"outcome": "error", "retryable": False, "error": _error_text(exc), "counts": {}}
        result.pop("mailbox", None)
        result["mailbox_ref"] = ref
        result["tenant"] = (self.settings.tenants.tenant_of(mailbox) or "not mapped") if mailbox else None
        seconds = time.monotonic() - started
        result["seconds"] = round(seconds, 3)
        result.setdefault("retryable", result["outcome"] in ("transient", "busy"))
        telemetry.record_mailbox(result, ref, seconds)
        log.info("mailbox synced: mailbox_ref=%s outcome=%s counts=%s", ref, result["outcome"], result["counts"])
        return result

    async def _sync(self, clients: Clients, mailbox: str, ref: str, now: datetime, payload: dict) -> dict:
        # Two syncs of one mailbox never overlap: the engine takes the mailbox's lease, which the timer cycle and a
        # webhook-started sync share. The holder names the orchestration's own call, so Durable's re-run of this
        # activity after its host died takes over the lease its first attempt left.
        holder = payload.get("lease_holder") or f"{ref}:{uuid.uuid4()}"
        with telemetry.span("sync.mailbox", mailbox_ref=ref, tenant=self.settings.tenants.tenant_of(mailbox)) as current:
            filters = await self._global_filters(clients)
            sync = MailboxSync(clients.store, clients.calendar, self.settings.sync, now, global_filters=filters, holder=holder)
            result = (await sync.run(mailbox, dry_run=payload.get("dry_run", False), force=payload.get("force", False),
                                     guard_message=_guard_message(payload), keep_held=not _from_a_cycle(payload),
                                     record=self.listing.record(ref, payload.get("cycle")))).to_dict()
            current.set_attributes({"outcome": result["outcome"], **{f"count.{k}": v for k, v in result["counts"].items()}})
            return result

    async def check_removals(self, payload: dict) -> dict:
        """D5 for the deployment: may this cycle's mailboxes remove what they would remove?"""
        clients = await self.clients()
        cycle = payload.get("cycle")
        addresses = [a for a in [await self._address(clients, ref, cycle) for ref in payload["mailboxes"]] if a]
        # the cycle's listing holds every mailbox (the guard weighs removals against all the deployment's links)
        listed = self.listing.records(cycle)
        carried = [a for a in [await self._address(clients, ref, cycle) for ref in payload.get("carried", [])] if a]
        verdict = await deployment_guard(clients.store, self.settings.sync, datetime.fromisoformat(payload["now"]), addresses,
                                         int(payload.get("candidates", 0)), await self._global_filters(clients),
                                         held=int(payload.get("held", 0)), listed=listed, carried=carried)
        if verdict.message:
            log.error("cycle's removals held by the deployment-wide guard: removals=%d links=%d", verdict.removals, verdict.links)
        return verdict.to_dict()

    async def retest_mailboxes(self, payload: dict) -> dict:
        """M8: test again the mailboxes Exchange refused while it may still be applying the app's scope; those that pass
        are enabled and read their window at the next collect. Answered, never raised (a cycle goes on without it)."""
        from ..admin.mailboxes import AdminError, MailboxAdmin
        clients = await self.clients()
        cycle = payload.get("cycle")
        addresses = [a for a in [await self._address(clients, ref, cycle) for ref in payload["mailboxes"]] if a]
        admin = MailboxAdmin(clients.store.mailboxes, clients.calendar, tenants=self.settings.tenants)
        try:
            reports = await admin.test_and_enable(addresses, datetime.fromisoformat(payload["now"]))
        except (AdminError, TransientError, AzureError) as exc:
            log.warning("mailbox retest failed: mailboxes=%d error=%s", len(addresses), type(exc).__name__)
            return {"tested": 0, "succeeded": 0, "error": _error_text(exc)}
        return {"tested": len(reports), "succeeded": sum(r.ok for r in reports)}

    async def finish_mailbox_sync(self, payload: dict) -> dict:
        """Ends a webhook-started sync unless a change was recorded since it last looked (then: go round again)."""
        clients = await self.clients()
        mailbox = await self._address(clients, payload["mailbox_ref"])
        if mailbox is None:
            return {"done": True}
        done = await clients.store.wakes.finish(mailbox, int(payload["generation"]), datetime.fromisoformat(payload["now"]),
                                          release=bool(payload.get("release")))
        return {"done": done}

    async def address_of(self, ref: str) -> str | None:
        return await self._address(await self.clients(), ref)

    async def _address(self, clients: Clients, ref: str, cycle: str | None = None) -> str | None:
        """The address behind a pseudonym: from the listing, else from a new one (listing.py)."""
        known = self.listing.address(ref, cycle)
        if known is not None:
            return known
        async with self.listing.lock():
            if self.listing.address(ref, cycle) is None:
                records = await clients.store.mailboxes.all()
                filters = await clients.store.config.global_filters() if cycle is not None else None
                self.listing.remember(await self._telemetry_key_of(clients), records, cycle, filters)
        return self.listing.address(ref, cycle)

    async def record_run(self, summary: dict) -> dict:
        clients = await self.clients()
        await clients.store.runs.record({k: v for k, v in summary.items() if k != "mailboxes"})
        started, finished = datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])
        telemetry.record_cycle(summary, (finished - started).total_seconds())
        return {"recorded": summary["id"]}


def _guard_message(payload: dict) -> str | None:
    """The deployment-wide guard's message a cycle hands its syncs (D5); `hold_removals` is the key orchestrations
    started before 2026-12-08 carry (Durable replays them on this code)."""
    return payload.get("guard_message", payload.get("hold_removals"))


def _from_a_cycle(payload: dict) -> bool:
    """A cycle's sync is handed the guard's verdict (a message or None); a webhook's sync is not."""
    return "guard_message" in payload or "hold_removals" in payload


def _error_text(exc: Exception) -> str:
    """What a failed activity reports: the error's type and its code, never its text (texts can quote addresses)."""
    code = getattr(exc, "code", None) or getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" ({code})" if code else "")
