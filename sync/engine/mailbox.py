"""Step 2 of a cycle, once per mailbox with pending work: read its links, pending observations and lease, plan
(pure), take the lease, carry the actions out through the calendar, and commit what `settle` (pure) decides.

A create is recorded first as an intent (with the lease), so a crash between the Graph call and its record is
recovered by the ownership tag on the next run instead of creating a second event; every other link write
happens only after the Graph call it records succeeded. A plan that calls nothing (skips, unlinks, forgets)
needs no lease held while it runs: it commits in one transaction conditioned on the lease as read, which excludes
a concurrent sync as a claim does, and goes the claimed way when that condition fails.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ..core import settle as settling
from ..core.actions import Action, Cancel, Create, Delete, GraphAction, Kind, Recover, Update
from ..core.domain import Booking, Link, LinkState, Mailbox, MailboxTestStatus, SyncFilter
from ..core.ids import is_guid
from ..core.operations import CalendarOp, OpKind
from ..core.plan import Plan, plan
from ..core.serialize import booking_from_dict
from ..core.settings import SyncSettings
from ..ports import (
    Calendar,
    LinkStore,
    MailboxCommit,
    MailboxLease,
    MailboxState,
    MailboxStateStore,
    MailboxStore,
    MailboxUnavailable,
    PendingRow,
    with_inline,
)
from .claim import Clock, HeldClaim

log = logging.getLogger("sync.engine")
CANCEL_COMMENT = "This visit was canceled in Dynamics 365 Field Service."
Crash = Callable[[str], Awaitable[None]]     # test hook: called between side effects; may raise to simulate a crash
LOCAL_KINDS = frozenset({Kind.SKIP, Kind.UNLINK, Kind.FORGET})     # settled without a Graph call
WRITE_COUNTS = ("created", "updated", "deleted", "cancelled", "unlinked", "recreated")
LEASE_TTL_S = 30.0               # renewed every 10 s while the sync runs; a dead holder's lease is free within 30 s


async def _no_crash(_: str) -> None:
    return None


class MailboxSyncStore(MailboxStore, LinkStore, MailboxStateStore, Protocol):
    """The rows one mailbox's sync touches."""


@dataclass
class MailboxResult:
    mailbox: str
    outcome: str                    # synced | skipped | blocked | failed | transient | busy | dry-run
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    plan: list[dict[str, str]] | None = None
    pending_left: int = 0           # observations this sync kept for the next one (derived: no second read of the rows)

    def to_dict(self) -> dict[str, Any]:
        return {"mailbox": self.mailbox, "outcome": self.outcome, "counts": self.counts, "error": self.error,
                "pending_left": self.pending_left, **({"plan": self.plan} if self.plan is not None else {})}


NOT_A_BOOKING_ID, UNREADABLE, UNREADABLE_LINK = "not_a_booking_id", "unreadable_observation", "unreadable_link"
SET_ASIDE_SENTENCES = {
    UNREADABLE_LINK: "a booking's link does not read (written by another version?); its changes are kept and not synced, "
                     "so it is never created twice",
    NOT_A_BOOKING_ID: "a waiting observation is stored under a key that is not a booking id; it was removed (nothing can apply it)",
    UNREADABLE: "a waiting observation could not be read (written by another version?); it is kept, and the booking syncs "
                "with its next change",
}


@dataclass
class Observed:
    bookings: dict[str, Booking]
    deleted: set[str]
    set_aside: dict[str, str] = field(default_factory=dict)     # a pending row's booking id -> why it cannot be planned


def observations(pending: list[PendingRow], unreadable_links: Collection[str] = ()) -> Observed:
    """A mailbox's pending observations: the bookings observed, the ids observed deleted, and the rows set aside.

    No single row may stop a mailbox (E3): a row under a key that is not a booking id (a planner would plan a create
    no claim can record) or one that does not read as a booking is set aside with its reason, and the rest syncs."""
    observed = Observed({}, set())
    for p in pending:
        booking_id = p["booking_id"]
        if not is_guid(booking_id):
            observed.set_aside[booking_id] = NOT_A_BOOKING_ID
        elif booking_id != booking_id.lower():           # no writer stores one; kept, since its id is a booking's
            observed.set_aside[booking_id] = UNREADABLE
        elif p["deleted"]:
            observed.deleted.add(booking_id)
        elif p["booking"]:
            try:
                booking = booking_from_dict(p["booking"])
            except (KeyError, TypeError, ValueError, AttributeError):
                observed.set_aside[booking_id] = UNREADABLE
                continue
            if booking.id != booking_id:
                observed.set_aside[booking_id] = UNREADABLE
                continue
            observed.bookings[booking_id] = booking
    for booking_id in set(unreadable_links) & (set(observed.bookings) | observed.deleted):
        observed.bookings.pop(booking_id, None)         # planned without its link, it would be created a second time
        observed.deleted.discard(booking_id)
        observed.set_aside[booking_id] = UNREADABLE_LINK
    return observed


def plan_counts(p: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in p.actions:
        counts[a.kind.value] = counts.get(a.kind.value, 0) + 1
    return counts


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class MailboxSync:
    """One mailbox's sync. Its Table round trips: the mailbox's partition read (links, observations, errors, lease),
    the lease taken (with the create intents), the commit (links, observations, errors, the lease given back) and
    the mailbox's status; the mailbox row itself comes with the cycle's listing when the caller has it. A plan that
    calls nothing makes no claim: the read, one conditioned commit and the status."""

    def __init__(self, store: MailboxSyncStore, calendar: Calendar, settings: SyncSettings, now: datetime, *,
                 global_filters: tuple[SyncFilter, ...] = (), crash: Crash = _no_crash, holder: str | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, clock: Clock = _wall_clock):
        self.store, self.calendar, self.settings, self.now = store, calendar, settings, now
        self.global_filters, self.crash = global_filters, crash
        # The holder names the caller's own attempt: Durable's re-run of an activity whose host died takes over the
        # lease its first attempt left; any other holder's lease is free within one TTL of its death.
        self.holder, self.lease_ttl_s, self.clock = holder or f"sync-{uuid.uuid4()}", lease_ttl_s, clock

    async def run(self, address: str, *, dry_run: bool = False, force: bool = False, hold_removals: str | None = None,
                  keep_held: bool = False, entry: tuple[Mailbox, dict[str, Any]] | None = None) -> MailboxResult:
        """`hold_removals` carries the deployment-wide guard's message when it tripped (D5): creates and updates go,
        removals wait with their observations. `keep_held`: a sync outside the cycle (a webhook's) keeps holding what
        the last cycle's guard held, until a cycle decides again. `entry`: the mailbox and its row as the caller read
        them (the cycle's listing), read before the observations so the pending mark it holds covers them."""
        address = address.lower()
        entry = entry or await self.store.mailbox_entry(address)
        if entry is None or not entry[0].eligible:
            return MailboxResult(address, "skipped", error="mailbox not enabled for sync" if entry else "mailbox not registered")
        mailbox, row = entry
        if keep_held and not force and hold_removals is None:
            hold_removals = (row.get("last_error") or "held by the deployment-wide guard") if row.get("removals_held") else None
        return await self._read_and_sync(address, mailbox, row, dry_run=dry_run, force=force, hold_removals=hold_removals)

    async def _read_and_sync(self, address: str, mailbox: Mailbox, row: dict[str, Any], *, dry_run: bool, force: bool,
                             hold_removals: str | None, claim_first: bool = False) -> MailboxResult:
        state = with_inline(await self.store.mailbox_state(address), row)
        observed = observations(state.pending, state.unreadable_links)
        bookings, deleted = observed.bookings, observed.deleted
        if observed.set_aside:
            log.warning("observations set aside: count=%d reasons=%s", len(observed.set_aside), sorted(set(observed.set_aside.values())))
        the_plan = plan(bookings, deleted, state.links, mailbox, self.settings, self.now, global_filters=self.global_filters, force=force,
                        hold_removals=hold_removals is not None)
        if dry_run:
            return MailboxResult(address, "dry-run", plan_counts(the_plan), error=the_plan.blocked.message if the_plan.blocked else None,
                                 plan=[{"booking": a.booking_id, "action": a.kind.value,
                                        "reason": a.reason.value} for a in the_plan.actions])
        status = _Status(row.get("pending_mark") or "", state.lease.inline_done if state.lease else "", observed.set_aside)
        if the_plan.blocked:
            await self.store.update_mailbox_fields(address, last_cycle_at=self.now.isoformat(), last_outcome="blocked",
                                                   last_error=the_plan.blocked.message, **status.fields(len(state.pending)))
            log.error("mailbox blocked by the mass-delete guard: mailbox_links=%d destructive=%d",
                      the_plan.blocked.links, the_plan.blocked.destructive)
            return MailboxResult(address, "blocked", plan_counts(the_plan), the_plan.blocked.message, pending_left=len(state.pending))
        if not claim_first and calls_nothing(the_plan):
            execution = self._execution(mailbox, bookings, deleted, state, None, status, the_plan, hold_removals)
            unclaimed = await execution.run_unclaimed(the_plan, state.lease)
            if unclaimed is not None:
                return unclaimed
            # The lease is held, or something changed since the read (a claim, a newer observation), and nothing was
            # written: read again and go the claimed way, which settles these as it always has (a held lease: busy).
            return await self._read_and_sync(address, mailbox, row, dry_run=dry_run, force=force, hold_removals=hold_removals,
                                             claim_first=True)
        creates = [a for a in the_plan.actions if isinstance(a, Create)]
        claimed = await self.store.claim_mailbox(address, self.holder, self.clock(), self.lease_ttl_s, state.lease,
                                                 [settling.intent(a) for a in creates])
        if claimed is None:                      # another sync holds the mailbox, or wrote since the read: its work waits
            return MailboxResult(address, "busy", pending_left=len(state.pending))
        lease, intents = claimed
        claim = HeldClaim(self.store, address, lease, self.lease_ttl_s, self.clock)
        try:
            execution = self._execution(mailbox, bookings, deleted, state, claim, status, the_plan, hold_removals)
            execution.intents = {link.booking_id: link for link in intents}
            execution.states.update({link.booking_id: LinkState.CREATING for link in intents})
            if intents:
                await self.crash("after-intents")
            return await execution.run(the_plan)
        finally:
            await self._hand_back(address, claim)

    def _execution(self, mailbox: Mailbox, bookings: dict[str, Booking], deleted: set[str], state: MailboxState, claim: HeldClaim | None,
                   status: _Status, the_plan: Plan, hold_removals: str | None) -> _Execution:
        execution = _Execution(self, mailbox, bookings, deleted, state, claim, status)
        execution.keep_pending.update(the_plan.held)
        for booking_id, reason in status.set_aside.items():
            if reason in (UNREADABLE, UNREADABLE_LINK):   # another version may read it; a newer observation replaces it
                execution.keep_pending.add(booking_id)
                execution.outcomes[booking_id] = {"action": "set_aside", "reason": reason, "error": SET_ASIDE_SENTENCES[reason]}
        execution.held_message = hold_removals if the_plan.held else None
        return execution

    async def _hand_back(self, address: str, claim: HeldClaim) -> None:
        """A sync that stopped before its commit (an error, a crash in a test) still gives its lease back, so the next
        sync of the mailbox need not wait for the TTL."""
        held = await claim.hand_back()
        if held is None or claim.released:
            return
        try:
            await self.store.commit_mailbox(address, MailboxCommit(release=held))
        except Exception as exc:               # the lease then runs out within its TTL
            log.warning("mailbox lease not released: error=%s", type(exc).__name__)


@dataclass
class _Status:
    """What the mailbox row learns of this sync besides its outcome: which pending mark it covered, what it left, and
    the last inline set the lease row records as applied (which lets collect write the next one)."""
    mark: str
    inline_done: str
    set_aside: dict[str, str] = field(default_factory=dict)

    def fields(self, left: int) -> dict[str, Any]:
        reasons = sorted(set(self.set_aside.values()))
        return {"consumed_mark": self.mark, "pending_left": left, "consumed_inline": self.inline_done,
                "set_aside_count": len(self.set_aside), "set_aside_reason": "; ".join(SET_ASIDE_SENTENCES[r] for r in reasons)}


class _Execution:
    """Carries out one mailbox plan: each action's result goes through `settle`, whose decisions are gathered into
    the sync's one commit (links only after the Graph calls they record)."""

    def __init__(self, sync: MailboxSync, mailbox: Mailbox, bookings: dict[str, Booking], deleted: set[str], state: MailboxState,
                 claim: HeldClaim | None, status: _Status):
        self.sync, self.mailbox, self.bookings, self.deleted, self.pending = sync, mailbox, bookings, deleted, state.pending
        self.store, self.calendar, self.crash, self.now = sync.store, sync.calendar, sync.crash, sync.now
        self.claim, self.status, self.known_errors = claim, status, state.errors
        self.inline_mark = state.inline_mark
        self.counts: dict[str, int] = {}
        self.keep_pending: set[str] = set()
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.mailbox_failure: str | None = None
        self.held_message: str | None = None
        self.intents: dict[str, Link] = {}
        self.puts: dict[str, Link] = {}
        self.deletes: dict[str, Link] = {}
        self.states = {booking_id: link.state for booking_id, link in state.links.items()}   # as the store holds them after each write

    async def run_unclaimed(self, the_plan: Plan, seen: MailboxLease | None) -> MailboxResult | None:
        """A plan that calls nothing outside the store, settled and committed in one transaction conditioned on the
        lease as read (MailboxStateStore.commit_unclaimed), without taking the lease first. None, with nothing
        written, when that condition failed or the commit must remove index rows: the caller claims instead."""
        await self._carry_out(the_plan.actions)
        commit = self._gathered(final=True)
        if commit.unindex or not await self.store.commit_unclaimed(self.mailbox.address, commit, seen, self.sync.holder, self.sync.clock()):
            return None
        self._applied(commit)
        if commit.puts or commit.deletes:
            await self.crash("after-links")
        return await self._record_mailbox()

    async def run(self, the_plan: Plan) -> MailboxResult:
        actions: list[Action] = [a for a in the_plan.actions if not isinstance(a, Recover)]
        for recover in the_plan.actions:
            if isinstance(recover, Recover):
                actions.extend(await self._recover(recover))
        await self._carry_out(actions)
        await self._commit(release=True)
        return await self._record_mailbox()

    async def _recover(self, action: Recover) -> list[Action]:
        """A create intent left by an interrupted run: link the event if Graph has it, then plan the booking again."""
        try:
            found = await self.calendar.find_tagged(self.mailbox.address, action.link.environment, action.booking_id)
        except MailboxUnavailable as exc:        # M6, as for a write; a transient error leaves the mailbox retryable
            self.mailbox_failure = self.mailbox_failure or exc.reason
            self.keep_pending.add(action.booking_id)
            return []
        self._count("recovered")
        recovery = settling.recovered(action, found, self.now)
        plan_against = recovery.plan_against
        if recovery.write is not None:
            plan_against = await self.store.put_link(recovery.write.link)
            self.states[action.booking_id] = plan_against.state
        booking = self.bookings.get(action.booking_id)
        again = plan({booking.id: booking} if booking else {}, {action.booking_id} & self.deleted, {action.booking_id: plan_against},
                     self.mailbox, self.sync.settings, self.now, global_filters=self.sync.global_filters, force=True)
        if settling.intent_obsolete(recovery, again.actions):
            await self.store.delete_link(action.link)
            self.states.pop(action.booking_id, None)
        return again.actions

    async def _carry_out(self, actions: Sequence[Action]) -> None:
        local = [a for a in actions if a.kind in LOCAL_KINDS]
        for action in local:
            self._decided(action, settling.settle(action, None, None, self.now))
            if action.kind != Kind.SKIP:
                await self.crash("after-unlink")
        calls: list[GraphAction] = [a for a in actions if isinstance(a, (Create, Update, Delete, Cancel))]
        if calls:
            await self._call_graph(calls)

    async def _call_graph(self, calls: list[GraphAction]) -> None:
        await self._record_intents([a for a in calls if isinstance(a, Create) and a.booking_id not in self.intents])
        results = await self.calendar.apply(self.mailbox.address, [_operation(a) for a in calls])
        await self.crash("after-graph")
        by_id = {a.booking_id: a for a in calls}
        follow_ups: list[Create] = []
        duplicates: list[Recover] = []
        for booking_id, result in results.items():
            action = by_id[booking_id]
            current = self.intents.pop(booking_id, None) if isinstance(action, Create) else action.link
            decision = settling.settle(action, result, current, self.now)
            self._decided(action, decision)
            if isinstance(decision.follow_up, Create):
                follow_ups.append(decision.follow_up)
            elif isinstance(decision.follow_up, Recover):
                duplicates.append(decision.follow_up)
        if follow_ups or duplicates:              # what this round's calls did is recorded before the next round's
            await self._commit(release=False)
        for duplicate in duplicates:
            await self._link_existing(duplicate)
        if follow_ups:
            await self._call_graph(list(follow_ups))

    async def _link_existing(self, action: Recover) -> None:
        """Graph answered that this transactionId made an event already: link it by its tag. If the tag look-up does
        not see it yet, the intent stays for the next run's recovery; nothing is created again now (no loop)."""
        found = await self.calendar.find_tagged(self.mailbox.address, action.link.environment, action.booking_id)
        recovery = settling.recovered(action, found, self.now)
        if recovery.write is None:
            self._count("failed")
            self.keep_pending.add(action.booking_id)
            self.outcomes[action.booking_id] = {"action": "create", "reason": action.reason.value,
                                                "error": "created earlier, not found by its tag yet; linked on the next run"}
            return
        await self.store.put_link(recovery.write.link)
        self.states[action.booking_id] = recovery.write.link.state
        self._count("created")
        self.outcomes[action.booking_id] = {"action": "create", "reason": action.reason.value, "error": None}

    async def _record_intents(self, creates: list[Create]) -> None:
        """Intents of follow-up creates (the first round's came with the lease)."""
        if not creates:
            return
        written = await self.store.put_links([settling.intent(a) for a in creates])   # with the etags the next write must match
        await self.crash("after-intents")
        self.states.update({a.booking_id: LinkState.CREATING for a in creates})
        self.intents.update({link.booking_id: link for link in written})

    def _decided(self, action: Action, decision: settling.Settlement) -> None:
        if isinstance(decision.write, settling.PutLink):
            self.puts[action.booking_id] = decision.write.link
            self.deletes.pop(action.booking_id, None)
            self.states[action.booking_id] = decision.write.link.state
        elif isinstance(decision.write, settling.DeleteLink):
            self.deletes[action.booking_id] = decision.write.link
            self.puts.pop(action.booking_id, None)
            self.states.pop(action.booking_id, None)
        if decision.count:
            self._count(decision.count)
        if decision.keep_pending:
            self.keep_pending.add(action.booking_id)
        if decision.mailbox_failure and self.mailbox_failure is None:
            self.mailbox_failure = decision.mailbox_failure
        if decision.record:
            self.outcomes[action.booking_id] = {"action": action.kind.value, "reason": action.reason.value, "error": decision.error}

    def _gathered(self, *, final: bool) -> MailboxCommit:
        """The link writes gathered so far (taken: the next commit starts empty); when `final`, also the observations
        handled and the errors."""
        deletes = list(self.deletes.values())
        commit = MailboxCommit(puts=list(self.puts.values()), deletes=deletes,
                               # a deleted booking's index row goes with collect (it has no later observation to route)
                               unindex=[link for link in deletes if link.booking_id not in self.deleted])
        if final:
            commit.consumed = [p for p in self.pending if p["booking_id"] not in self.keep_pending]
            commit.outcomes, commit.known_errors = self.outcomes, self.known_errors
            if self.inline_mark:
                commit.inline_done = self.inline_mark
                commit.kept_inline = [p for p in self.pending if p.get("inline") and p["booking_id"] in self.keep_pending]
        self.puts, self.deletes = {}, {}
        return commit

    async def _commit(self, *, release: bool) -> None:
        """The link writes gathered so far; with `release`, also the observations handled, the errors and the lease."""
        assert self.claim is not None, "a claimed commit needs the claim"
        commit = self._gathered(final=release)
        if release:
            commit.release = await self.claim.hand_back()
        if commit.puts or commit.deletes or commit.consumed or commit.outcomes or commit.release is not None:
            released = await self.store.commit_mailbox(self.mailbox.address, commit)
            self.claim.released = commit.release is not None
            if released:                         # only a released lease row records the inline set as applied
                self._applied(commit)
            if commit.puts or commit.deletes:
                await self.crash("after-links")

    def _applied(self, commit: MailboxCommit) -> None:
        if commit.inline_done:
            self.status.inline_done = commit.inline_done

    async def _record_mailbox(self) -> MailboxResult:
        address = self.mailbox.address
        left = sum(1 for p in self.pending if p["booking_id"] in self.keep_pending)
        if self.mailbox_failure is not None:                             # M6: mark Failure, skip until tested again
            reason = self.mailbox_failure
            await self.store.put_mailbox(replace(self.mailbox, test_status=MailboxTestStatus.FAILURE, test_reason=reason))
            await self.store.update_mailbox_fields(address, last_cycle_at=self.now.isoformat(), last_outcome="failed", last_error=reason,
                                                   **self.status.fields(left))
            return MailboxResult(address, "failed", self.counts, reason, pending_left=left)
        failed = self.counts.get("failed", 0)
        outcome = "blocked" if self.held_message else "transient" if failed else "synced"
        error = self.held_message or (f"{failed} item(s) will be retried next cycle" if failed else "")
        fields: dict[str, Any] = {"last_cycle_at": self.now.isoformat(), "last_outcome": outcome, "last_error": error,
                                  "linked_count": sum(1 for state in self.states.values() if state == LinkState.LINKED),
                                  "removals_held": bool(self.held_message), **self.status.fields(left)}
        if any(self.counts.get(k) for k in WRITE_COUNTS):
            fields.update({f"count_{k}": v for k, v in self.counts.items()})
        await self.store.update_mailbox_fields(address, **fields)
        return MailboxResult(address, outcome, self.counts, error or None, pending_left=left)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def calls_nothing(the_plan: Plan) -> bool:
    """A plan whose actions only skip, unlink or forget: no Graph call, so no lease need be held while it runs."""
    return all(a.kind in LOCAL_KINDS for a in the_plan.actions)


def _operation(action: GraphAction) -> CalendarOp:
    if isinstance(action, Create):
        return CalendarOp(action.booking_id, OpKind.CREATE, action.rendered.payload)
    if isinstance(action, Update):
        return CalendarOp(action.booking_id, OpKind.UPDATE, action.rendered.payload_for_update(), action.link.event_id)
    if isinstance(action, Cancel):
        return CalendarOp(action.booking_id, OpKind.CANCEL, event_id=action.link.event_id, comment=CANCEL_COMMENT)
    return CalendarOp(action.booking_id, OpKind.DELETE, event_id=action.link.event_id)
