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

from ..adapters.tables import count_round_trips
from ..core.domain import Mailbox
from ..core.pseudonym import mailbox_ref
from ..core.serialize import mailbox_from_row
from ..engine.collect import collect
from ..engine.mailbox import LEASE_TTL_S, MailboxSync
from ..engine.removals import deployment_guard
from ..ports import PermanentError, TransientError
from . import telemetry
from .clients import Clients
from .orchestrators import COLLECT_ACTIVITY, FINISH_MAILBOX_SYNC_ACTIVITY, GUARD_ACTIVITY, RECORD_RUN_ACTIVITY, SYNC_MAILBOX_ACTIVITY
from .settings import AppSettings, load

log = logging.getLogger("sync.activities")
SettingsLoader = Callable[[], AppSettings]
MAILBOX_LEASE_S = LEASE_TTL_S


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
        self._addresses: dict[str, str] = {}
        self._entries: dict[str, tuple[Mailbox, dict[str, Any]]] = {}
        self._listed_for: str | None = None                # the cycle whose activities the listing serves
        self._address_locks: dict[int, asyncio.Lock] = {}

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
        """The global sync filters, read at most once a minute, once for all the activities that ask together."""
        if self._filters is None or time.monotonic() - self._filters[0] > FILTERS_TTL_S:
            async with self._lock():
                if self._filters is None or time.monotonic() - self._filters[0] > FILTERS_TTL_S:
                    self._filters = (time.monotonic(), await rt.store.global_filters())
        return self._filters[1]

    def _lock(self) -> asyncio.Lock:
        return self._address_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())

    async def _telemetry_key_of(self, rt: Clients) -> str:
        if self._telemetry_key is None:
            self._telemetry_key = await rt.store.telemetry_key()
        return self._telemetry_key

    async def _mailbox_ref(self, rt: Clients, mailbox: str) -> str:
        return mailbox_ref(await self._telemetry_key_of(rt), mailbox)

    async def mailbox_refs(self, addresses: list[str]) -> list[str]:
        rt = await self.clients()
        return [await self._mailbox_ref(rt, a) for a in addresses]

    def by_name(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """The activity functions under the names the orchestrators call them by."""
        return {COLLECT_ACTIVITY: self.collect_environment, SYNC_MAILBOX_ACTIVITY: self.sync_mailbox, RECORD_RUN_ACTIVITY: self.record_run,
                FINISH_MAILBOX_SYNC_ACTIVITY: self.finish_mailbox_sync, GUARD_ACTIVITY: self.check_removals}

    @property
    def settings(self) -> AppSettings:
        if self._settings is None:
            self._settings = self._settings_loader()
        return self._settings

    async def collect_environment(self, payload: dict) -> dict:
        environment, now = payload["environment"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        rt = await self.clients()
        if payload.get("cycle") is not None and payload["cycle"] == self._listed_for:
            self._listed_for = None                        # this collect writes rows: an earlier listing no longer serves
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
        if payload.get("cycle") is not None:
            await self._remember_listing(rt, result.listed, result.global_filters, payload["cycle"])
        out["mailboxes"] = await self.mailbox_refs(out["mailboxes"])     # orchestrations carry pseudonyms only
        out["carried"] = await self.mailbox_refs(out["carried"])
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
        round_trips = count_round_trips()
        try:
            rt = await self.clients()
            mailbox = mailbox or await self._address(rt, ref, payload.get("cycle"))
            ref = await self._mailbox_ref(rt, mailbox) if mailbox else ref
            result = await self._sync(rt, mailbox, ref, now, payload) if mailbox else {
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
        result["table_round_trips"] = round(round_trips[0], 2)
        result.setdefault("retryable", result["outcome"] in ("transient", "busy"))
        telemetry.record_mailbox(result, ref, seconds)
        log.info("mailbox synced: mailbox_ref=%s outcome=%s counts=%s", ref, result["outcome"], result["counts"])
        return result

    async def _sync(self, rt: Clients, mailbox: str, ref: str, now: datetime, payload: dict) -> dict:
        # Two syncs of one mailbox never overlap: the engine takes the mailbox's lease, which the timer cycle and a
        # webhook-started sync share. The holder names the orchestration's own call, so Durable's re-run of this
        # activity after its host died takes over the lease its first attempt left.
        holder = payload.get("lease_holder") or f"{ref}:{uuid.uuid4()}"
        with telemetry.span("sync.mailbox", mailbox_ref=ref, tenant=self.settings.tenants.tenant_of(mailbox)) as current:
            sync = MailboxSync(rt.store, rt.calendar, self.settings.sync, now, global_filters=await self._global_filters(rt), holder=holder)
            result = (await sync.run(mailbox, dry_run=payload.get("dry_run", False), force=payload.get("force", False),
                                     hold_removals=payload.get("hold_removals"), keep_held="hold_removals" not in payload,
                                     entry=self._listed_entry(ref, payload.get("cycle")))).to_dict()
            current.set_attributes({"outcome": result["outcome"], **{f"count.{k}": v for k, v in result["counts"].items()}})
            return result

    async def check_removals(self, payload: dict) -> dict:
        """D5 for the deployment: may this cycle's mailboxes remove what they would remove?"""
        rt = await self.clients()
        cycle = payload.get("cycle")
        addresses = [a for a in [await self._address(rt, ref, cycle) for ref in payload["mailboxes"]] if a]
        # the cycle's listing holds every mailbox (the guard weighs removals against all the deployment's links)
        listed = {entry[0].address: entry for entry in self._entries.values()} if cycle is not None and cycle == self._listed_for else None
        carried = [a for a in [await self._address(rt, ref, cycle) for ref in payload.get("carried", [])] if a]
        verdict = await deployment_guard(rt.store, self.settings.sync, datetime.fromisoformat(payload["now"]), addresses,
                                         int(payload.get("candidates", 0)), await self._global_filters(rt),
                                         held=int(payload.get("held", 0)), listed=listed, carried=carried)
        if verdict.message:
            log.error("cycle's removals held by the deployment-wide guard: removals=%d links=%d", verdict.removals, verdict.links)
        return verdict.to_dict()

    async def finish_mailbox_sync(self, payload: dict) -> dict:
        """Ends a webhook-started sync unless a change was recorded since it last looked (then: go round again)."""
        rt = await self.clients()
        mailbox = await self._address(rt, payload["mailbox_ref"])
        if mailbox is None:
            return {"done": True}
        done = await rt.store.finish_sync(mailbox, int(payload["generation"]), datetime.fromisoformat(payload["now"]),
                                          release=bool(payload.get("release")))
        return {"done": done}

    async def address_of(self, ref: str) -> str | None:
        return await self._address(await self.clients(), ref)

    async def _address(self, rt: Clients, ref: str, cycle: str | None = None) -> str | None:
        """The address behind a pseudonym. The map is rebuilt from one listing of the mailbox rows when a ref is not in
        it, or when a cycle asks that has not listed yet; once for all the activities that ask together (a cycle starts
        dozens at once; each listing every mailbox would make the cycle's cost grow with the square of the mailboxes)."""
        if ref in self._addresses and (cycle is None or cycle == self._listed_for):
            return self._addresses[ref]
        async with self._lock():
            if ref not in self._addresses or (cycle is not None and cycle != self._listed_for):
                rows = await rt.store.list_mailboxes()
                await self._remember_listing(rt, rows, await rt.store.global_filters() if cycle is not None else None, cycle)
        return self._addresses.get(ref)

    async def _remember_listing(self, rt: Clients, rows: list[dict[str, Any]], global_filters: tuple | None, cycle: str | None) -> None:
        """The listing the cycle's activities share: its collect's last (each collect of the cycle, one after another,
        lists after its writes), or the first activity's that finds none. With it, the cycle's filters."""
        key = await self._telemetry_key_of(rt)
        if global_filters is not None:
            self._filters = (time.monotonic(), global_filters)
        self._entries = {mailbox_ref(key, row["address"]): entry for row in rows if (entry := _entry(row)) is not None}
        self._addresses = {ref: entry[0].address for ref, entry in self._entries.items()}
        self._listed_for = cycle

    def _listed_entry(self, ref: str, cycle: str | None) -> tuple[Mailbox, dict[str, Any]] | None:
        """The mailbox and its row from this cycle's listing (made after its collect), or None: the sync reads it."""
        return self._entries.get(ref) if cycle is not None and cycle == self._listed_for else None

    async def record_run(self, summary: dict) -> dict:
        rt = await self.clients()
        await rt.store.record_run({k: v for k, v in summary.items() if k != "mailboxes"})
        started, finished = datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])
        telemetry.record_cycle(summary, (finished - started).total_seconds())
        return {"recorded": summary["id"]}


def _entry(row: dict[str, Any]) -> tuple[Mailbox, dict[str, Any]] | None:
    """A listed mailbox row as (mailbox, row); a row that does not read as a mailbox is left out, not the listing."""
    try:
        return mailbox_from_row(row), row
    except (KeyError, ValueError, TypeError) as exc:
        log.error("mailbox row unreadable, left out of the cycle: error=%s", type(exc).__name__)
        return None


def _error_text(exc: Exception) -> str:
    """What a failed activity reports: the error's type and its code, never its text (texts can quote addresses)."""
    code = getattr(exc, "code", None) or getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" ({code})" if code else "")
