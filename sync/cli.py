"""`python -m sync ...`: the administrator's command line, over the same code the Functions app runs.

Exit codes: 0 done; 1 done, but some mailboxes failed or were blocked, or an environment could not be read; 2 bad usage
or settings; 3 refused.
Every command takes --json for scripts. Output carries ids and counts; addresses only where the
administrator asked about a mailbox.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .admin.audit import audited
from .app.settings import AppSettings, SettingError, load
from .local.console import CYCLE_COLUMNS, Progress, cycle_notes, cycle_rows, table
from .local.console import summary as _summary

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_CODES = """exit codes:
  0  done
  1  done, but some mailboxes failed or were blocked, or an environment could not be read
  2  bad usage or settings
  3  refused (for example, a mailbox bound to another environment)
  4  a service could not be reached, or a token could not be had (--debug shows the traceback)"""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _audit_time() -> datetime:
    """When an operation happened, to the microsecond: the audit trail lists operations in this order (an HTTP
    operation a moment before a CLI one in the same second must stay before it)."""
    return datetime.now(UTC)


async def _run_cycle(settings: AppSettings, force: bool, trigger: str, progress: Progress | None = None) -> dict:
    """One cycle through the local runner, under the same lease the timer takes (T1)."""
    from .app.clients import Clients
    from .local.cycle import CycleRunning, run_cycle_once

    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        try:
            work = run_cycle_once(clients.store.leases, settings, force=force, trigger=trigger, progress=progress)
            if trigger == "demo":
                return await work
            who = await clients.operator()
            return await audited(clients.store.audit, who, "run", [], _audit_time(), work, detail="force" if force else "")
        except CycleRunning as exc:
            raise RefusedError(str(exc)) from exc


class RefusedError(Exception):
    pass




async def cmd_audit(args: argparse.Namespace, settings: AppSettings) -> int:
    from .app.clients import Clients
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        entries = await clients.store.audit.recent(args.limit)
    rows = [{"at": e.get("at", "")[:19], "who": e.get("who"), "operation": e.get("operation"), "mailboxes": e.get("mailbox_count"),
             "result": e.get("result"), "detail": e.get("detail") or e.get("error") or ""} for e in entries]
    _print(args, entries, table(rows, ("at", "who", "operation", "mailboxes", "result", "detail")))
    return EXIT_OK


def _print(args: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else human)


# ---- commands ---------------------------------------------------------------------------------------------

async def cmd_run(args: argparse.Namespace, settings: AppSettings) -> int:
    summary = await _run_cycle(settings, args.force, "manual", Progress("syncing mailboxes", not args.json))
    rows = cycle_rows(summary)
    _print(args, summary, table(rows, CYCLE_COLUMNS) + f"\n\ncycle: {summary.get('outcome')}  totals: {summary.get('totals', {})}  "
                                                       f"outcomes: {summary.get('outcomes', {})}{cycle_notes(summary)}")
    return EXIT_OK if summary.get("outcome") == "succeeded" else EXIT_PARTIAL


async def cmd_demo(args: argparse.Namespace, settings: AppSettings) -> int:
    from .admin.mailboxes import MailboxAdmin
    from .app.clients import Clients

    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        admin = MailboxAdmin(clients.store.mailboxes, clients.calendar, tenants=clients.tenants)
        for environment in settings.environments:
            found = await admin.discover(clients.source(environment))
            print(_summary({"discovered": {environment: found}}))
        addresses = [m.address for m in await clients.store.mailboxes.all()]
        await admin.approve(addresses, Progress("approving", not args.json))
        reports = await admin.test_and_enable(addresses, _now(), progress=Progress("testing", not args.json))
        failed = [r for r in reports if not r.ok]
        print(f"tested {len(reports)} mailboxes: {len(reports) - len(failed)} enabled, {len(failed)} failed")
        for r in failed:
            print(f"  {r.address}: {r.reason} - {r.message}")

    before = _emulator_stats()
    first = await _run_cycle(settings, False, "demo")
    after_first = _emulator_stats()
    print("\ncycle 1:")
    print(table(cycle_rows(first), CYCLE_COLUMNS))
    print(f"totals: {first.get('totals')}")
    if before and after_first:
        print(f"Graph HTTP requests: {_graph_requests(after_first) - _graph_requests(before)}, "
              f"Graph operations: {_graph_ops(after_first) - _graph_ops(before)}")

    shown = next((r["mailbox"] for r in first.get("mailboxes", []) if (r.get("counts") or {}).get("created")), None)
    if shown:
        async with Clients(settings) as clients:
            events = await clients.calendar.list_events(shown, top=8)
        print(f"\n{shown}: the first {len(events)} events in Outlook")
        print(table([{"start (UTC)": (e["start"] or "")[:16], "end": (e["end"] or "")[11:16], "subject": e["subject"]} for e in events],
                    ("start (UTC)", "end", "subject")))

    after_first = _emulator_stats()       # the calendar shown above is not part of the second cycle
    second = await _run_cycle(settings, False, "demo")
    after_second = _emulator_stats()
    writes = sum(v for k, v in (second.get("totals") or {}).items() if k not in ("skipped",))
    retested = (second.get("retested") or {}).get("tested", 0)
    print(f"\ncycle 2 (nothing changed): {writes} calendar writes"
          + (f", {_graph_requests(after_second) - _graph_requests(after_first)} Graph requests" if after_first and after_second else "")
          + (f" (a test of the {retested} mailbox(es) refused access: Exchange may still be applying the app's scope, M8)"
             if retested else ""))
    return EXIT_OK if writes == 0 else EXIT_PARTIAL


def _emulator_stats() -> dict | None:
    url = os.environ.get("DEVTENANT_URL")
    if not url:
        return None
    with urllib.request.urlopen(url + "/_control/stats", timeout=10) as resp:
        return json.loads(resp.read())


def _graph_requests(stats: dict) -> int:
    return stats["services"].get("graph", {}).get("requests", 0)


def _graph_ops(stats: dict) -> int:
    return stats["services"].get("graph", {}).get("operations", 0)


async def cmd_mailboxes(args: argparse.Namespace, settings: AppSettings) -> int:
    from .admin.commands import MAILBOX_OPERATIONS
    from .admin.dispatch import AdminError, InvalidRequest, mailbox_action, validate
    from .app.clients import Clients

    try:
        addresses = validate(args.action, args.addresses, args.all, args.environment, settings.environments, args.method)
    except InvalidRequest as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        try:
            work = mailbox_action(clients, settings.environments, args.action, addresses, args.all, args.environment, _now(),
                                  Progress(args.action, not args.json), method=args.method,
                                  confirm_dynamics_sync=args.confirm_dynamics_sync)
            if MAILBOX_OPERATIONS[args.action].changes:
                result = await audited(clients.store.audit, await clients.operator(), f"mailboxes {args.action}", addresses,
                                       _audit_time(), work, detail="all" if args.all else "")
            else:
                result = await work
        except AdminError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    if args.action == "test":
        _print(args, result, table(result["results"], ("mailbox", "result", "reason", "message")))
        return EXIT_OK if result["succeeded"] == result["tested"] else EXIT_PARTIAL
    if args.action == "list":
        columns = ("mailbox", "ref", "environment", "tenant", "sync_method", "approved", "test", "reason", "enabled", "last_cycle",
                   "outcome", "written", "set_aside", "last_error")
        _print(args, result, table(result["mailboxes"], columns))
        return EXIT_OK
    _print(args, result, _summary(result))
    return EXIT_OK


async def cmd_diagnose(args: argparse.Namespace, settings: AppSettings) -> int:
    from .admin.diagnose import diagnose
    from .app.clients import Clients
    from .core.ids import environment_named, is_guid
    if not is_guid(args.booking_id):
        print(f"not a booking id (a GUID): {args.booking_id}", file=sys.stderr)
        return EXIT_USAGE
    environment = environment_named(settings.environments, args.environment or settings.environments[0])
    if environment is None:
        print(f"not a configured environment (DATAVERSE_ENVIRONMENTS): {args.environment}", file=sys.stderr)
        return EXIT_USAGE
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        result = await diagnose(args.booking_id, clients.source(environment), clients.store, settings.sync, _now())
    lines = [f"{result.code}: {result.sentence}"]
    lines += [f"  {k}: {v}" for k, v in result.details.items() if v not in (None, "")]
    _print(args, result.to_dict(), "\n".join(lines))
    return EXIT_PARTIAL if result.code == "booking_not_found" else EXIT_OK


async def cmd_serve_webhook(args: argparse.Namespace, settings: AppSettings) -> int:
    """The webhook endpoint of the Functions app (POST /api/dataverse/webhook, function-key auth), served locally
    with the same handler and the same per-mailbox orchestrations, run in process, until Ctrl-C."""
    from .local.webhook_host import LocalWebhookHost
    if not args.key:
        print("serve-webhook needs a function key: --key or WEBHOOK_FUNCTION_KEY (Dataverse sends it as ?code=)", file=sys.stderr)
        return EXIT_USAGE
    host = LocalWebhookHost(settings, args.key)
    url = await host.start(args.host, args.port)
    print(f"listening: {url}?code=<key>  (Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await host.stop()
    return EXIT_OK


async def cmd_filters(args: argparse.Namespace, settings: AppSettings) -> int:
    from .admin.dispatch import AdminError, InvalidRequest
    from .admin.filters import filter_request, filters_action
    from .app.clients import Clients
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        try:
            request = filter_request(args.action, args.mailbox, args.name, args.status or [], args.type or [], args.territory or [],
                                     args.dry_run)
            work = filters_action(clients, settings.environments, request, settings.sync, _now())
            result = await (work if request.action == "list" else audited(
                clients.store.audit, await clients.operator(), f"filters {request.action}", [request.mailbox] if request.mailbox else [],
                _audit_time(), work, detail=request.name + (" (dry run)" if request.dry_run else "")))
        except InvalidRequest as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        except AdminError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    human = table([{"name": d["name"], "booking statuses": ",".join(d["booking_statuses"]),
                    "work order types": ",".join(d["work_order_types"]),
                    "territories": ",".join(d["territories"])} for d in result["filters"]],
                  ("name", "booking statuses", "work order types", "territories"))
    if result.get("dry_run"):
        removed = result["would_remove"]
        preview = "\n".join(f"  {address}: {n}" for address, n in sorted(removed.items())) or "  nothing"
        human = f"dry run, nothing was changed; with these filters the next cycle would remove (unlink or delete):\n{preview}\n{human}"
    _print(args, result, f"filters ({result['scope']}; a booking syncs when it matches any; none = all of the user's bookings):\n{human}")
    return EXIT_OK


async def cmd_plan(args: argparse.Namespace, settings: AppSettings) -> int:
    """Dry run for one mailbox: what its next sync would do with the observations already collected. Writes nothing."""
    from .app.clients import Clients
    from .engine.mailbox import MailboxSync
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        filters = await clients.store.config.global_filters()
        sync = MailboxSync(clients.store, clients.calendar, settings.sync, _now(), global_filters=filters)
        result = await sync.run(args.mailbox, dry_run=True, force=args.force)
    if result.outcome != "dry-run":
        print(f"refused: {result.error}", file=sys.stderr)
        return EXIT_REFUSED
    _print(args, result.to_dict(), table(result.plan or [], ("booking", "action",
                                                             "reason")) + (f"\n{result.error}" if result.error else ""))
    return EXIT_OK


async def cmd_runs(args: argparse.Namespace, settings: AppSettings) -> int:
    from .app.clients import Clients
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        runs = await clients.store.runs.recent(args.limit)
    data = [{"started": r.get("started", "")[:19], "trigger": r.get("trigger"), "outcome": r.get("outcome"), "outcomes": r.get("outcomes"),
             "totals": r.get("totals")} for r in runs]
    _print(args, runs, table(data, ("started", "trigger", "outcome", "outcomes", "totals")))
    return EXIT_OK


async def cmd_preflight(args: argparse.Namespace, settings: AppSettings) -> int:
    """G3: exit 0 when nothing failed (warnings say what costs more or waits), 1 when a check failed."""
    from .admin.preflight import preflight
    from .app.clients import Clients
    from .core.ids import environment_named
    environments = settings.environments
    if args.environment:
        named = environment_named(settings.environments, args.environment)
        if named is None:
            print(f"not a configured environment (DATAVERSE_ENVIRONMENTS): {args.environment}", file=sys.stderr)
            return EXIT_USAGE
        environments = (named,)
    async with Clients(settings) as clients:
        result = await preflight(clients, environments, _now())
    rows = [{"check": c["check"], "status": c["status"], "found": ", ".join(f"{k}={v}" for k, v in c["found"].items()),
             "advice": c["advice"]} for c in result["checks"]]
    _print(args, result, table(rows, ("check", "status", "found", "advice")) + f"\n\npreflight: {result['verdict']}")
    return EXIT_PARTIAL if result["verdict"] == "fail" else EXIT_OK


async def cmd_state(args: argparse.Namespace, settings: AppSettings) -> int:
    """`state downgrade`: before deploying a version older than the partition layout of observations and errors
    (before 2026-12). A rollback by one version needs no step (sync/adapters/tables/migrations.py)."""
    from .adapters.tables import TableState
    from .admin.audit import audited
    from .app.clients import Clients
    async with Clients(settings) as clients:
        await clients.store.ensure_tables()
        if not isinstance(clients.store, TableState):
            raise RefusedError("the state store is not Table Storage; there is no older layout to go back to")
        moved = await audited(clients.store.audit, await clients.operator(), "state downgrade", [], _audit_time(),
                              clients.store.migrations.downgrade_to_legacy_tables())
    _print(args, moved, f"moved {moved['pending']} pending observations and {moved['errors']} recorded errors back to the tables "
                        f"'pending' and 'outcomes', and removed {moved['leases']} mailbox lease rows.\nDeploy the older version now; "
                        "this one, started again, moves them forward.")
    return EXIT_OK


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


class _Help(argparse.RawDescriptionHelpFormatter):
    pass


class _CommandParser(argparse.ArgumentParser):
    """Every command's --help ends with the exit codes."""

    def __init__(self, **kw: Any):
        super().__init__(**{"epilog": EXIT_CODES, "formatter_class": _Help, **kw})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sync", description="Field Service bookings -> Outlook calendars",
                                epilog=EXIT_CODES, formatter_class=_Help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    from .admin.commands import MAILBOX_OPERATIONS, OPERATIONS, SYNC_METHODS
    run = sub.add_parser("run", help=OPERATIONS["run"].help)
    run.add_argument("--force", action="store_true", help="let a cycle pass the mass-delete guard (D5)")
    sub.add_parser("demo", help="enable the demo organisation's mailboxes, sync twice and show the result")
    actions = "\n".join(f"  {name:<11} {op.help}" for name, op in MAILBOX_OPERATIONS.items())
    mb = sub.add_parser("mailboxes", help="register, approve, test & enable, disable, move and list mailboxes",
                        description=f"actions:\n{actions}")
    mb.add_argument("action", choices=list(MAILBOX_OPERATIONS))
    mb.add_argument("addresses", nargs="*", help="mailbox addresses (or --all)")
    mb.add_argument("--all", action="store_true", help="every registered mailbox")
    mb.add_argument("--environment", help="environment URL (discover, register, move)")
    mb.add_argument("--method", choices=SYNC_METHODS, help="set-method: the mailbox's synchronization method (M1)")
    mb.add_argument("--confirm-dynamics-sync", action="store_true",
                    help="test: enable mailboxes Dynamics' own server-side sync already serves (M7: bookings twice)")
    runs = sub.add_parser("runs", help="the most recent cycles")
    runs.add_argument("--limit", type=_limit, default=10, help="how many cycles to show (1-1000)")
    audit = sub.add_parser("audit", help=OPERATIONS["audit"].help + " (newest first)")
    audit.add_argument("--limit", type=_limit, default=50, help="how many entries to show (1-1000)")
    hook = sub.add_parser("serve-webhook", help="serve the Dataverse webhook locally (T3), as the Functions app does")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    hook.add_argument("--port", type=int, default=7071, help="port (default: 7071, the Functions host's)")
    hook.add_argument("--key", default=os.environ.get("WEBHOOK_FUNCTION_KEY", ""),
                      help="the function key Dataverse must send as ?code= (default: WEBHOOK_FUNCTION_KEY)")
    plan = sub.add_parser("plan", help="dry run: what the next sync of a mailbox would do (writes nothing)")
    plan.add_argument("mailbox", help="the mailbox's address")
    plan.add_argument("--force", action="store_true", help="as with run --force")
    diag = sub.add_parser("diagnose", help=OPERATIONS["diagnose"].help)
    diag.add_argument("booking_id", help="the booking's id (a GUID)")
    diag.add_argument("--environment", help="environment URL (default: the first configured)")
    flt = sub.add_parser("filters", help="sync filters, global or per mailbox (S5)")
    flt.add_argument("action", choices=["list", "add", "remove"])
    flt.add_argument("name", nargs="?", help="the filter's name (add, remove)")
    flt.add_argument("--mailbox", help="a mailbox's own filters instead of the global ones")
    flt.add_argument("--status", action="append", help="booking status name (repeatable)")
    flt.add_argument("--type", action="append", help="work order type name (repeatable)")
    flt.add_argument("--territory", action="append", help="territory name (repeatable)")
    flt.add_argument("--dry-run", action="store_true", help="show what the change would remove, per mailbox; change nothing")
    pre = sub.add_parser("preflight", help=OPERATIONS["preflight"].help)
    pre.add_argument("--environment", help="one environment URL (default: every configured one)")
    state = sub.add_parser("state", help="before a rollback to a version before 2026-12: downgrade to its layout "
                                         "(a rollback by one version needs nothing)")
    state.add_argument("action", choices=["downgrade"])
    for child in (run, mb, runs, diag, flt, plan, hook, audit, state, pre):
        child.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "mailboxes": cmd_mailboxes, "runs": cmd_runs, "diagnose": cmd_diagnose,
            "filters": cmd_filters, "plan": cmd_plan, "serve-webhook": cmd_serve_webhook, "audit": cmd_audit, "state": cmd_state,
            "preflight": cmd_preflight}


def _unreachable(exc: BaseException) -> str | None:
    """One line for a failure of the world outside (storage, Dataverse, Graph, the token), naming what to check."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError

    from .ports import SyncError
    text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if isinstance(exc, ClientAuthenticationError):
        return f"could not get a token ({text}); check SYNC_CREDENTIAL, AZURE_CLIENT_ID and the identity's roles"
    if isinstance(exc, ServiceRequestError):
        return f"a service did not answer ({text}); check STATE_STORAGE_* (is Azurite running?) and the service URLs"
    if isinstance(exc, SyncError):
        return f"{text}"
    if isinstance(exc, (AzureError, OSError)):
        return f"{type(exc).__name__}: {text}; check the storage settings and that the services are reachable"
    if isinstance(exc, ValueError) and "connection string" in text.lower():
        return f"STATE_STORAGE_CONNECTION_STRING is not a connection string ({text})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load()
    except SettingError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(COMMANDS[args.command](args, settings))
    except RefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:                       # `python -m sync ... | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = _unreachable(exc)
        if line is None or getattr(args, "debug", False):
            raise
        print(f"failed: {line}", file=sys.stderr)
        return EXIT_UNREACHABLE
