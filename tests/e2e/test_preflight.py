"""G3: the preflight, end to end on the emulator: every check passes on the demo organisation, and each fails (or
warns) once for its own cause, saying what it found and what to do. (On 6c040fe there was no preflight.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from sync.admin.preflight import preflight
from sync.app.clients import Clients
from tests.conftest import REPO
from tests.stack_helpers import enable_all_mailboxes, stack_settings

pytestmark = pytest.mark.stack


async def _run(settings) -> dict:
    async with Clients(settings) as clients:
        return await preflight(clients, settings.environments, datetime.now(UTC))


def _check(result: dict, prefix: str) -> dict:
    return next(c for c in result["checks"] if c["check"].startswith(prefix))


@pytest.fixture
async def demo(tenant, table_prefix, monkeypatch):
    tenant.control("POST", "/demo", {"technicians": 6, "bookings": 12})
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    await enable_all_mailboxes(settings)
    return settings


async def test_r_g3_every_check_passes_on_a_deployment_set_up_as_documented(tenant, table_prefix, monkeypatch):
    tenant.control("POST", "/demo", {"technicians": 6, "bookings": 12})        # its refused mailboxes are not enabled
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    await enable_all_mailboxes(settings)
    started = time.monotonic()
    result = await _run(settings)
    assert result["verdict"] == "pass", result
    assert {c["check"].split(":")[0] for c in result["checks"]} >= {"state store", "dataverse", "change tracking", "exchange scope"}
    assert time.monotonic() - started < 30


async def test_r_g3_t5_change_tracking_off_is_a_warning_naming_the_table_and_what_to_do(tenant, demo):
    tenant.control("PUT", "/orgs/default/change-tracking", {"table": "msdyn_workorder", "enabled": False})
    check = _check(await _run(demo), "change tracking")
    assert check["status"] == "warn" and check["found"] == {"off": ["msdyn_workorder"]} and "Track changes" in check["advice"]


async def test_r_g3_m8_a_mailbox_outside_the_exchange_scope_is_named_with_the_delay(tenant, demo):
    async with Clients(demo) as clients:
        address = next(r.address for r in await clients.store.mailboxes.all() if r.syncs)
    tenant.control("PATCH", f"/mailboxes/{address}", {"in_scope": False, "scope_delay_s": 0})
    check = _check(await _run(demo), "exchange scope")
    assert check["status"] == "warn" and check["found"]["refused"] == {"access_denied": 1}
    assert "30 minutes to 2 hours" in check["advice"]


async def test_r_g3_a_state_store_the_app_cannot_reach_fails_with_what_to_check(tenant, table_prefix, monkeypatch):
    settings = stack_settings(tenant, table_prefix, monkeypatch, STATE_STORAGE_CONNECTION_STRING=
                              "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    check = _check(await _run(settings), "state store")
    assert check["status"] == "fail" and "STATE_STORAGE_" in check["advice"]


async def test_r_g3_an_environment_that_refuses_the_app_fails_its_dataverse_check(tenant, demo):
    tenant.control("PUT", "/faults", {"rules": [{"service": "dataverse", "action": "status", "status": 403, "code": "0x80040220",
                                                 "times": 100}]})
    try:
        check = _check(await _run(demo), "dataverse")
    finally:
        tenant.control("DELETE", "/faults")
    assert check["status"] == "fail" and "application user" in check["advice"]


def test_r_g3_the_command_line_prints_each_check_and_exits_1_on_a_failure(tenant, table_prefix):
    env = {**os.environ, **tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    ran = subprocess.run([sys.executable, "-m", "sync", "--json", "preflight"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    result = json.loads(ran.stdout)
    assert ran.returncode == 0 and result["verdict"] == "warn"              # nothing enabled yet: a warning, not a failure
    assert _check(result, "exchange scope")["found"] == {"enabled": 0}
