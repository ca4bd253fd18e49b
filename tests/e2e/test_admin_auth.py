"""The administrative HTTP functions behind App Service Authentication: each route refuses a principal without the
role it needs (403, naming the role), and every operation leaves an audit record (who, what, on which mailboxes,
when, result), also from the command line, shown by `python -m sync audit` and GET /api/audit."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import azure.functions as func
import pytest

from sync.app import functions
from sync.app.principal import easy_auth_header
from sync.core.access import APPROVER, OPERATOR
from tests.conftest import REPO
from tests.dvseed import DvSeed
from tests.stack_helpers import stack_settings

pytestmark = pytest.mark.stack
TECH = "tech@contoso.example"


@pytest.fixture
def app(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch, WEBSITE_AUTH_ENABLED="True")
    seed = DvSeed(tenant)
    seed.technician(TECH)
    seed.add("territories", {"name": "South"})
    monkeypatch.setattr(functions, "_activities", None)
    yield settings
    functions._activities = None


def call(route, method: str, url: str, roles: list[str] | None, body: dict | None = None, **route_params: str):
    headers = easy_auth_header("00000000-0000-0000-0000-0000000000a1", "Ana Lee", roles) if roles is not None else {}
    request = func.HttpRequest(method, url, headers={**headers, "Content-Type": "application/json"}, params={},
                               route_params=route_params, body=json.dumps(body).encode() if body is not None else b"")
    return route._function.get_user_function()(request)


async def test_routes_allow_their_role_refuse_the_rest_and_audit_every_operation(app, caplog):
    caplog.set_level(logging.INFO, logger="sync.audit")
    register = {"addresses": [TECH], "environment": app.environments[0]}
    refused = await call(functions.mailboxes_admin, "POST", "/api/mailboxes/register", [OPERATOR], register, action="register")
    assert refused.status_code == 403 and APPROVER in json.loads(refused.get_body())["error"]
    assert (await call(functions.mailboxes_admin, "POST", "/api/mailboxes/register", None, register,
                       action="register")).status_code == 403
    assert (await call(functions.mailboxes_admin, "POST", "/api/mailboxes/register", [APPROVER], register,
                       action="register")).status_code == 200
    assert (await call(functions.mailboxes_admin, "POST", "/api/mailboxes/approve", [APPROVER], {"addresses": [TECH]},
                       action="approve")).status_code == 200
    south = {"action": "add", "name": "south", "territories": ["South"]}
    denied = await call(functions.sync_filters, "POST", "/api/filters", [APPROVER], south)
    assert denied.status_code == 403 and OPERATOR in json.loads(denied.get_body())["error"]
    assert (await call(functions.sync_filters, "POST", "/api/filters", [OPERATOR], south)).status_code == 200
    moved = await call(functions.mailboxes_admin, "POST", "/api/mailboxes/move", [APPROVER],
                       {"addresses": [TECH], "environment": app.environments[0]}, action="move")
    assert moved.status_code == 403 and OPERATOR in json.loads(moved.get_body())["error"]
    for roles in ([OPERATOR], [APPROVER]):                                  # reading needs either role
        assert (await call(functions.mailboxes_status, "GET", "/api/mailboxes", roles)).status_code == 200
        assert (await call(functions.audit_trail, "GET", "/api/audit", roles)).status_code == 200
    assert (await call(functions.audit_trail, "GET", "/api/audit", [])).status_code == 403

    trail = json.loads((await call(functions.audit_trail, "GET", "/api/audit", [OPERATOR])).get_body())["audit"]
    assert [(e["operation"], e["result"], e["who"]) for e in trail] == [
        ("filters add", "ok", "Ana Lee"), ("mailboxes approve", "ok", "Ana Lee"), ("mailboxes register", "ok", "Ana Lee")]
    assert trail[1]["mailboxes"] == [TECH] and trail[1]["who_id"] and trail[1]["at"]
    events = [r for r in caplog.records if r.getMessage() == "admin operation"]
    assert len(events) == 3 and all("@" not in str(vars(r)) and "Ana" not in str(vars(r)) for r in events)

    # The CLI records the identity of the credential it works with, never what USER or LOGNAME claim.
    env = {**os.environ, "USER": "ceo@contoso.example", "LOGNAME": "ceo@contoso.example"}
    ran = subprocess.run([sys.executable, "-m", "sync", "mailboxes", "disable", TECH], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    shown = subprocess.run([sys.executable, "-m", "sync", "--json", "audit", "--limit", "1"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.strip(), (shown.stdout, shown.stderr[-3000:])
    (latest,) = json.loads(shown.stdout)
    assert (latest["operation"], latest["result"], latest["mailboxes"]) == ("mailboxes disable", "ok", [TECH])
    assert (latest["who_id"], latest["who"]) == ("local", "local (unauthenticated)")     # the loopback emulator's credential
