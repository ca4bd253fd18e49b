"""T1 (one cycle at a time, race closed by an ETag-guarded lease on Azurite) and the Functions app shell (E4)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from sync.app.orchestrators import CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR
from sync.app.singleton import start_cycle_once
from tests.conftest import REPO


class DurableClientStandIn:
    """The Durable client's get_status/start_new, at the one seam no local server reaches (the Durable
    extension). Each call yields to the loop, so concurrent starters interleave as two hosts would."""

    def __init__(self):
        self.running: set[str] = set()
        self.starts = 0

    async def get_status(self, instance_id):
        await asyncio.sleep(0.01)
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Running")) if instance_id in self.running else None

    async def start_new(self, name, instance_id, input_):
        await asyncio.sleep(0.01)
        self.starts += 1
        self.running.add(instance_id)
        return instance_id


async def test_r_t1_two_concurrent_timer_starts_produce_one_orchestration(state_store):
    client = DurableClientStandIn()
    now = datetime.now(UTC)
    results = await asyncio.gather(*(start_cycle_once(client, state_store.leases, now, f"host-{i}", CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR, {})
                                     for i in range(2)))
    assert client.starts == 1 and sorted(map(bool, results)) == [False, True]
    # and a timer that fires while the cycle runs does not start a second one
    assert await start_cycle_once(client, state_store.leases, now, "host-late", CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR, {}) is None
    assert client.starts == 1


async def test_check_then_start_without_the_lease_races():
    """The control: the documented check-then-start pattern alone starts twice under the same interleaving."""
    client = DurableClientStandIn()

    async def naive():
        if await client.get_status(CYCLE_INSTANCE_ID) is None:
            await client.start_new(CYCLE_ORCHESTRATOR, CYCLE_INSTANCE_ID, {})

    await asyncio.gather(naive(), naive())
    assert client.starts == 2


GOOD_ENV = {"DATAVERSE_ENVIRONMENTS": "https://contoso.crm.dynamics.com", "STATE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
            "SYNC_SCHEDULE": "0 */15 * * * *"}


LIST_FUNCTIONS = "import function_app; print(','.join(sorted(f.get_function_name() for f in function_app.app.get_functions())))"


def import_app(env: dict, code: str = LIST_FUNCTIONS) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose environment holds only `env` of the app's settings."""
    clean = {k: v for k, v in os.environ.items() if k not in GOOD_ENV and not k.startswith(("SYNC_", "STATE_", "DATAVERSE_", "GRAPH_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_importing_function_app_registers_the_expected_functions():
    result = import_app(GOOD_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",") == sorted(["audit_trail", "booking_diagnosis", "check_removals", "collect_environment", "dataverse_webhook", "finish_mailbox_sync", "mailboxes_admin",
                                                       "mailboxes_status", "preflight_check", "record_run", "retest_mailboxes", "sync_cycle", "sync_mailbox", "sync_mailbox_group",
                                                       "sync_filters", "sync_mailbox_now", "sync_run_now", "sync_status", "sync_timer"])


def test_the_worker_freezes_what_it_has_loaded_and_lets_young_objects_die_young():
    """At the end of the import, and again once the first activity has loaded the heavy modules (sync/app/gc_tuning.py)."""
    result = import_app(GOOD_ENV, "import gc, function_app; from sync.app import functions; at_start = gc.get_freeze_count(); "
                                  "functions.activities(); print(gc.get_threshold()[0], at_start, gc.get_freeze_count())")
    assert result.returncode == 0, result.stderr
    young, at_start, after = map(int, result.stdout.split())
    assert young == 10_000
    assert at_start > 10_000                                            # what the import loaded
    assert after > at_start + 5_000                                     # msgraph-sdk's and the adapters' objects, at the first activity


@pytest.mark.parametrize("change,named", [({"DATAVERSE_ENVIRONMENTS": ""}, "DATAVERSE_ENVIRONMENTS"),
                                          ({"SYNC_SCHEDULE": "every 15 minutes"}, "SYNC_SCHEDULE"),
                                          ({"LOGICAL_DELETES": "purge"}, "LOGICAL_DELETES")])
def test_r_e4_bad_setting_stops_the_app_at_start_naming_it(change, named):
    result = import_app({**GOOD_ENV, **change})
    assert result.returncode != 0 and f"setting {named}" in result.stderr
