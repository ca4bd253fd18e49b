"""S5 sync filters, global or per mailbox: list, add (checked against the values the environment has, D5),
remove, and a dry run that shows what a change would remove, per mailbox, before it is applied."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..core.domain import Link, LinkState, Mailbox, SyncFilter
from ..core.ids import checked_address, is_address, is_plain_text
from ..core.plan import plan
from ..core.serialize import filter_to_dict
from ..core.settings import SyncSettings
from ..ports import FILTER_FIELDS, Services
from .mailboxes import AdminError, MailboxAdmin
from .requests import InvalidRequest

FILTER_ACTIONS = ("list", "add", "remove")
LABELS = {"booking_statuses": "booking status", "work_order_types": "work order type", "territories": "territory"}


@dataclass(frozen=True)
class FilterRequest:
    action: str
    mailbox: str | None
    name: str
    values: dict[str, frozenset[str]]          # booking_statuses, work_order_types, territories
    dry_run: bool = False


def filter_request(action: Any, mailbox: Any, name: Any = None, booking_statuses: Any = (), work_order_types: Any = (),
                   territories: Any = (), dry_run: Any = False) -> FilterRequest:
    """Validates what a person (CLI or HTTP) asked for; raises InvalidRequest naming the bad value."""
    if action not in FILTER_ACTIONS:
        raise InvalidRequest(f"unknown action {action!r}; expected one of {', '.join(FILTER_ACTIONS)}")
    values = {"booking_statuses": booking_statuses, "work_order_types": work_order_types, "territories": territories}
    for label, given in values.items():
        if not isinstance(given, (list, tuple)) or not all(is_plain_text(v, 200) for v in given):
            raise InvalidRequest(f"'{label}' must be a list of names")
    if action in ("add", "remove") and not is_plain_text(name, 100):
        raise InvalidRequest(f"{action} needs a filter name (1-100 characters, no control or invisible characters)")
    if action == "add" and not any(values.values()):
        raise InvalidRequest("a filter needs at least one booking status, work order type or territory")
    if mailbox is not None and not is_address(mailbox):
        raise InvalidRequest("'mailbox' must be a mailbox address")
    if not isinstance(dry_run, bool):
        raise InvalidRequest("'dry_run' must be true or false")
    return FilterRequest(action, checked_address(mailbox) if mailbox is not None else None, name or "",
                         {k: frozenset(v) for k, v in values.items()}, dry_run)


async def filters_action(services: Services, environments: tuple[str, ...], request: FilterRequest, settings: SyncSettings,
                         now: datetime) -> dict[str, Any]:
    """Raises InvalidRequest (a value the environment does not have) or AdminError (refused)."""
    store = services.store
    found = await store.mailboxes.get(request.mailbox) if request.mailbox else None
    target = found.mailbox if found is not None else None
    if request.mailbox and target is None:
        raise AdminError(f"mailbox {request.mailbox} is not registered")
    current = target.filters if target is not None else await store.config.global_filters()
    changed = _changed(current, request)
    scope = f"mailbox {request.mailbox}" if request.mailbox else "global"
    if request.action == "add":
        await _check_values(services, [target.environment] if target and target.environment else list(environments), request)
    if request.dry_run or request.action == "list":
        out: dict[str, Any] = {"scope": scope, "filters": [filter_to_dict(f) for f in changed]}
        if request.dry_run and request.action != "list":
            out.update(dry_run=True, would_remove=await _preview(services, target, changed, settings, now))
        return out
    if target is not None:
        await MailboxAdmin(store.mailboxes).set_filters(target.address, changed)
    else:
        await store.config.put_global_filters(changed)
        # the scope changed: each mailbox re-reads its window
        await store.mailboxes.update_many([r.address for r in await store.mailboxes.all()], needs_initial_read=True)
    return {"scope": scope, "filters": [filter_to_dict(f) for f in changed]}


def _changed(current: tuple[SyncFilter, ...], request: FilterRequest) -> tuple[SyncFilter, ...]:
    if request.action == "add":
        new = SyncFilter(request.name, request.values["booking_statuses"], request.values["work_order_types"],
                         request.values["territories"])
        return (*tuple(f for f in current if f.name != request.name), new)
    if request.action == "remove":
        if not any(f.name == request.name for f in current):
            raise AdminError(f"no filter named {request.name}")
        return tuple(f for f in current if f.name != request.name)
    return current


async def _check_values(services: Services, environments: list[str], request: FilterRequest) -> None:
    """D5: a filter naming a value no environment has would silently match nothing; it is refused, listing what exists."""
    known: dict[str, set[str]] = {field: set() for field in FILTER_FIELDS}
    for environment in environments:
        for field, names in (await services.source(environment).filter_values()).items():
            known[field] |= names
    for field, wanted in request.values.items():
        lowered = {k.lower() for k in known[field]}
        unknown = sorted(v for v in wanted if v.lower() not in lowered)
        if unknown:
            raise InvalidRequest(f"{LABELS[field]} {', '.join(repr(u) for u in unknown)} does not exist in the environment; "
                                 f"the {LABELS[field]} names there are: {', '.join(sorted(known[field])) or '(none)'}")


async def _preview(services: Services, target: Mailbox | None, changed: tuple[SyncFilter, ...], settings: SyncSettings,
                   now: datetime) -> dict[str, int]:
    """What the change would remove (unlink or delete), per mailbox: each linked booking read again and planned
    under the new filters. Writes nothing."""
    store = services.store
    global_filters = await store.config.global_filters()
    mailboxes = [target] if target is not None else [r.mailbox for r in await store.mailboxes.all() if not r.unreadable]
    out: dict[str, int] = {}
    for mailbox in mailboxes:
        if not mailbox.eligible:
            continue
        links = {k: link for k, link in (await store.partitions.links(mailbox.address)).items() if link.state == LinkState.LINKED}
        bookings = await _current_bookings(services, links)
        future = replace(mailbox, filters=changed) if target is not None else mailbox
        removals = plan(bookings, set(), links, future, settings, now, global_filters=changed if target is None else global_filters,
                        force=True).removals
        if removals:
            out[mailbox.address] = removals
    return out


async def _current_bookings(services: Services, links: dict[str, Link]) -> dict[str, Any]:
    by_environment: dict[str, list[str]] = {}
    for link in links.values():
        by_environment.setdefault(link.environment, []).append(link.booking_id)
    bookings: dict[str, Any] = {}
    for environment, ids in by_environment.items():
        read = await services.source(environment).read_bookings(ids)
        bookings.update({b.id: b for b in read.bookings})
    return bookings
