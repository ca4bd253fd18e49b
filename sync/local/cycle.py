"""One sync cycle from the command line: the cloud's orchestrators and activities, driven in process by the
Durable runner (local/durable.py), under the same cycle lease the timer takes (T1)."""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

from ..app.activities import Activities
from ..app.leases import KeptLease
from ..app.orchestrators import CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR, ORCHESTRATORS, SYNC_MAILBOX_ACTIVITY
from ..app.settings import AppSettings
from ..app.singleton import LEASE, LEASE_TTL_S
from ..ports import NamedLeases
from .durable import DurableRunner


def cycle_runner(activities: Activities, max_concurrent_activities: int = 8, **kw: object) -> DurableRunner:
    return DurableRunner(ORCHESTRATORS, activities.by_name(), max_concurrent_activities=max_concurrent_activities,
                         **kw)  # type: ignore[arg-type]


async def run_cycle(settings: AppSettings, *, force: bool = False, trigger: str = "manual", max_concurrent_activities: int = 8,
                    progress: Callable[[int, int], None] | None = None, activities: Activities | None = None) -> dict:
    """One cycle; the summary's mailbox rows are given their addresses back for the administrator who ran it
    (the orchestration itself carries pseudonyms only). `progress(done, scheduled)` follows the mailbox syncs.
    `activities`, when given, is the caller's and stays open (its clients warm for the next cycle, as a Functions
    worker's are); otherwise the cycle makes its own and closes it."""
    owned = activities is None
    activities = activities or Activities(lambda: settings)
    try:
        runner = cycle_runner(activities, max_concurrent_activities, progress=progress, tracked=SYNC_MAILBOX_ACTIVITY)
        summary = await runner.run(
            CYCLE_ORCHESTRATOR, {"environments": list(settings.environments), "force": force, "trigger": trigger},
            instance_id=CYCLE_INSTANCE_ID)
        for row in summary.get("mailboxes", []):
            row["mailbox"] = await activities.address_of(row["mailbox_ref"]) or row["mailbox_ref"]
        return summary
    finally:
        if owned:
            await activities.close()


class CycleRunning(Exception):
    """Another cycle holds the cycle lease (T1)."""


async def run_cycle_once(leases: NamedLeases, settings: AppSettings, *, force: bool = False, trigger: str = "manual",
                         progress: Callable[[int, int], None] | None = None) -> dict:
    """One cycle unless one runs: the cycle lease is taken first and kept (renewed) for as long as the cycle runs,
    however long that is; a cycle that loses it stops rather than run beside its successor (T1)."""
    task = asyncio.current_task()

    def stop() -> None:
        if task is not None:
            task.cancel()

    lease = KeptLease(leases, LEASE, f"cli-{os.getpid()}-{uuid.uuid4()}", LEASE_TTL_S, on_lost=stop)
    async with lease as held:
        if not held:
            raise CycleRunning("a sync cycle is already running (the cycle lease is held); try again when it finishes")
        try:
            return await run_cycle(settings, force=force, trigger=trigger, progress=progress)
        except asyncio.CancelledError:
            if lease.lost:
                raise CycleRunning("the cycle lease was lost to another cycle; this one stopped") from None
            raise
