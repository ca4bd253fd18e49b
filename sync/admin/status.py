"""G2: the mailbox status listing an administrator looks at first."""
from __future__ import annotations

from typing import Any

from ..core.pseudonym import mailbox_ref
from ..core.tenants import TenantMap
from ..ports import WRITE_COUNTS, MailboxRecord


def mailbox_status_rows(records: list[MailboxRecord], telemetry_key: str | None = None,
                        tenants: TenantMap | None = None) -> list[dict[str, Any]]:
    """One row per mailbox; with the telemetry key, also the mailbox_ref that telemetry uses for it; with the tenant
    map, the Entra tenant (its id, or home) that holds the mailbox."""
    return [_row(r, telemetry_key, tenants) for r in sorted(records, key=lambda r: r.address)]


def _row(r: MailboxRecord, telemetry_key: str | None, tenants: TenantMap | None) -> dict[str, Any]:
    m = r.mailbox
    return {"mailbox": r.address, "environment": m.environment or "",
            **({"tenant": tenants.tenant_of(r.address) or "not mapped"} if tenants is not None else {}),
            "sync_method": m.sync_method, "approved": "yes" if m.approved else "no", "test": m.test_status.value,
            "reason": (r.unreadable or m.test_reason or r.test_warning or "")[:60], "enabled": "yes" if r.syncs else "no",
            "tested_at": r.tested_at[:19], "last_cycle": r.last_cycle_at[:19], "outcome": r.last_outcome,
            "written": sum(r.counts.get(k, 0) for k in WRITE_COUNTS), "last_error": r.last_error[:80],
            # E3: rows the last sync could not plan, and why; the mailbox synced the rest
            "set_aside": r.set_aside_count, "set_aside_reason": r.set_aside_reason,
            **({"ref": mailbox_ref(telemetry_key, r.address)} if telemetry_key else {})}
