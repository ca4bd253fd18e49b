"""The sync cycle's two steps, each one activity in the orchestration:

1. `collect(environment)`: read what changed in Dataverse once (change tracking, the slice of time that
   entered the window, or the whole window when there is no valid token), route each booking to the
   mailboxes it concerns (its current mailbox and any mailbox holding a link for it) and store it as a
   pending observation; then advance the cursor. Nothing is lost if a mailbox fails later: its pending
   observations stay until its sync handles them.
2. `sync_mailbox(mailbox)`: load links and pending observations -> plan (pure) -> run the actions through
   the calendar -> record each outcome. A link is committed only after the Graph call it records
   succeeded; a create is recorded first as an intent, so a crash between the call and the record is
   recovered by the ownership tag on the next run instead of creating a second event.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Awaitable, Callable

from .dataverse import ChangeTokenExpired
from .domain import Booking, Link, LinkState, Mailbox, MailboxTestStatus, SyncFilter
from .plan import Action, Kind, Plan, Reason, plan, window
from .ports import CalendarOp, OpKind, OpResult, Outcome
from .render import render
from .serialize import booking_from_dict, booking_to_dict
from .settings import SyncSettings

log = logging.getLogger("sync.engine")
CANCEL_COMMENT = "This visit was canceled in Dynamics 365 Field Service."
Crash = Callable[[str], Awaitable[None]]     # test hook: called between side effects; may raise to simulate a crash


async def _no_crash(_: str) -> None:
    return None


# ---- step 1: collect --------------------------------------------------------------------------------------------

@dataclass
class CollectResult:
    environment: str
    mode: str                       # full | delta
    bookings_read: int = 0
    deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    routed: dict[str, int] = field(default_factory=dict)    # mailbox -> observations stored
    unregistered: int = 0
    mailboxes: list[str] = field(default_factory=list)      # mailboxes with pending work

    def to_dict(self) -> dict:
        return {"environment": self.environment, "mode": self.mode, "bookings_read": self.bookings_read, "deleted": self.deleted,
                "skipped": self.skipped, "routed": len(self.routed), "observations": sum(self.routed.values()),
                "unregistered": self.unregistered, "mailboxes": self.mailboxes}


async def collect(source: Any, store: Any, settings: SyncSettings, now: datetime) -> CollectResult:
    environment = source.environment.lower()
    low, high = window(settings, now)
    cursor = await store.get_cursor(environment)
    observed: dict[str, Booking | None] = {}
    skipped = []
    rows = await store.list_mailboxes()
    registered = {m["address"] for m in rows}
    initial = {m["address"] for m in rows if m.get("needs_initial_read")}
    initial_read: dict[str, Booking] = {}
    mode = "delta"
    try:
        if cursor is None:
            raise ChangeTokenExpired("no cursor yet")
        horizon = cursor["horizon"]
        slice_start = max(horizon or low, low) if (horizon is None or high > horizon) else None   # S3: what entered the window
        # One request for a quiet cycle: both change feeds and the new slice of the window, batched.
        changes, entered = await source.read_cycle(cursor["delta_links"], slice_start, high)
        delta_links = changes.delta_links
        reads = [entered]
        if changes.changed_bookings:
            reads.append(await source.read_bookings(changes.changed_bookings))
        if changes.changed_work_orders:
            reads.append(await source.read_bookings_for_work_orders(changes.changed_work_orders, low, high))
        if initial:                                                      # newly enabled mailboxes start from the window
            window_read = await source.read_window(low, high)
            initial_read = {b.id: b for b in window_read.bookings if b.mailbox in initial}
            skipped.extend(window_read.skipped)
        for result in reads:
            observed.update({b.id: b for b in result.bookings})
            skipped.extend(result.skipped)
        for booking_id in changes.changed_bookings - set(observed) - {s.booking_id for s in skipped}:
            observed[booking_id] = None                                  # changed, then deleted before we read it
        for booking_id in changes.deleted_bookings:
            observed[booking_id] = None
    except ChangeTokenExpired:
        mode = "full"                                                    # T4 fallback: the whole window
        start = await source.read_changes(None)                          # start tracking before reading: no change falls between
        delta_links = start.delta_links
        result = await source.read_window(low, high)
        observed = {b.id: b for b in result.bookings}
        skipped = list(result.skipped)
        linked = await store.linked_bookings(environment)
        missing = set(linked) - set(observed) - {s.booking_id for s in skipped}
        if missing:                                                      # linked but not in the window: gone, or moved away?
            again = await source.read_bookings(missing)
            observed.update({b.id: b for b in again.bookings})
            skipped.extend(again.skipped)
            for booking_id in missing - {b.id for b in again.bookings} - {s.booking_id for s in again.skipped}:
                observed[booking_id] = None

    outcome = CollectResult(environment, mode, bookings_read=sum(1 for b in observed.values() if b is not None),
                            deleted=sum(1 for b in observed.values() if b is None))
    for s in skipped:
        outcome.skipped[s.reason] = outcome.skipped.get(s.reason, 0) + 1
        log.warning("booking skipped: environment=%s booking=%s reason=%s", environment, s.booking_id, s.reason)
    holders = await store.mailboxes_for_bookings(environment, observed.keys())
    per_mailbox: dict[str, dict[str, dict | None]] = {}
    for booking_id, booking in observed.items():
        targets = set(holders.get(booking_id, set()))
        if booking is not None and booking.mailbox:
            targets.add(booking.mailbox)
        for mailbox in targets:
            if mailbox not in registered:
                outcome.unregistered += 1
                continue
            per_mailbox.setdefault(mailbox, {})[booking_id] = booking_to_dict(booking) if booking is not None else None
    for booking_id, booking in initial_read.items():
        if booking_id not in observed:
            per_mailbox.setdefault(booking.mailbox, {})[booking_id] = booking_to_dict(booking)
    for mailbox, observations in sorted(per_mailbox.items()):
        await store.add_pending(mailbox, observations)
        outcome.routed[mailbox] = len(observations)
    for mailbox in initial:
        await store.update_mailbox_fields(mailbox, needs_initial_read=False)
    # ETag-guarded: if another collect advanced the cursor meanwhile, this one fails instead of going backwards.
    await store.put_cursor(environment, delta_links, high, cursor["etag"] if cursor else None)
    outcome.mailboxes = sorted(await store.pending_mailboxes())
    return outcome


# ---- step 2: sync one mailbox -------------------------------------------------------------------------------------

@dataclass
class MailboxResult:
    mailbox: str
    outcome: str                    # synced | skipped | blocked | failed | transient | dry-run
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    plan: list[dict] | None = None

    def to_dict(self) -> dict:
        return {"mailbox": self.mailbox, "outcome": self.outcome, "counts": self.counts, "error": self.error,
                **({"plan": self.plan} if self.plan is not None else {})}


def _count(counts: dict[str, int], name: str, n: int = 1) -> None:
    counts[name] = counts.get(name, 0) + n


class MailboxSync:
    def __init__(self, store: Any, calendar: Any, settings: SyncSettings, now: datetime, *, global_filters: tuple[SyncFilter, ...] = (),
                 crash: Crash = _no_crash):
        self.store, self.calendar, self.settings, self.now = store, calendar, settings, now
        self.global_filters, self.crash = global_filters, crash

    async def run(self, address: str, *, dry_run: bool = False, force: bool = False) -> MailboxResult:
        address = address.lower()
        mailbox = await self.store.get_mailbox(address)
        if mailbox is None or not mailbox.eligible:
            return MailboxResult(address, "skipped", error="mailbox not enabled for sync" if mailbox else "mailbox not registered")
        pending = await self.store.pending(address)
        links = await self.store.links(address)
        bookings = {p["booking_id"]: booking_from_dict(p["booking"]) for p in pending if not p["deleted"]}
        deleted = {p["booking_id"] for p in pending if p["deleted"]}
        the_plan = plan(bookings, deleted, links, mailbox, self.settings, self.now, global_filters=self.global_filters, force=force)
        if dry_run:
            return MailboxResult(address, "dry-run", _plan_counts(the_plan),
                                 error=the_plan.blocked.message if the_plan.blocked else None,
                                 plan=[{"booking": a.booking_id, "action": a.kind.value, "reason": a.reason.value} for a in the_plan.actions])
        if the_plan.blocked:
            await self.store.update_mailbox_fields(address, last_cycle_at=self.now.isoformat(), last_outcome="blocked",
                                                   last_error=the_plan.blocked.message)
            log.error("mailbox blocked by the mass-delete guard: mailbox_links=%d destructive=%d", the_plan.blocked.links, the_plan.blocked.destructive)
            return MailboxResult(address, "blocked", _plan_counts(the_plan), the_plan.blocked.message)
        run = _Run(self, mailbox, bookings, deleted, pending)
        return await run.execute(the_plan)


def _plan_counts(p: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in p.actions:
        _count(counts, a.kind.value)
    return counts


class _Run:
    """One execution of a mailbox plan; collects outcomes and decides which pending observations are done."""

    def __init__(self, sync: MailboxSync, mailbox: Mailbox, bookings: dict[str, Booking], deleted: set[str], pending: list[dict]):
        self.sync, self.mailbox, self.bookings, self.deleted, self.pending = sync, mailbox, bookings, deleted, pending
        self.store, self.calendar, self.crash = sync.store, sync.calendar, sync.crash
        self.counts: dict[str, int] = {}
        self.unfinished: set[str] = set()        # booking ids whose pending observation must stay
        self.outcomes: dict[str, dict] = {}
        self.mailbox_error: OpResult | None = None

    async def execute(self, the_plan: Plan) -> MailboxResult:
        actions = await self._recover(the_plan)
        await self._apply(actions)
        done = [p for p in self.pending if p["booking_id"] not in self.unfinished]
        if done:
            await self.store.clear_pending(self.mailbox.address, done)
        if self.outcomes:
            await self.store.record_outcomes(self.mailbox.address, self.outcomes)
        address = self.mailbox.address
        if self.mailbox_error is not None:                               # M6: mark Failure, skip until tested again
            reason = _mailbox_reason(self.mailbox_error)
            await self.store.put_mailbox(replace(self.mailbox, test_status=MailboxTestStatus.FAILURE, test_reason=reason))
            await self.store.update_mailbox_fields(address, last_cycle_at=self.sync.now.isoformat(), last_outcome="failed", last_error=reason)
            return MailboxResult(address, "failed", self.counts, reason)
        failed = self.counts.get("failed", 0)
        outcome = "transient" if failed else "synced"
        fields = {"last_cycle_at": self.sync.now.isoformat(), "last_outcome": outcome, "last_error": "" if not failed else
                  f"{failed} item(s) will be retried next cycle"}
        if any(self.counts.get(k) for k in ("created", "updated", "deleted", "cancelled", "unlinked", "recreated")):
            fields.update({f"count_{k}": v for k, v in self.counts.items()})
        await self.store.update_mailbox_fields(address, **fields)
        return MailboxResult(address, outcome, self.counts, fields["last_error"] or None)

    # -- intents left by an interrupted run ------------------------------------------------------------------------------
    async def _recover(self, the_plan: Plan) -> list[Action]:
        """Resolve create intents left by an interrupted run: link the event if Graph has it, then plan again."""
        actions = [a for a in the_plan.actions if a.kind != Kind.RECOVER]
        for action in the_plan.of(Kind.RECOVER):
            intent = action.link
            found = await self.calendar.find_tagged(self.mailbox.address, intent.environment, intent.booking_id)
            _count(self.counts, "recovered")
            if found:
                links = {intent.booking_id: await self.store.put_link(
                    replace(intent, event_id=found[0], state=LinkState.LINKED, written_at=self.sync.now))}
            else:
                # Never reached Graph: planning against a removal one generation back makes the next create
                # reuse the intent's transactionId, so a create Graph did apply but did not list is still caught.
                links = {intent.booking_id: replace(intent, state=LinkState.REMOVED, generation=intent.generation - 1)}
            booking = self.bookings.get(intent.booking_id)
            again = plan({booking.id: booking} if booking else {}, {intent.booking_id} & self.deleted, links, self.mailbox,
                         self.sync.settings, self.sync.now, global_filters=self.sync.global_filters, force=True)
            if not found and not any(a.kind in (Kind.CREATE, Kind.FORGET) for a in again.actions):
                await self.store.delete_link(intent)                     # nothing was created and nothing will be
            actions.extend(again.actions)
        return actions

    # -- running actions ---------------------------------------------------------------------------------------------------
    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == Kind.SKIP:
                _count(self.counts, "skipped")
        for action in [a for a in actions if a.kind in (Kind.UNLINK, Kind.FORGET)]:
            if action.kind == Kind.FORGET or action.reason == Reason.DELETED_PAST:
                await self.store.delete_link(action.link)                  # D2: the booking is gone; the event stays
            else:
                await self.store.put_link(replace(action.link, state=LinkState.UNLINKED, written_at=self.sync.now))   # D3
            _count(self.counts, "unlinked" if action.kind == Kind.UNLINK else "forgotten")
            self.outcomes[action.booking_id] = {"action": action.kind.value, "reason": action.reason.value, "error": None}
            await self.crash("after-unlink")
        creates = [a for a in actions if a.kind == Kind.CREATE]
        calls = [a for a in actions if a.kind in (Kind.UPDATE, Kind.DELETE, Kind.CANCEL)]
        intents = await self._record_intents(creates)
        ops = [CalendarOp(a.booking_id, OpKind.CREATE, a.rendered.payload) for a in creates]
        ops += [self._op(a) for a in calls]
        if not ops:
            return
        results = await self.calendar.apply(self.mailbox.address, ops)
        await self.crash("after-graph")
        by_id = {a.booking_id: a for a in creates + calls}
        recreate: list[Action] = []
        new_links: list[Link] = []
        for booking_id, result in results.items():
            action = by_id[booking_id]
            link = intents.get(booking_id, action.link)
            if result.outcome == Outcome.MAILBOX_UNAVAILABLE:
                self.mailbox_error = result
                self.unfinished.add(booking_id)
                continue
            if result.outcome == Outcome.TRANSIENT:
                _count(self.counts, "failed")
                self.unfinished.add(booking_id)
                self.outcomes[booking_id] = {"action": action.kind.value, "reason": action.reason.value,
                                             "error": f"transient: {result.code or result.status}"}
                continue
            if result.outcome == Outcome.INVALID:
                _count(self.counts, "invalid")
                self.outcomes[booking_id] = {"action": action.kind.value, "reason": action.reason.value,
                                             "error": f"rejected by Graph: {result.code or result.status}"}
                if action.kind == Kind.CREATE:                               # nothing was created: back to what was there
                    if action.link is not None:
                        await self.store.put_link(replace(action.link, etag=link.etag))
                    else:
                        await self.store.delete_link(link)
                continue
            if action.kind == Kind.CREATE:
                new_links.append(self._linked(action, link, result.event_id))
                _count(self.counts, "created")
            elif action.kind == Kind.UPDATE:
                if result.outcome == Outcome.GONE:                           # C5: the owner deleted it; create it again
                    recreate.append(action)
                    continue
                new_links.append(self._linked(action, link, result.event_id or link.event_id))
                _count(self.counts, "updated")
            else:                                                            # delete / cancel: done, or already gone
                if action.reason == Reason.DELETED:
                    await self.store.delete_link(link)                       # D1: the booking is gone for good
                else:                                                        # it may come back: remember the generation
                    await self.store.put_link(replace(link, state=LinkState.REMOVED, event_id=None, written_at=self.sync.now))
                _count(self.counts, "cancelled" if action.kind == Kind.CANCEL else "deleted")
            self.outcomes[booking_id] = {"action": action.kind.value, "reason": action.reason.value, "error": None,
                                         "event_id": result.event_id or ""}
        if new_links:
            await self.store.put_links(new_links, index=False)     # the intents wrote the index rows
            await self.crash("after-links")
        if recreate:
            await self._recreate(recreate)

    async def _recreate(self, actions: list[Action]) -> None:
        rebuilt = []
        for a in actions:
            generation = a.link.generation + 1                                # a new transactionId: the old event is gone
            rendered = render(a.booking, self.mailbox.address, self.mailbox.time_zone, generation)
            rebuilt.append(Action(Kind.CREATE, a.booking_id, a.reason, a.booking, a.link, rendered, generation))
        before = self.counts.get("created", 0)
        await self._apply(rebuilt)
        _count(self.counts, "recreated", self.counts.get("created", 0) - before)
        self.counts["created"] = before
        if not self.counts["created"]:
            del self.counts["created"]

    async def _record_intents(self, creates: list[Action]) -> dict[str, Link]:
        if not creates:
            return {}
        intents = [Link(booking_id=a.booking_id, mailbox=self.mailbox.address, environment=a.booking.environment, event_id=None,
                        generation=a.generation, trigger_fingerprint=a.rendered.trigger_fingerprint,
                        content_fingerprint=a.rendered.content_fingerprint, event_start=a.booking.start, event_end=a.booking.end,
                        state=LinkState.CREATING, etag=a.link.etag if a.link else None) for a in creates]
        await self.store.put_links(intents)
        await self.crash("after-intents")
        fresh = await self.store.links(self.mailbox.address)            # the etags the next write must match
        return {l.booking_id: fresh[l.booking_id] for l in intents}

    def _op(self, action: Action) -> CalendarOp:
        if action.kind == Kind.UPDATE:
            return CalendarOp(action.booking_id, OpKind.UPDATE, action.rendered.payload_for_update(), action.link.event_id)
        if action.kind == Kind.CANCEL:
            return CalendarOp(action.booking_id, OpKind.CANCEL, event_id=action.link.event_id, comment=CANCEL_COMMENT)
        return CalendarOp(action.booking_id, OpKind.DELETE, event_id=action.link.event_id)

    def _linked(self, action: Action, link: Link | None, event_id: str | None) -> Link:
        base = link or action.link
        return Link(booking_id=action.booking_id, mailbox=self.mailbox.address, environment=action.booking.environment,
                    event_id=event_id, generation=action.generation, trigger_fingerprint=action.rendered.trigger_fingerprint,
                    content_fingerprint=action.rendered.content_fingerprint, event_start=action.booking.start,
                    event_end=action.booking.end, state=LinkState.LINKED, has_attendees=False, written_at=self.sync.now,
                    etag=base.etag if base else None)


def _mailbox_reason(result: OpResult) -> str:
    if result.status == 403 or result.code == "ErrorAccessDenied":
        return "access_denied: the app's Exchange RBAC scope does not include this mailbox"
    if result.code == "MailboxNotEnabledForRESTAPI":
        return "mailbox_disabled: the mailbox is inactive, soft-deleted or on-premises"
    return "mailbox_not_found: Exchange Online has no mailbox for this address"
