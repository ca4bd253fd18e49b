"""Mailbox operations as one function shared by the command line and the HTTP functions (two faces, one
implementation). Input is validated here; the result is a plain dict."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..ports import MailboxStore, Services
from .mailboxes import AdminError, MailboxAdmin, Progress, _none
from .status import mailbox_status_rows

ACTIONS = ("discover", "register", "approve", "test", "enable", "disable", "move", "list")
ADDRESS = re.compile(r"^[^@\s<>\"'(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
MAX_ADDRESSES = 5000


class InvalidRequest(ValueError):
    pass


def validate(action: str, addresses: Any, all_: Any, environment: Any, environments: tuple[str, ...]) -> list[str]:
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
    bad = [a for a in addresses if not ADDRESS.match(a)]
    if bad:
        raise InvalidRequest(f"{len(bad)} value(s) are not email addresses")
    if environment is not None and (not isinstance(environment,
                                                   str) or environment.rstrip("/").lower() not in {e.lower() for e in environments}):
        raise InvalidRequest("'environment' must be one of the configured DATAVERSE_ENVIRONMENTS")
    if action == "move" and not environment:
        raise InvalidRequest("move needs 'environment'")
    if action in ("register", "approve", "test", "enable", "disable", "move") and not addresses and not all_:
        raise InvalidRequest(f"{action} needs 'addresses' or 'all': true")
    return [a.lower() for a in addresses]


async def mailbox_action(services: Services, environments: tuple[str, ...], action: str, addresses: list[str], all_: bool,
                         environment: str | None, now: datetime, progress: Progress = _none) -> dict[str, Any]:
    admin = MailboxAdmin(services.store, services.calendar)
    environment = environment.rstrip("/") if environment else None
    rows = await services.store.list_mailboxes()
    targets = [r["address"] for r in rows] if all_ else addresses
    if action == "discover":
        targets_env = [environment] if environment else list(environments)
        return {"discovered": {env: await admin.discover(services.source(env)) for env in targets_env}}
    if action == "register":
        for address in targets:
            await admin.register(address, environment or environments[0])
        return {"registered": len(targets)}
    if action == "approve":
        return {"approved": await admin.approve(targets, progress)}
    if action == "test":
        reports = await admin.test_and_enable(targets, now, environment, progress)
        return {"tested": len(reports), "succeeded": sum(r.ok for r in reports),
                "results": [{"mailbox": r.address, "result": "success" if r.ok else "failure", "reason": r.reason, "message": r.message}
                            for r in reports]}
    if action in ("enable", "disable"):
        for address in targets:
            await admin.set_enabled(address, action == "enable")
        return {action + "d": len(targets)}
    if action == "move" and environment:
        for address in targets:
            await admin.move(address, environment)
        return {"moved": len(targets), "environment": environment}
    return {"mailboxes": mailbox_status_rows(rows, await services.store.telemetry_key())}


__all__ = ["ACTIONS", "AdminError", "InvalidRequest", "mailbox_action", "validate"]


FILTER_ACTIONS = ("list", "add", "remove")


async def filters_action(store: MailboxStore, action: str, mailbox: str | None, name: str | None = None, booking_statuses: Any = (),
                         work_order_types: Any = (), territories: Any = ()) -> dict:
    """S5: list, add or remove a sync filter, global or for one mailbox. Raises InvalidRequest or AdminError."""
    from ..core.domain import SyncFilter
    from ..core.serialize import filter_to_dict
    if action not in FILTER_ACTIONS:
        raise InvalidRequest(f"unknown action {action!r}; expected one of {', '.join(FILTER_ACTIONS)}")
    for label, values in (("booking_statuses", booking_statuses), ("work_order_types", work_order_types), ("territories", territories)):
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in values):
            raise InvalidRequest(f"'{label}' must be a list of names")
    if action in ("add", "remove") and (not isinstance(name, str) or not 0 < len(name) <= 100):
        raise InvalidRequest(f"{action} needs a filter name (1-100 characters)")
    name = name or ""
    if mailbox is not None:
        record = await store.get_mailbox(mailbox.lower())
        if record is None:
            raise AdminError(f"mailbox {mailbox} is not registered")
        current = record.filters
    else:
        current = await store.global_filters()
    if action == "add":
        if not (booking_statuses or work_order_types or territories):
            raise InvalidRequest("a filter needs at least one booking status, work order type or territory")
        new = SyncFilter(name, frozenset(booking_statuses), frozenset(work_order_types), frozenset(territories))
        current = (*tuple(f for f in current if f.name != name), new)
    elif action == "remove":
        if not any(f.name == name for f in current):
            raise AdminError(f"no filter named {name}")
        current = tuple(f for f in current if f.name != name)
    if action != "list":
        if mailbox is not None:
            await MailboxAdmin(store).set_filters(mailbox, current)
        else:
            await store.put_global_filters(current)
            for row in await store.list_mailboxes():          # the scope changed: each mailbox re-reads its window
                await store.update_mailbox_fields(row["address"], needs_initial_read=True)
    return {"scope": f"mailbox {mailbox}" if mailbox else "global", "filters": [filter_to_dict(f) for f in current]}
