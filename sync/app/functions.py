"""The Functions blueprint: triggers only. Every body hands plain dicts to sync/ and returns what it got.

Heavy imports (msgraph-sdk, azure-data-tables) happen inside the activities, so a cold start that only
runs the timer or an orchestrator replay stays light.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.durable_functions as df
import azure.functions as func

from ..admin.audit import audited
from ..core.access import Forbidden, Principal, authorize
from . import orchestrators as orchestration
from .gc_tuning import freeze_loaded
from .principal import MalformedPrincipal, principal_from
from .settings import SettingError

if TYPE_CHECKING:
    from .activities import Activities

bp = df.Blueprint()
log = logging.getLogger("sync.functions")

# Orchestrators: the same generator functions the local runner drives, under the same names.
for _name, _orchestrator in orchestration.ORCHESTRATORS.items():
    bp.orchestration_trigger(context_name="context", orchestration=_name)(_orchestrator)

_activities: Activities | None = None


def activities() -> Activities:
    global _activities
    if _activities is None:
        from .activities import Activities
        _activities = Activities()
        freeze_loaded()
    return _activities


@bp.activity_trigger(input_name="payload", activity=orchestration.COLLECT_ACTIVITY)
async def collect_environment(payload: dict) -> dict:
    return await activities().collect_environment(payload)


@bp.activity_trigger(input_name="payload", activity=orchestration.SYNC_MAILBOX_ACTIVITY)
async def sync_mailbox(payload: dict) -> dict:
    return await activities().sync_mailbox(payload)


@bp.activity_trigger(input_name="payload", activity=orchestration.FINISH_MAILBOX_SYNC_ACTIVITY)
async def finish_mailbox_sync(payload: dict) -> dict:
    return await activities().finish_mailbox_sync(payload)


@bp.activity_trigger(input_name="payload", activity=orchestration.RETEST_ACTIVITY)
async def retest_mailboxes(payload: dict) -> dict:
    return await activities().retest_mailboxes(payload)


@bp.activity_trigger(input_name="payload", activity=orchestration.GUARD_ACTIVITY)
async def check_removals(payload: dict) -> dict:
    return await activities().check_removals(payload)


@bp.activity_trigger(input_name="payload", activity=orchestration.RECORD_RUN_ACTIVITY)
async def record_run(payload: dict) -> dict:
    return await activities().record_run(payload)


async def _start(client: df.DurableOrchestrationClient, trigger: str, force: bool = False) -> str | None:
    from .singleton import start_cycle_once

    settings = activities().settings
    clients = await activities().clients()
    return await start_cycle_once(client, clients.store.leases, datetime.now(UTC), f"{trigger}-{uuid.uuid4()}",
                                  orchestration.CYCLE_INSTANCE_ID, orchestration.CYCLE_ORCHESTRATOR,
                                  {"environments": list(settings.environments), "force": force, "trigger": trigger})


@bp.timer_trigger(schedule="%SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def sync_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """T1: every 15 minutes by default; never a second cycle while one runs."""
    started = await _start(client, "timer")
    log.info("timer fired: started=%s past_due=%s", bool(started), timer.past_due)


def _json(status: int, body: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def signed_in(req: func.HttpRequest, operation: str) -> Principal | func.HttpResponse:
    """The principal Easy Auth signed in, if it holds a role the operation needs; else the 403 naming that role, or
    401 when the principal header cannot be read."""
    try:
        from ..admin.commands import roles_for
        return authorize(principal_from(dict(req.headers)), operation, roles_for(operation))
    except MalformedPrincipal as exc:
        return _json(401, {"error": str(exc)})
    except Forbidden as exc:
        return _json(403, {"error": str(exc)})


class BadBody(ValueError):
    """A request body that is not the JSON the route takes."""


def json_body(req: func.HttpRequest) -> Any:
    """The request's JSON body (None when empty); BadBody for anything else, nesting past the parser's bound included."""
    raw = req.get_body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:       # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadBody(str(exc)[:80]) from None


@bp.route(route="sync/run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def sync_run_now(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a cycle now: POST /api/sync/run with an optional body {"force": true}."""
    who = signed_in(req, "run")
    if isinstance(who, func.HttpResponse):
        return who
    force = False
    try:
        body = json_body(req)
    except BadBody:
        return _json(400, {"error": "the body must be JSON, for example {\"force\": true}"})
    if body is not None:
        if not isinstance(body, dict) or set(body) - {"force"} or not isinstance(body.get("force", False), bool):
            return _json(400, {"error": "the body accepts one optional field: force (true or false)"})
        force = body.get("force", False)
    try:
        store = (await activities().clients()).store
        started = await audited(store.audit, who, "run", [], datetime.now(UTC), _start(client, "http", force),
                                detail="force" if force else "")
    except SettingError as exc:
        return _json(500, {"error": str(exc)})
    if started is None:
        return _json(409, {"error": "a sync cycle is already running", "instanceId": orchestration.CYCLE_INSTANCE_ID})
    # The product's own status route, never Durable's management URLs: those carry the task hub's system key, which
    # starts, terminates and purges any instance.
    return func.HttpResponse(json.dumps({"instanceId": started, "statusUri": "/api/sync/status"}), status_code=202,
                             mimetype="application/json", headers={"Location": "/api/sync/status"})


@bp.route(route="sync/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def sync_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The current cycle (runtime status, custom status) and the last recorded runs."""
    who = signed_in(req, "status")
    if isinstance(who, func.HttpResponse):
        return who
    status = await client.get_status(orchestration.CYCLE_INSTANCE_ID)
    current = None
    if status is not None and getattr(status, "runtime_status", None) is not None:
        current = {"runtimeStatus": status.runtime_status.value, "customStatus": status.custom_status,
                   "createdTime": status.created_time, "lastUpdatedTime": status.last_updated_time}
    runs = await (await activities().clients()).store.runs.recent(5)
    return _json(200, {"current": current, "recent": runs})


def environment_ok() -> None:
    """E4 at start: fail naming the setting, before any trigger runs."""
    from .settings import load
    load(os.environ)


# ---- administration over HTTP: the same operations as `python -m sync mailboxes|diagnose` ----------------------

@bp.route(route="mailboxes", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def mailboxes_status(req: func.HttpRequest) -> func.HttpResponse:
    """G2: the mailbox status listing."""
    return await _mailbox_action(req, "list")


@bp.route(route="mailboxes/{action}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def mailboxes_admin(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/mailboxes/{discover|register|approve|test|enable|disable|move|set-method} with
    {"addresses": [...]} or {"all": true}, "environment" for discover/register/move, and "method" (server-side or none)
    for set-method (M1)."""
    return await _mailbox_action(req, req.route_params.get("action", ""))


async def _mailbox_action(req: func.HttpRequest, action: str) -> func.HttpResponse:
    from ..admin.commands import MAILBOX_OPERATIONS
    from ..admin.dispatch import AdminError, InvalidRequest, mailbox_action, validate
    who = signed_in(req, action if action in MAILBOX_OPERATIONS else "list")
    if isinstance(who, func.HttpResponse):
        return who
    try:
        body = json_body(req)
    except BadBody:
        return _json(400, {"error": "the body must be JSON"})
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"addresses", "all", "environment", "method", "confirm_dynamics_sync"}:
        return _json(400, {"error": "the body accepts addresses, all, environment, method and confirm_dynamics_sync"})
    if not isinstance(body.get("confirm_dynamics_sync", False), bool):
        return _json(400, {"error": "'confirm_dynamics_sync' must be true or false"})
    settings = activities().settings
    try:
        addresses = validate(action, body.get("addresses"), body.get("all", False), body.get("environment"), settings.environments,
                             body.get("method"))
    except InvalidRequest as exc:
        return _json(400, {"error": str(exc)})
    try:
        clients, now = await activities().clients(), datetime.now(UTC)
        work = mailbox_action(clients, settings.environments, action, addresses, body.get("all", False), body.get("environment"), now,
                              method=body.get("method"), confirm_dynamics_sync=body.get("confirm_dynamics_sync", False))
        detail = "all" if body.get("all") else ""
        result = await (audited(clients.store.audit, who, f"mailboxes {action}", addresses, now, work, detail=detail)
                        if MAILBOX_OPERATIONS[action].changes else work)
    except AdminError as exc:
        return _json(409, {"error": str(exc)})
    return _json(200, result)


@bp.route(route="filters", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
async def sync_filters(req: func.HttpRequest) -> func.HttpResponse:
    """S5: GET /api/filters[?mailbox=ADDRESS] lists; POST with {"action": "add"|"remove", "name", "booking_statuses",
    "work_order_types", "territories", "mailbox"} changes them (global unless a mailbox is named)."""
    from ..admin.dispatch import AdminError, InvalidRequest
    from ..admin.filters import filter_request, filters_action
    reader = signed_in(req, "filters-list")              # nobody without a role learns even what the body should be
    if isinstance(reader, func.HttpResponse):
        return reader
    if req.method == "GET":
        body = {"action": "list", "mailbox": req.params.get("mailbox")}
    else:
        try:
            body = json_body(req)
        except BadBody:
            return _json(400, {"error": "the body must be JSON"})
        allowed = {"action", "name", "mailbox", "booking_statuses", "work_order_types", "territories", "dry_run"}
        if not isinstance(body, dict) or set(body) - allowed:
            return _json(400, {"error": f"the body accepts {', '.join(sorted(allowed))}"})
    changing = body.get("action", "list") != "list"
    who = signed_in(req, "filters-change" if changing else "filters-list")
    if isinstance(who, func.HttpResponse):
        return who
    settings = activities().settings
    try:
        request = filter_request(body.get("action", "list"), body.get("mailbox"), body.get("name"), body.get("booking_statuses", []),
                                 body.get("work_order_types", []), body.get("territories", []), body.get("dry_run", False))
        clients, now = await activities().clients(), datetime.now(UTC)
        work = filters_action(clients, settings.environments, request, settings.sync, now)
        targets = [request.mailbox] if request.mailbox else []
        result = await (audited(clients.store.audit, who, f"filters {request.action}", targets, now, work,
                                detail=request.name + (" (dry run)" if request.dry_run else "")) if changing else work)
    except InvalidRequest as exc:
        return _json(400, {"error": str(exc)})
    except AdminError as exc:
        return _json(409, {"error": str(exc)})
    return _json(200, result)


@bp.route(route="bookings/{booking_id}/diagnosis", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def booking_diagnosis(req: func.HttpRequest) -> func.HttpResponse:
    """G1: GET /api/bookings/{id}/diagnosis[?environment=URL]."""
    from ..admin.diagnose import diagnose
    from ..core.ids import environment_named, is_guid
    who = signed_in(req, "diagnose")
    if isinstance(who, func.HttpResponse):
        return who
    booking_id = req.route_params.get("booking_id", "")
    if not is_guid(booking_id):
        return _json(400, {"error": "booking id must be a GUID"})
    settings = activities().settings
    environment = environment_named(settings.environments, req.params.get("environment") or settings.environments[0])
    if environment is None:
        return _json(400, {"error": "environment must be one of the configured DATAVERSE_ENVIRONMENTS"})
    clients = await activities().clients()
    result = await diagnose(booking_id, clients.source(environment), clients.store, settings.sync, datetime.now(UTC))
    return _json(200, result.to_dict())


@bp.route(route="audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def audit_trail(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/audit[?limit=N]: who did what, on which mailboxes, when, with what result (newest first)."""
    who = signed_in(req, "audit")
    if isinstance(who, func.HttpResponse):
        return who
    limit = req.params.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", limit) or not 1 <= int(limit) <= 1000:     # str.isdigit() takes "¹", int() does not
        return _json(400, {"error": "limit must be a whole number from 1 to 1000"})
    return _json(200, {"audit": await (await activities().clients()).store.audit.recent(int(limit))})


@bp.route(route="preflight", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def preflight_check(req: func.HttpRequest) -> func.HttpResponse:
    """G3: GET /api/preflight[?environment=URL]: each prerequisite of the deployment, checked with the app's identity."""
    from ..admin.preflight import preflight
    from ..core.ids import environment_named
    who = signed_in(req, "preflight")
    if isinstance(who, func.HttpResponse):
        return who
    settings = activities().settings
    environments = settings.environments
    if req.params.get("environment") is not None:
        named = environment_named(settings.environments, req.params.get("environment"))
        if named is None:
            return _json(400, {"error": "environment must be one of the configured DATAVERSE_ENVIRONMENTS"})
        environments = (named,)
    return _json(200, await preflight(await activities().clients(), environments, datetime.now(UTC)))


@bp.route(route="dataverse/webhook", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def dataverse_webhook(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """T3: Dataverse service endpoint (WebhookKey = this function's key). Answers well inside Dataverse's 60 s."""
    from .webhook import handle
    status, body = await handle(req.get_body(), dict(req.headers), dict(req.params), activities().settings, client,
                                datetime.now(UTC).isoformat(), await activities().clients())
    return _json(status, body)
