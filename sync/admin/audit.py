"""The audit trail: every administrative operation, whoever ran it (over HTTP or the CLI), is recorded with who,
what, on which mailboxes, when and with what result, in Table Storage; telemetry gets an event with ids and
counts only (no names, no addresses)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from ..core.access import Principal
from ..ports import Journal

log = logging.getLogger("sync.audit")
T = TypeVar("T")


async def audited(journal: Journal, who: Principal, operation: str, mailboxes: list[str], now: datetime, action: Awaitable[T],
                  detail: str = "") -> T:
    result, error = "error", ""
    try:
        value = await action
        result = "ok"
        return value
    except Exception as exc:
        result = "refused" if type(exc).__name__ in ("AdminError", "InvalidRequest") else "error"
        error = str(exc)[:300]
        raise
    finally:
        await journal.record({"at": now.isoformat(), "who": who.name, "who_id": who.object_id, "operation": operation,
                                  "mailboxes": mailboxes[:200], "mailbox_count": len(mailboxes), "result": result,
                                  "detail": detail[:300], "error": error})
        log.info("admin operation", extra={"operation": operation, "result": result, "mailbox_count": len(mailboxes),
                                           "principal_id": who.object_id})
