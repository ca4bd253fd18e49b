"""Activity bodies: plain dict in, small plain dict out. function_app.py and the local runner call these.

Mailbox and environment problems are answered as results (outcome, error, retryable), never raised,
so one mailbox's failure can never stop another's (T2, M6). Only a transient failure of the collect
step is raised, for the orchestrator's retry options to handle.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Callable

from azure.core.exceptions import AzureError

from . import telemetry
from .engine import MailboxSync, collect
from .errors import PermanentError, TransientError
from .runtime import Runtime
from .settings import AppSettings, load

log = logging.getLogger("sync.activities")
SettingsLoader = Callable[[], AppSettings]


class Activities:
    def __init__(self, settings: SettingsLoader = load):
        self._settings_loader = settings
        self._settings: AppSettings | None = None

    @property
    def settings(self) -> AppSettings:
        if self._settings is None:
            self._settings = self._settings_loader()
        return self._settings

    async def list_environments(self, _: Any = None) -> list[str]:
        return list(self.settings.environments)

    async def collect_environment(self, payload: dict) -> dict:
        environment, now = payload["environment"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        async with Runtime(self.settings) as rt:
            await rt.store.ensure_tables()
            try:
                with telemetry.span("sync.collect", environment=environment):
                    result = await collect(rt.source(environment), rt.store, self.settings.sync, now)
            except TransientError:
                raise                                          # the orchestrator's retry options take it from here
            except PermanentError as exc:
                log.error("collect failed: environment=%s code=%s", environment, exc.code)
                return {"environment": environment, "error": str(exc), "mailboxes": []}
            out = result.to_dict()
            out["seconds"] = round(time.monotonic() - started, 3)
            out["dataverse_requests"] = rt.source(environment).requests
        telemetry.record_collect(out)
        log.info("collected: environment=%s mode=%s read=%d deleted=%d mailboxes=%d", environment, out["mode"],
                 out["bookings_read"], out["deleted"], len(out["mailboxes"]))
        return out

    async def sync_mailbox(self, payload: dict) -> dict:
        mailbox, now = payload["mailbox"], datetime.fromisoformat(payload["now"])
        started = time.monotonic()
        ref = "mbx-unknown"
        try:
            async with Runtime(self.settings) as rt:
                ref = telemetry.mailbox_ref(await rt.store.telemetry_key(), mailbox)
                with telemetry.span("sync.mailbox", mailbox_ref=ref) as current:
                    sync = MailboxSync(rt.store, rt.calendar, self.settings.sync, now, global_filters=await rt.store.global_filters())
                    result = (await sync.run(mailbox, dry_run=payload.get("dry_run", False), force=payload.get("force", False))).to_dict()
                    result["graph_requests"] = rt.calendar.http_requests if rt._calendar else 0   # noqa: SLF001
                    current.set_attributes({"outcome": result["outcome"], **{f"count.{k}": v for k, v in result["counts"].items()}})
        except (TransientError, AzureError, OSError) as exc:
            log.warning("mailbox sync failed transiently: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"mailbox": mailbox, "outcome": "error", "retryable": True, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "counts": {}}
        except Exception as exc:  # noqa: BLE001 - reported per mailbox; the cycle goes on
            # the type only: exception texts can quote addresses
            log.error("mailbox sync failed: mailbox_ref=%s error=%s", ref, type(exc).__name__)
            result = {"mailbox": mailbox, "outcome": "error", "retryable": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "counts": {}}
        seconds = time.monotonic() - started
        result["seconds"] = round(seconds, 3)
        result.setdefault("retryable", result["outcome"] == "transient")
        telemetry.record_mailbox(result, ref, seconds)
        log.info("mailbox synced: mailbox_ref=%s outcome=%s counts=%s", ref, result["outcome"], result["counts"])
        return result

    async def record_run(self, summary: dict) -> dict:
        async with Runtime(self.settings) as rt:
            await rt.store.ensure_tables()
            await rt.store.record_run({k: v for k, v in summary.items() if k != "mailboxes"})
        started, finished = datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])
        telemetry.record_cycle(summary, (finished - started).total_seconds())
        return {"recorded": summary["id"]}
