"""Step 2 of a cycle, once per mailbox with pending work: read its partition (links, waiting observations, errors,
lease), plan (pure), take the lease, carry the actions out through the calendar (execution.py), and commit what
`settle` (pure) decides.

A create is recorded first as an intent (with the lease), so a crash between the Graph call and its record is
recovered by the ownership tag on the next run instead of creating a second event; every other link write
happens only after the Graph call it records succeeded. A plan that calls nothing (skips, unlinks, forgets)
needs no lease held while it runs: it commits conditioned on the lease as read, which excludes a concurrent sync
as a claim does; refused, the sync reads again and takes the lease.
"""
from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Protocol

from ..core import settle as settling
from ..core.actions import Create
from ..core.domain import LinkState, SyncFilter
from ..core.plan import Plan, plan
from ..core.settings import SyncSettings
from ..ports import Calendar, LeaseAsRead, LeaseHeld, MailboxCommit, MailboxPartitions, MailboxRecord, MailboxRegistry
from .claim import Clock, HeldClaim
from .execution import LOCAL_KINDS, Crash, MailboxResult, PlanExecution, SyncStatus, no_crash, plan_counts
from .observed import observations

log = logging.getLogger("sync.engine")
LEASE_TTL_S = 30.0               # renewed every 10 s while the sync runs; a dead holder's lease is free within 30 s

__all__ = ["LEASE_TTL_S", "MailboxResult", "MailboxSync", "MailboxSyncState", "calls_nothing", "plan_counts"]


class MailboxSyncState(Protocol):
    """The state one mailbox's sync touches."""

    @property
    def mailboxes(self) -> MailboxRegistry: ...

    @property
    def partitions(self) -> MailboxPartitions: ...


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class MailboxSync:
    """One mailbox's sync. Its Table round trips: the partition read, the lease taken (with the create intents), the
    commit (links, observations, errors, the lease given back) and the mailbox's status; the mailbox's record comes
    with the cycle's listing when the caller has it. A plan that calls nothing makes no claim."""

    def __init__(self, state: MailboxSyncState, calendar: Calendar, settings: SyncSettings, now: datetime, *,
                 global_filters: tuple[SyncFilter, ...] = (), crash: Crash = no_crash, holder: str | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, clock: Clock = _wall_clock):
        self.state, self.calendar, self.settings, self.now = state, calendar, settings, now
        self.global_filters, self.crash = global_filters, crash
        # The holder names the caller's own attempt: Durable's re-run of an activity whose host died takes over the
        # lease its first attempt left; any other holder's lease is free within one TTL of its death.
        self.holder, self.lease_ttl_s, self.clock = holder or f"sync-{uuid.uuid4()}", lease_ttl_s, clock

    async def run(self, address: str, *, dry_run: bool = False, force: bool = False, guard_message: str | None = None,
                  keep_held: bool = False, record: MailboxRecord | None = None) -> MailboxResult:
        """`guard_message`: the deployment-wide guard's, when it tripped (D5): creates and updates go, removals wait
        with their observations. `keep_held`: a sync outside the cycle (a webhook's) keeps holding what the last
        cycle's guard held, until a cycle decides again. `record`: the mailbox as the caller read it (the cycle's
        listing), read before the observations so the pending mark it holds covers them."""
        address = address.lower()
        record = record or await self.state.mailboxes.get(address)
        if record is None or not record.syncs:
            reason = "mailbox not registered" if record is None else record.unreadable or "mailbox not enabled for sync"
            return MailboxResult(address, "skipped", error=reason)
        if keep_held and not force and guard_message is None and record.removals_held:
            guard_message = record.last_error or "held by the deployment-wide guard"
        for claim_first in (False, True):
            result = await self._read_and_sync(record, dry_run=dry_run, force=force, guard_message=guard_message, claim_first=claim_first)
            if result is not None:
                return result
        raise AssertionError("a claimed sync always answers")

    async def _read_and_sync(self, record: MailboxRecord, *, dry_run: bool, force: bool, guard_message: str | None,
                             claim_first: bool) -> MailboxResult | None:
        """None: the plan called nothing and its commit was refused (the lease is held, or something changed since
        the read), with nothing written: the caller reads again and claims."""
        address, mailbox = record.address, record.mailbox
        state = await self.state.partitions.load(address)
        observed = observations(state.pending, state.unreadable_links)
        if observed.set_aside:
            log.warning("observations set aside: count=%d reasons=%s", len(observed.set_aside), sorted(set(observed.set_aside.values())))
        the_plan = plan(observed.bookings, observed.deleted, state.links, mailbox, self.settings, self.now,
                        global_filters=self.global_filters, force=force, hold_removals=guard_message is not None)
        if dry_run:
            steps = [{"booking": a.booking_id, "action": a.kind.value, "reason": a.reason.value} for a in the_plan.actions]
            return MailboxResult(address, "dry-run", plan_counts(the_plan), error=the_plan.blocked.message if the_plan.blocked else None,
                                 plan=steps)
        status = SyncStatus(record.pending_mark, observed.set_aside)
        if the_plan.blocked:
            await self.state.mailboxes.update(address, last_cycle_at=self.now.isoformat(), last_outcome="blocked",
                                              last_error=the_plan.blocked.message, **status.fields(len(state.pending)))
            log.error("mailbox blocked by the mass-delete guard: mailbox_links=%d destructive=%d",
                      the_plan.blocked.links, the_plan.blocked.destructive)
            return MailboxResult(address, "blocked", plan_counts(the_plan), the_plan.blocked.message, pending_left=len(state.pending))
        execution = PlanExecution(self, record, observed, state, status, the_plan, guard_message)
        if not claim_first and calls_nothing(the_plan):
            return await execution.run_unclaimed(LeaseAsRead(state.lease, self.holder, self.clock(), self.lease_ttl_s))
        creates = [a for a in the_plan.actions if isinstance(a, Create)]
        claimed = await self.state.partitions.claim(address, self.holder, self.clock(), self.lease_ttl_s, state.lease,
                                                    [settling.intent(a) for a in creates])
        if claimed is None:                      # another sync holds the mailbox, or wrote since the read: its work waits
            return MailboxResult(address, "busy", pending_left=len(state.pending))
        lease, intents = claimed
        claim = HeldClaim(self.state.partitions, address, lease, self.lease_ttl_s, self.clock)
        try:
            execution.claim = claim
            execution.writes.intents = {link.booking_id: link for link in intents}
            execution.writes.states.update({link.booking_id: LinkState.CREATING for link in intents})
            if intents:
                await self.crash("after-intents")
            return await execution.run()
        finally:
            await self._hand_back(address, claim)

    async def _hand_back(self, address: str, claim: HeldClaim) -> None:
        """A sync that stopped before its commit (an error, a crash in a test) still gives its lease back, so the next
        sync of the mailbox need not wait for the TTL."""
        held = await claim.hand_back()
        if held is None or claim.released:
            return
        try:
            await self.state.partitions.commit(address, MailboxCommit(LeaseHeld(held)))
        except Exception as exc:               # the lease then runs out within its TTL
            log.warning("mailbox lease not released: error=%s", type(exc).__name__)


def calls_nothing(the_plan: Plan) -> bool:
    """A plan whose actions only skip, unlink or forget: no Graph call, so no lease need be held while it runs."""
    return all(a.kind in LOCAL_KINDS for a in the_plan.actions)


