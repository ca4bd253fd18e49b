"""Every administrative operation, declared once: its name, the app roles it needs, what it targets, its help and
its handler. The CLI (its subcommands and their help), the HTTP routes (which action a route takes, who may call
it) and the access check all read these declarations, so a new operation is one `@operation` and its handler.

Mailbox operations take a `MailboxRequest` (the addresses or all of them, an environment, a method); the others
(`run`, `filters`, `diagnose`, `status`, `audit`) have request shapes of their own and are declared here for their
roles and help, their handlers living with their routes.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from ..core.access import APPROVER, EITHER, OPERATOR
from ..ports import MailboxRecord, PermanentError, Services
from .mailboxes import AdminError, MailboxAdmin, Progress, _none
from .status import mailbox_status_rows

SYNC_METHODS = ("server-side", "none")


class Targets(Enum):
    NOTHING = "nothing"
    MAILBOXES = "mailboxes"          # addresses, or all the registered mailboxes


@dataclass(frozen=True)
class MailboxRequest:
    addresses: list[str]
    now: datetime
    all: bool = False
    environment: str | None = None
    method: str | None = None
    progress: Progress = _none
    confirm_dynamics_sync: bool = False          # M7: enable mailboxes Dynamics' own sync serves, knowing it


@dataclass(frozen=True)
class Context:
    services: Services
    environments: tuple[str, ...]
    admin: MailboxAdmin
    records: list[MailboxRecord]

    def targets(self, request: MailboxRequest) -> list[str]:
        return [r.address for r in self.records] if request.all else request.addresses


Handler = Callable[[Context, MailboxRequest], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class AdminOperation:
    name: str
    roles: frozenset[str]
    help: str
    targets: Targets = Targets.NOTHING
    changes: bool = True                          # audited, and refused to a reader
    needs: frozenset[str] = field(default_factory=frozenset)   # request fields it cannot go without
    handler: Handler | None = None                # mailbox operations only


OPERATIONS: dict[str, AdminOperation] = {}
MAILBOX_OPERATIONS: dict[str, AdminOperation] = {}


def operation(name: str, *, roles: frozenset[str], help: str, targets: Targets = Targets.MAILBOXES, changes: bool = True,
              needs: frozenset[str] = frozenset()) -> Callable[[Handler], Handler]:
    """Declares a mailbox operation with its handler."""
    def declare(handler: Handler) -> Handler:
        declared = AdminOperation(name, roles, help, targets, changes, needs, handler)
        OPERATIONS[name] = MAILBOX_OPERATIONS[name] = declared
        return handler
    return declare


def declare(name: str, *, roles: frozenset[str], help: str, changes: bool) -> None:
    """Declares an operation whose handler is its own route (its request has its own shape)."""
    OPERATIONS[name] = AdminOperation(name, roles, help, changes=changes)


def roles_for(name: str) -> frozenset[str]:
    """The roles an operation needs; an unknown name needs one no principal has (so it is refused, never run)."""
    found = OPERATIONS.get(name)
    return found.roles if found is not None else frozenset({"(no such operation)"})


ONLY_OPERATOR, ONLY_APPROVER = frozenset({OPERATOR}), frozenset({APPROVER})
declare("run", roles=ONLY_OPERATOR, help="run one sync cycle now (the same orchestration the timer starts)", changes=True)
declare("status", roles=EITHER, help="the current cycle and the last runs", changes=False)
declare("filters-list", roles=EITHER, help="the sync filters, global or a mailbox's (S5)", changes=False)
declare("filters-change", roles=ONLY_OPERATOR, help="add or remove a sync filter (S5), or preview what it would remove", changes=True)
declare("diagnose", roles=EITHER, help="is this booking in Outlook, and if not, why (G1)", changes=False)
declare("audit", roles=EITHER, help="who did what, on which mailboxes, when, with what result", changes=False)
declare("preflight", roles=EITHER, help="check, with the app's own identity, what a real deployment needs (G3)", changes=False)


@operation("discover", roles=ONLY_APPROVER, targets=Targets.NOTHING, help="register the environment's user resources as pending (M3)")
async def _discover(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    environments = [request.environment] if request.environment else list(ctx.environments)
    return {"discovered": {env: await ctx.admin.discover(ctx.services.source(env), request.progress) for env in environments}}


@operation("register", roles=ONLY_APPROVER, help="register mailboxes, bound to an environment (M3, M4)")
async def _register(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    targets = ctx.targets(request)
    for address in targets:
        await ctx.admin.register(address, request.environment or ctx.environments[0])
    return {"registered": len(targets)}


@operation("approve", roles=ONLY_APPROVER, help="approve mailboxes for sync (M1)")
async def _approve(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    return {"approved": await ctx.admin.approve(ctx.targets(request), request.progress)}


@operation("test", roles=ONLY_APPROVER, help="test each mailbox with the app's own Graph identity, and enable those that pass (M2)")
async def _test(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    synced: set[str] = set()
    for environment in [request.environment] if request.environment else ctx.environments:
        try:
            synced |= await ctx.services.source(environment).dynamics_synced()
        except PermanentError as exc:
            raise AdminError(f"the Dynamics mailboxes of {environment} could not be read ({exc.code}), so mailboxes its own "
                             "server-side sync serves cannot be told apart (M7): give the app's security role read access to "
                             "the Mailbox table (docs/deploy.md, step 2)") from exc
    reports = await ctx.admin.test_and_enable(ctx.targets(request), request.now, request.environment, request.progress,
                                              dynamics_synced=synced, confirmed=request.confirm_dynamics_sync)
    return {"tested": len(reports), "succeeded": sum(r.ok for r in reports),
            "results": [{"mailbox": r.address, "result": "success" if r.ok else "failure", "reason": r.reason,
                         "message": r.message or r.warning} for r in reports]}


@operation("enable", roles=ONLY_APPROVER, help="turn sync on again; nothing is created twice (M5)")
async def _enable(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    return await _set_enabled(ctx, request, True)


@operation("disable", roles=ONLY_APPROVER, help="turn sync off; nothing is deleted (M5)")
async def _disable(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    return await _set_enabled(ctx, request, False)


async def _set_enabled(ctx: Context, request: MailboxRequest, enabled: bool) -> dict[str, Any]:
    targets = ctx.targets(request)
    for address in targets:
        await ctx.admin.set_enabled(address, enabled)
    return {"enabled" if enabled else "disabled": len(targets)}


@operation("move", roles=ONLY_OPERATOR, needs=frozenset({"environment"}),
           help="bind mailboxes to another environment; they must be tested again (M4)")
async def _move(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    targets = ctx.targets(request)
    environment = request.environment or ctx.environments[0]
    for address in targets:
        await ctx.admin.move(address, environment)
    return {"moved": len(targets), "environment": environment}


@operation("set-method", roles=ONLY_APPROVER, needs=frozenset({"method"}),
           help="the mailboxes' synchronization method: server-side or none (M1)")
async def _set_method(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    targets = ctx.targets(request)
    for address in targets:
        await ctx.admin.set_sync_method(address, request.method or "")
    return {"updated": len(targets), "sync_method": request.method}


@operation("list", roles=EITHER, targets=Targets.NOTHING, changes=False,
           help="every mailbox: its binding, test, last cycle and what it wrote (G2)")
async def _list(ctx: Context, request: MailboxRequest) -> dict[str, Any]:
    key = await ctx.services.store.config.telemetry_key()
    return {"mailboxes": mailbox_status_rows(ctx.records, key, ctx.services.tenants)}
