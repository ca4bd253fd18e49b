"""A lease held for as long as the work under it runs: renewed every third of its TTL, released at the end.

A holder that dies stops renewing, so its lease is free within one TTL (well within a timer period), and
nothing waits ten minutes for a dead process (T1, T2). When a renewal finds the lease lost, `lost` is set
and the holder's `on_lost` callback runs, so the work can stop instead of running beside its successor."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ..ports import NamedLeases

log = logging.getLogger("sync.leases")


class KeptLease:
    """`async with KeptLease(leases, name, holder, ttl_s) as held:` where `held` says whether it was acquired."""

    def __init__(self, leases: NamedLeases, name: str, holder: str, ttl_s: float, *, on_lost: Callable[[], None] | None = None):
        self.leases, self.name, self.holder, self.ttl_s, self.on_lost = leases, name, holder, ttl_s, on_lost
        self.held = False
        self.lost = False
        self._keeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> bool:
        self.held = await self.leases.acquire(self.name, self.holder, datetime.now(UTC), self.ttl_s)
        if self.held:
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self.held and not self.lost:
            await self.leases.release(self.name, self.holder)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                renewed = await self.leases.renew(self.name, self.holder, datetime.now(UTC), self.ttl_s)
            except Exception as exc:           # a failed renewal is retried at the next third; the TTL still holds
                log.warning("lease renewal failed: lease=%s error=%s", self.name.split(":")[0], type(exc).__name__)
                continue
            if not renewed:
                self.lost = True
                log.error("lease lost: lease=%s", self.name.split(":")[0])
                if self.on_lost is not None:
                    self.on_lost()
                return
