"""One sync cycle from the command line: the cloud's orchestrators and activities, driven in process by the
Durable runner (local/durable.py), under the same cycle lease the timer takes (T1)."""
from __future__ import annotations

from ..app.activities import Activities
from ..app.orchestrators import CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR, ORCHESTRATORS
from ..app.settings import AppSettings
from .durable import DurableRunner


def cycle_runner(activities: Activities, max_concurrent_activities: int = 8, **kw: object) -> DurableRunner:
    return DurableRunner(ORCHESTRATORS, activities.by_name(), max_concurrent_activities=max_concurrent_activities,
                         **kw)  # type: ignore[arg-type]


async def run_cycle(settings: AppSettings, *, force: bool = False, trigger: str = "manual", max_concurrent_activities: int = 8) -> dict:
    """One cycle; the summary's mailbox rows are given their addresses back for the administrator who ran it
    (the orchestration itself carries pseudonyms only)."""
    activities = Activities(lambda: settings)
    try:
        summary = await cycle_runner(activities, max_concurrent_activities).run(
            CYCLE_ORCHESTRATOR, {"environments": list(settings.environments), "force": force, "trigger": trigger},
            instance_id=CYCLE_INSTANCE_ID)
        for row in summary.get("mailboxes", []):
            row["mailbox"] = await activities.address_of(row["mailbox_ref"]) or row["mailbox_ref"]
        return summary
    finally:
        await activities.close()
