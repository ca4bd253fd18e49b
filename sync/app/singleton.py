"""T1: at most one cycle at a time per deployment.

The documented pattern (check the instance status, then start it) races when two timers fire at once
on two hosts. A lease row in Table Storage, taken with an ETag-guarded write, closes the race: only the
holder checks and starts; the loser does nothing.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..ports import DurableClient, NamedLeases

log = logging.getLogger("sync.singleton")
LEASE = "cycle-start"
LEASE_TTL_S = 30.0          # kept (renewed) by whoever runs the cycle in process; free within 30 s of its death
RUNNING = {"Running", "Pending", "ContinuedAsNew"}


async def start_cycle_once(client: DurableClient, leases: NamedLeases, now: datetime, holder: str, instance_id: str, orchestrator: str,
                           input_: dict[str, Any]) -> str | None:
    """Start the singleton orchestration unless one is running. Returns the instance id started, or None."""
    if not await leases.acquire(LEASE, holder, now, LEASE_TTL_S):
        log.info("cycle not started: another starter holds the lease")
        return None
    try:
        status = await client.get_status(instance_id)
        runtime_status = getattr(getattr(status, "runtime_status", None), "value", getattr(status, "runtime_status", None))
        if status is not None and runtime_status in RUNNING:
            log.info("cycle not started: instance still %s", runtime_status)
            return None
        await client.start_new(orchestrator, instance_id, input_)
        log.info("cycle started")
        return instance_id
    finally:
        await leases.release(LEASE, holder)
