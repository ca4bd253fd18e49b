"""A mailbox's lease as its sync holds it: taken with the sync's first write, renewed every third of its TTL
while Graph calls run, handed back by the sync's last transaction.

A holder that dies stops renewing, so its lease is free within one TTL and nothing waits for a dead process (T2).
A renewal that finds the lease changed marks it lost: the sync still commits what Graph already did (its link
writes are ETag-guarded) but leaves the lease to its new holder."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from ..ports import MailboxLease, MailboxPartitions

log = logging.getLogger("sync.engine")
Clock = Callable[[], datetime]


class HeldClaim:
    def __init__(self, partitions: MailboxPartitions, mailbox: str, lease: MailboxLease, ttl_s: float, clock: Clock):
        self.partitions, self.mailbox, self.ttl_s, self.clock = partitions, mailbox, ttl_s, clock
        self.lease: MailboxLease | None = lease
        self.released = False                  # set once a commit gave the lease back
        self._renewing = self._stopping = False
        self._keeper: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._keep())

    async def hand_back(self) -> MailboxLease | None:
        """Stops renewing; the lease to release with the commit, or None when it was lost.

        A renewal in flight is waited for (up to a third of the TTL) rather than cancelled: cancelled, it may still
        land, and the commit would then hand back an ETag the row no longer has, leaving the mailbox busy for a
        whole TTL. The lease cannot be released by holder instead, since a Durable re-run shares the holder name."""
        if self._keeper is not None:
            self._stopping = True
            if self._renewing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._keeper), self.ttl_s / 3)
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        return self.lease

    async def _keep(self) -> None:
        while self.lease is not None and not self._stopping:
            await asyncio.sleep(self.ttl_s / 3)
            self._renewing = True
            try:
                renewed = await self.partitions.renew(self.mailbox, self.lease, self.clock(), self.ttl_s)
            except Exception as exc:           # a failed renewal is retried at the next third; the TTL still holds
                log.warning("mailbox lease renewal failed: error=%s", type(exc).__name__)
                continue
            finally:
                self._renewing = False
            if renewed is None:
                log.error("mailbox lease lost to another holder")
            self.lease = renewed
