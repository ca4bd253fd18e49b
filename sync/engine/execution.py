"""Carrying out one mailbox's plan: each action's result goes through `settle` (pure), whose decisions are gathered
into the sync's commit (links only after the Graph calls they record), and the mailbox's status recorded last."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..core import settle as settling
from ..core.actions import Action, Cancel, Create, Delete, GraphAction, Kind, Recover, Update
from ..core.domain import Link, LinkState, MailboxTestStatus
from ..core.operations import CalendarOp, OpKind
from ..core.plan import Plan, plan
from ..ports import WRITE_COUNTS, LeaseAsRead, LeaseHeld, MailboxCommit, MailboxRecord, MailboxState, MailboxUnavailable
from .claim import HeldClaim
from .observed import KEPT_ASIDE, SET_ASIDE_SENTENCES, Observed

if TYPE_CHECKING:
    from .mailbox import MailboxSync

CANCEL_COMMENT = "This visit was canceled in Dynamics 365 Field Service."
Crash = Callable[[str], Awaitable[None]]     # test hook: called between side effects; may raise to simulate a crash
LOCAL_KINDS = frozenset({Kind.SKIP, Kind.UNLINK, Kind.FORGET})     # settled without a Graph call


async def no_crash(_: str) -> None:
    return None


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


def plan_counts(p: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in p.actions:
        counts[a.kind.value] = counts.get(a.kind.value, 0) + 1
    return counts


@dataclass
class SyncStatus:
    """What the mailbox's record learns of this sync besides its outcome: the pending mark it covered, the rows it
    set aside, and (`fields`) how many observations it left."""
    mark: str
    set_aside: dict[str, str] = field(default_factory=dict)

    def fields(self, left: int) -> dict[str, Any]:
        reasons = sorted(set(self.set_aside.values()))
        return {"consumed_mark": self.mark, "pending_left": left, "set_aside_count": len(self.set_aside),
                "set_aside_reason": "; ".join(SET_ASIDE_SENTENCES[r] for r in reasons)}


@dataclass
class LinkWrites:
    """The link writes decided and not yet committed, and every link's state as the store holds it after each write."""
    states: dict[str, LinkState]
    intents: dict[str, Link] = field(default_factory=dict)
    puts: dict[str, Link] = field(default_factory=dict)
    deletes: dict[str, Link] = field(default_factory=dict)

    def decided(self, booking_id: str, write: settling.PutLink | settling.DeleteLink | None) -> None:
        if isinstance(write, settling.PutLink):
            self.puts[booking_id] = write.link
            self.deletes.pop(booking_id, None)
            self.states[booking_id] = write.link.state
        elif isinstance(write, settling.DeleteLink):
            self.deletes[booking_id] = write.link
            self.puts.pop(booking_id, None)
            self.states.pop(booking_id, None)

    def taken(self) -> tuple[list[Link], list[Link]]:
        puts, deletes = list(self.puts.values()), list(self.deletes.values())
        self.puts, self.deletes = {}, {}
        return puts, deletes


@dataclass
class Tally:
    """What the sync did, by booking and in all: counts, the observations it keeps, the errors, a mailbox's failure."""
    counts: dict[str, int] = field(default_factory=dict)
    keep: set[str] = field(default_factory=set)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    mailbox_failure: str | None = None

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


class PlanExecution:
    def __init__(self, sync: MailboxSync, record: MailboxRecord, observed: Observed, state: MailboxState, status: SyncStatus,
                 the_plan: Plan, guard_message: str | None):
        self.sync, self.record, self.observed, self.state, self.status = sync, record, observed, state, status
        self.the_plan = the_plan
        self.partitions, self.calendar, self.crash, self.now = sync.state.partitions, sync.calendar, sync.crash, sync.now
        self.claim: HeldClaim | None = None
        self.writes = LinkWrites({booking_id: link.state for booking_id, link in state.links.items()})
        self.tally = Tally(keep=set(the_plan.held))
        self.held_message = guard_message if the_plan.held else None
        for booking_id, reason in status.set_aside.items():
            if reason in KEPT_ASIDE:
                self.tally.keep.add(booking_id)
                self.tally.outcomes[booking_id] = {"action": "set_aside", "reason": reason, "error": SET_ASIDE_SENTENCES[reason]}

    @property
    def address(self) -> str:
        return self.record.address

    async def run_unclaimed(self, as_read: LeaseAsRead) -> MailboxResult | None:
        """A plan that calls nothing outside the store, committed conditioned on the lease as read; None, with nothing
        written, when that commit was refused."""
        await self._carry_out(self.the_plan.actions)
        commit = self._gathered(as_read, final=True)
        if not await self.partitions.commit(self.address, commit):
            return None
        if commit.puts or commit.deletes:
            await self.crash("after-links")
        return await self._record_mailbox()

    async def run(self) -> MailboxResult:
        actions: list[Action] = [a for a in self.the_plan.actions if not isinstance(a, Recover)]
        for recover in self.the_plan.actions:
            if isinstance(recover, Recover):
                actions.extend(await self._recover(recover))
        await self._carry_out(actions)
        await self._commit(release=True)
        return await self._record_mailbox()

    async def _recover(self, action: Recover) -> list[Action]:
        """A create intent left by an interrupted run: link the event if Graph has it, then plan the booking again."""
        try:
            found = await self.calendar.find_tagged(self.address, action.link.environment, action.booking_id)
        except MailboxUnavailable as exc:        # M6, as for a write; a transient error leaves the mailbox retryable
            self.tally.mailbox_failure = self.tally.mailbox_failure or exc.reason
            self.tally.keep.add(action.booking_id)
            return []
        self.tally.count("recovered")
        recovery = settling.recovered(action, found, self.now)
        plan_against = recovery.plan_against
        if recovery.write is not None:
            plan_against = (await self.partitions.write_links([recovery.write.link]))[0]
            self.writes.states[action.booking_id] = plan_against.state
        booking = self.observed.bookings.get(action.booking_id)
        again = plan({booking.id: booking} if booking else {}, {action.booking_id} & self.observed.deleted,
                     {action.booking_id: plan_against}, self.record.mailbox, self.sync.settings, self.now,
                     global_filters=self.sync.global_filters, force=True)
        if settling.intent_obsolete(recovery, again.actions):
            await self.partitions.delete_link(action.link)
            self.writes.states.pop(action.booking_id, None)
        return again.actions

    async def _carry_out(self, actions: Sequence[Action]) -> None:
        for action in [a for a in actions if a.kind in LOCAL_KINDS]:
            self._decided(action, settling.settle(action, None, None, self.now))
            if action.kind != Kind.SKIP:
                await self.crash("after-unlink")
        calls: list[GraphAction] = [a for a in actions if isinstance(a, (Create, Update, Delete, Cancel))]
        if calls:
            await self._call_graph(calls)

    async def _call_graph(self, calls: list[GraphAction]) -> None:
        await self._record_intents([a for a in calls if isinstance(a, Create) and a.booking_id not in self.writes.intents])
        results = await self.calendar.apply(self.address, [_operation(a) for a in calls])
        await self.crash("after-graph")
        by_id = {a.booking_id: a for a in calls}
        follow_ups: list[Create] = []
        duplicates: list[Recover] = []
        for booking_id, result in results.items():
            action = by_id[booking_id]
            current = self.writes.intents.pop(booking_id, None) if isinstance(action, Create) else action.link
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
        found = await self.calendar.find_tagged(self.address, action.link.environment, action.booking_id)
        recovery = settling.recovered(action, found, self.now)
        if recovery.write is None:
            self.tally.count("failed")
            self.tally.keep.add(action.booking_id)
            self.tally.outcomes[action.booking_id] = {"action": "create", "reason": action.reason.value,
                                                      "error": "created earlier, not found by its tag yet; linked on the next run"}
            return
        await self.partitions.write_links([recovery.write.link])
        self.writes.states[action.booking_id] = recovery.write.link.state
        self.tally.count("created")
        self.tally.outcomes[action.booking_id] = {"action": "create", "reason": action.reason.value, "error": None}

    async def _record_intents(self, creates: list[Create]) -> None:
        """Intents of follow-up creates (the first round's came with the lease)."""
        if not creates:
            return
        written = await self.partitions.write_links([settling.intent(a) for a in creates])   # with the etags the next write must match
        await self.crash("after-intents")
        self.writes.states.update({a.booking_id: LinkState.CREATING for a in creates})
        self.writes.intents.update({link.booking_id: link for link in written})

    def _decided(self, action: Action, decision: settling.Settlement) -> None:
        self.writes.decided(action.booking_id, decision.write)
        if decision.count:
            self.tally.count(decision.count)
        if decision.keep_pending:
            self.tally.keep.add(action.booking_id)
        if decision.mailbox_failure and self.tally.mailbox_failure is None:
            self.tally.mailbox_failure = decision.mailbox_failure
        if decision.record:
            self.tally.outcomes[action.booking_id] = {"action": action.kind.value, "reason": action.reason.value, "error": decision.error}

    def _gathered(self, lease: LeaseAsRead | LeaseHeld, *, final: bool) -> MailboxCommit:
        """The link writes gathered so far (taken: the next commit starts empty); when `final`, also the observations
        handled and the errors."""
        puts, deletes = self.writes.taken()
        # a deleted booking's index row goes with collect (it has no later observation to route)
        commit = MailboxCommit(lease, puts=puts, deletes=deletes,
                               unindex=[link for link in deletes if link.booking_id not in self.observed.deleted])
        if final:
            commit.consumed = [p for p in self.state.pending if p.booking_id not in self.tally.keep]
            commit.errors, commit.known_errors = self.tally.outcomes, self.state.errors
        return commit

    async def _commit(self, *, release: bool) -> None:
        """The link writes gathered so far; with `release`, also the observations handled, the errors and the lease."""
        assert self.claim is not None, "a claimed commit needs the claim"
        held = await self.claim.hand_back() if release else self.claim.lease
        commit = self._gathered(LeaseHeld(held, release=release), final=release)
        if commit.puts or commit.deletes or commit.consumed or commit.errors or release:
            await self.partitions.commit(self.address, commit)
            self.claim.released = release
            if commit.puts or commit.deletes:
                await self.crash("after-links")

    async def _record_mailbox(self) -> MailboxResult:
        address, tally = self.address, self.tally
        left = sum(1 for p in self.state.pending if p.booking_id in tally.keep)
        registry = self.sync.state.mailboxes
        if tally.mailbox_failure is not None:                             # M6: mark Failure, skip until tested again
            reason = tally.mailbox_failure
            await registry.put(replace(self.record.mailbox, test_status=MailboxTestStatus.FAILURE, test_reason=reason))
            await registry.update(address, last_cycle_at=self.now.isoformat(), last_outcome="failed", last_error=reason,
                                  **self.status.fields(left))
            return MailboxResult(address, "failed", tally.counts, reason, pending_left=left)
        failed = tally.counts.get("failed", 0)
        outcome = "blocked" if self.held_message else "transient" if failed else "synced"
        error = self.held_message or (f"{failed} item(s) will be retried next cycle" if failed else "")
        fields: dict[str, Any] = {"last_cycle_at": self.now.isoformat(), "last_outcome": outcome, "last_error": error,
                                  "linked_count": sum(1 for state in self.writes.states.values() if state == LinkState.LINKED),
                                  "removals_held": bool(self.held_message), **self.status.fields(left)}
        if any(tally.counts.get(k) for k in WRITE_COUNTS):
            fields["counts"] = {k: tally.counts.get(k, 0) for k in WRITE_COUNTS}
        await registry.update(address, **fields)
        return MailboxResult(address, outcome, tally.counts, error or None, pending_left=left)


def _operation(action: GraphAction) -> CalendarOp:
    if isinstance(action, Create):
        return CalendarOp(action.booking_id, OpKind.CREATE, action.rendered.payload)
    if isinstance(action, Update):
        return CalendarOp(action.booking_id, OpKind.UPDATE, action.rendered.payload_for_update(), action.link.event_id)
    if isinstance(action, Cancel):
        return CalendarOp(action.booking_id, OpKind.CANCEL, event_id=action.link.event_id, comment=CANCEL_COMMENT)
    return CalendarOp(action.booking_id, OpKind.DELETE, event_id=action.link.event_id)
