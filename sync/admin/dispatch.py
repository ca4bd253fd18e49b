"""Mailbox operations dispatched by their declarations (commands.py): one function shared by the command line and
the HTTP functions (two faces, one implementation). Input is validated here; the result is a plain
dict."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.ids import checked_address, environment_named, is_address
from ..ports import Services
from .commands import MAILBOX_OPERATIONS, SYNC_METHODS, Context, MailboxRequest, Targets
from .mailboxes import AdminError, MailboxAdmin, Progress, _none
from .requests import InvalidRequest

ACTIONS = tuple(MAILBOX_OPERATIONS)
MAX_ADDRESSES = 5000


def validate(action: str, addresses: Any, all_: Any, environment: Any, environments: tuple[str, ...], method: Any = None) -> list[str]:
    declared = MAILBOX_OPERATIONS.get(action)
    if declared is None:
        raise InvalidRequest(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not isinstance(all_, bool):
        raise InvalidRequest("'all' must be true or false")
    addresses = [] if addresses is None else addresses
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise InvalidRequest("'addresses' must be a list of email addresses")
    if len(addresses) > MAX_ADDRESSES:
        raise InvalidRequest(f"at most {MAX_ADDRESSES} addresses per call")
    bad = [a for a in addresses if not is_address(a)]
    if bad:
        raise InvalidRequest(f"{len(bad)} value(s) are not email addresses")
    if environment is not None and environment_named(environments, environment) is None:
        raise InvalidRequest("'environment' must be one of the configured DATAVERSE_ENVIRONMENTS")
    if "environment" in declared.needs and not environment:
        raise InvalidRequest(f"{action} needs 'environment'")
    if "method" in declared.needs and method not in SYNC_METHODS:
        raise InvalidRequest(f"{action} needs 'method': one of {', '.join(SYNC_METHODS)}")
    if declared.targets is Targets.MAILBOXES and not addresses and not all_:
        raise InvalidRequest(f"{action} needs 'addresses' or 'all': true")
    return [checked_address(a) for a in addresses]


async def mailbox_action(services: Services, environments: tuple[str, ...], action: str, addresses: list[str], all_: bool,
                         environment: str | None, now: datetime, progress: Progress = _none, *,
                         method: str | None = None, confirm_dynamics_sync: bool = False) -> dict[str, Any]:
    """One mailbox operation (M1-M5, G2), for the CLI and HTTP alike; raises AdminError when refused."""
    declared = MAILBOX_OPERATIONS[action]
    admin = MailboxAdmin(services.store.mailboxes, services.calendar, tenants=services.tenants)
    context = Context(services, environments, admin, await services.store.mailboxes.all())
    request = MailboxRequest(addresses, now, all_, environment_named(environments, environment) if environment else None, method, progress,
                             confirm_dynamics_sync)
    assert declared.handler is not None
    return await declared.handler(context, request)


__all__ = ["ACTIONS", "AdminError", "InvalidRequest", "mailbox_action", "validate"]
