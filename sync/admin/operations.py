"""Mailbox operations as one function shared by the command line and the HTTP functions (two faces, one
implementation). Input is validated here; the result is a plain dict."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.ids import checked_address, environment_named, is_address
from ..ports import Services
from .mailboxes import AdminError, MailboxAdmin, Progress, _none
from .requests import InvalidRequest
from .status import mailbox_status_rows

ACTIONS = ("discover", "register", "approve", "test", "enable", "disable", "move", "set-method", "list")
NEEDS_TARGETS = ("register", "approve", "test", "enable", "disable", "move", "set-method")
SYNC_METHODS = ("server-side", "none")
MAX_ADDRESSES = 5000


def validate(action: str, addresses: Any, all_: Any, environment: Any, environments: tuple[str, ...], method: Any = None) -> list[str]:
    if action not in ACTIONS:
        raise InvalidRequest(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not isinstance(all_, bool):
        raise InvalidRequest("'all' must be true or false")
    if addresses is None:
        addresses = []
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise InvalidRequest("'addresses' must be a list of email addresses")
    if len(addresses) > MAX_ADDRESSES:
        raise InvalidRequest(f"at most {MAX_ADDRESSES} addresses per call")
    bad = [a for a in addresses if not is_address(a)]
    if bad:
        raise InvalidRequest(f"{len(bad)} value(s) are not email addresses")
    if environment is not None and environment_named(environments, environment) is None:
        raise InvalidRequest("'environment' must be one of the configured DATAVERSE_ENVIRONMENTS")
    if action == "move" and not environment:
        raise InvalidRequest("move needs 'environment'")
    if action == "set-method" and method not in SYNC_METHODS:
        raise InvalidRequest(f"set-method needs 'method': one of {', '.join(SYNC_METHODS)}")
    if action in NEEDS_TARGETS and not addresses and not all_:
        raise InvalidRequest(f"{action} needs 'addresses' or 'all': true")
    return [checked_address(a) for a in addresses]


async def mailbox_action(services: Services, environments: tuple[str, ...], action: str, addresses: list[str], all_: bool,
                         environment: str | None, now: datetime, progress: Progress = _none, *,
                         method: str | None = None) -> dict[str, Any]:
    """One mailbox operation (M1-M5, G2), for the CLI and HTTP alike; raises AdminError when refused."""
    admin = MailboxAdmin(services.store, services.calendar, tenants=services.tenants)
    environment = environment_named(environments, environment) if environment else None
    rows = await services.store.list_mailboxes()
    targets = [r["address"] for r in rows] if all_ else addresses
    if action == "discover":
        return {"discovered": {env: await admin.discover(services.source(env), progress)
                               for env in ([environment] if environment else environments)}}
    if action == "test":
        reports = await admin.test_and_enable(targets, now, environment, progress)
        return {"tested": len(reports), "succeeded": sum(r.ok for r in reports),
                "results": [{"mailbox": r.address, "result": "success" if r.ok else "failure", "reason": r.reason,
                             "message": r.message or r.warning} for r in reports]}
    if action == "list":
        return {"mailboxes": mailbox_status_rows(rows, await services.store.telemetry_key(), services.tenants)}
    return await _each(admin, action, targets, environment or environments[0], method, progress)


async def _each(admin: MailboxAdmin, action: str, targets: list[str], environment: str, method: str | None,
                progress: Progress) -> dict[str, Any]:
    """The operations that act on each target the same way."""
    if action == "approve":
        return {"approved": await admin.approve(targets, progress)}
    for address in targets:
        if action == "register":
            await admin.register(address, environment)
        elif action in ("enable", "disable"):
            await admin.set_enabled(address, action == "enable")
        elif action == "move":
            await admin.move(address, environment)
        elif action == "set-method" and method:
            await admin.set_sync_method(address, method)              # M1
    done = {"register": "registered", "enable": "enabled", "disable": "disabled", "move": "moved", "set-method": "updated"}[action]
    return {done: len(targets), **({"environment": environment} if action == "move" else {}),
            **({"sync_method": method} if action == "set-method" else {})}


__all__ = ["ACTIONS", "AdminError", "InvalidRequest", "mailbox_action", "validate"]
