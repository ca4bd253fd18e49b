"""G2: the mailbox status listing an administrator looks at first."""
from __future__ import annotations

from typing import Any

from ..core.tenants import TenantMap

WRITE_COUNTS = ("count_created", "count_updated", "count_deleted", "count_cancelled", "count_unlinked", "count_recreated")


def mailbox_status_rows(rows: list[dict[str, Any]], telemetry_key: str | None = None,
                        tenants: TenantMap | None = None) -> list[dict[str, Any]]:
    """One row per mailbox; with the telemetry key, also the mailbox_ref that telemetry uses for it; with the tenant
    map, the Entra tenant (its id, or home) that holds the mailbox."""
    from ..core.pseudonym import mailbox_ref
    out = []
    for r in sorted(rows, key=lambda r: r["address"]):
        written = sum(int(r.get(k) or 0) for k in WRITE_COUNTS)
        out.append({"mailbox": r["address"], "environment": r.get("environment") or "",
                    **({"tenant": tenants.tenant_of(r["address"]) or "not mapped"} if tenants is not None else {}),
                    "sync_method": r.get("sync_method", "server-side"),
                    "approved": "yes" if r.get("approved") else "no", "test": r.get("test_status", "not_tested"),
                    "reason": (r.get("test_reason") or r.get("test_warning") or "")[:60], "enabled": "yes" if _syncs(r) else "no",
                    "tested_at": (r.get("tested_at") or "")[:19], "last_cycle": (r.get("last_cycle_at") or "")[:19],
                    "outcome": r.get("last_outcome") or "", "written": written, "last_error": (r.get("last_error") or "")[:80],
                    # E3: rows the last sync could not plan, and why; the mailbox synced the rest
                    "set_aside": int(r.get("set_aside_count") or 0), "set_aside_reason": r.get("set_aside_reason") or "",
                    **({"ref": mailbox_ref(telemetry_key, r["address"])} if telemetry_key else {})})
    return out


def _syncs(row: dict[str, Any]) -> bool:
    """M1, M5: 'enabled' only for a mailbox that really syncs."""
    return (row.get("sync_method", "server-side") == "server-side" and bool(row.get("approved")) and row.get("test_status") == "success"
            and bool(row.get("enabled", True)))
