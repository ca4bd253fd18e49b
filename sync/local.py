"""The local runner: the cloud's orchestrators and activities, driven in process by sync/durable_local.py."""
from __future__ import annotations

from typing import Any

from .activities import Activities
from .durable_local import LocalDurableRuntime
from .orchestration import CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR, GROUP_ORCHESTRATOR, sync_cycle, sync_mailbox_group
from .settings import AppSettings


def local_runtime(activities: Activities, max_concurrent_activities: int = 8, **kw: Any) -> LocalDurableRuntime:
    return LocalDurableRuntime({CYCLE_ORCHESTRATOR: sync_cycle, GROUP_ORCHESTRATOR: sync_mailbox_group},
                               {"collect_environment": activities.collect_environment, "sync_mailbox": activities.sync_mailbox,
                                "record_run": activities.record_run},
                               max_concurrent_activities=max_concurrent_activities, **kw)


async def run_cycle(settings: AppSettings, *, force: bool = False, trigger: str = "manual", max_concurrent_activities: int = 8) -> dict:
    activities = Activities(lambda: settings)
    try:
        return await local_runtime(activities, max_concurrent_activities).run(
            CYCLE_ORCHESTRATOR, {"environments": list(settings.environments), "force": force, "trigger": trigger}, instance_id=CYCLE_INSTANCE_ID)
    finally:
        await activities.close()
