"""A Hypothesis state machine over the whole engine on in-memory fakes (model: vdirsyncer's SyncMachine).

Random booking creates, edits, reassignments, cancels, deletes, clock moves, mailbox toggles, events
deleted by their owner, transient Graph failures, webhook observations beside collect's, lost status merges,
and crashes injected between any two side effects.
After every sync (and a clean follow-up sync that recovers from the crash):
- no booking has two events in one mailbox;
- no untagged (personal) event was touched;
- no past event was deleted (D4);
- every in-scope booking's event matches its booking (C1, C2, S1-S5, X1, C5);
- a further sync with no change makes zero Graph writes and zero link writes (C4).
Run longer with HYPOTHESIS_PROFILE=long (see tests/conftest.py).
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from sync.app.activities import MAILBOX_LEASE_S
from sync.core.render import TAG_BOOKING
from sync.core.serialize import booking_to_dict
from sync.core.settings import SyncSettings
from sync.ports import Outcome
from tests.factories import CANCELED, NOW, SCHEDULED, booking, work_order
from tests.world import World

MAILBOXES = ["a@contoso.example", "b@contoso.example", "c@contoso.example"]
CRASH_POINTS = [None, None, "after-intents", "after-graph", "after-links", "after-unlink"]


class Crash(Exception):
    pass


def run(coro):
    return asyncio.run(coro)


class SyncMachine(RuleBasedStateMachine):
    profile = SyncSettings()
    repeated_transaction = "400"          # what Graph answers a create that repeats a transactionId (400, 409 or 201)

    def __init__(self) -> None:
        super().__init__()
        self.w = World(self.profile)
        self.w.calendar.repeated_transaction = self.repeated_transaction
        self.dead_leases = False
        self.lose_acknowledgements = False
        self.disabled: set[str] = set()
        self.owner_deleted: set[tuple[str, str]] = set()       # (booking, mailbox) whose event the owner removed
        self.personal: dict[str, str] = {}
        for address in MAILBOXES:
            run(self.w.enable(address))
            self.personal[address] = self.w.calendar.add_personal_event(address, NOW + timedelta(days=1), NOW + timedelta(days=1, hours=1))

    bookings = Bundle("bookings")

    # -- Field Service side -----------------------------------------------------------------------------------
    @rule(target=bookings, mailbox=st.sampled_from(MAILBOXES), hours=st.integers(-10 * 24, 20 * 24), length=st.integers(1, 4),
          with_work_order=st.sampled_from([True, True, True, False]), resource_type=st.sampled_from([3, 3, 3, 6]))
    def create(self, mailbox, hours, length, with_work_order, resource_type):
        b = booking(mailbox, start=self.w.now + timedelta(hours=hours), hours=length,
                    work_order=work_order() if with_work_order else None, resource_type=resource_type)
        self.w.put(b)
        return b.id

    def _current(self, booking_id):
        return self.w.source.bookings.get(booking_id)

    @rule(booking_id=bookings, hours=st.integers(-48, 48).filter(bool))
    def move(self, booking_id, hours):
        b = self._current(booking_id)
        if b is not None:
            self.w.put(replace(b, start=b.start + timedelta(hours=hours), end=b.end + timedelta(hours=hours)))
            self.owner_deleted = {(i, m) for i, m in self.owner_deleted if i != booking_id}

    @rule(booking_id=bookings, summary=st.text(max_size=40))
    def edit_work_order(self, booking_id, summary):
        b = self._current(booking_id)
        if b is not None and b.work_order is not None:
            self.w.put(replace(b, work_order=replace(b.work_order, summary=summary)))

    @rule(booking_id=bookings, mailbox=st.sampled_from(MAILBOXES))
    def reassign(self, booking_id, mailbox):
        b = self._current(booking_id)
        if b is not None:
            self.w.put(replace(b, mailbox=mailbox))

    @rule(booking_id=bookings)
    def toggle_cancel(self, booking_id):
        b = self._current(booking_id)
        if b is not None:
            self.w.put(replace(b, status=SCHEDULED if b.status.canceled else CANCELED))

    @rule(booking_id=bookings)
    def toggle_active(self, booking_id):
        b = self._current(booking_id)
        if b is not None:
            self.w.put(replace(b, active=not b.active))

    @rule(booking_id=bookings)
    def delete(self, booking_id):
        self.w.source.delete(booking_id)

    # -- the rest of the world ----------------------------------------------------------------------------------------
    @rule(hours=st.integers(1, 72))
    def advance_clock(self, hours):
        self.w.now += timedelta(hours=hours)

    @rule(mailbox=st.sampled_from(MAILBOXES))
    def toggle_mailbox(self, mailbox):
        current = run(self.w.store.mailboxes.get(mailbox)).mailbox
        run(self.w.store.mailboxes.put(replace(current, enabled=not current.enabled)))
        self.disabled ^= {mailbox}

    @rule(booking_id=bookings, mailbox=st.sampled_from(MAILBOXES))
    def owner_deletes_event(self, booking_id, mailbox):
        events = self.w.calendar.mailbox(mailbox).events
        for event_id, e in list(events.items()):
            if e["tags"].get(TAG_BOOKING) == booking_id:
                del events[event_id]
                self.owner_deleted.add((booking_id, mailbox))

    @rule(booking_id=bookings)
    def transient_failure(self, booking_id):
        self.w.calendar.faults[booking_id] = [Outcome.TRANSIENT]

    @rule(booking_id=bookings)
    def lost_answer(self, booking_id):
        self.w.calendar.lose_answers.add(booking_id)

    @rule(mailbox=st.sampled_from(MAILBOXES))
    def host_dies_holding_a_mailbox_lease(self, mailbox):
        """A host killed in the middle of a mailbox's sync leaves its lease; it never renews it (T2, #19)."""
        seen = run(self.w.store.partitions.load(mailbox)).lease
        run(self.w.store.partitions.claim(mailbox, "dead-host", self.w.now, MAILBOX_LEASE_S, seen))
        self.dead_leases = True

    @rule(n=st.integers(1, 3))
    def lagging_tag_lookups(self, n):
        """The look-up by tag does not see the newest events yet: a recovered create is sent again, with the same
        transactionId, and Graph answers it as a repeat (C1, #14: 400, 409 or the existing event)."""
        self.w.calendar.lagging_lookups = n

    @rule(booking_id=bookings)
    def webhook_observes(self, booking_id):
        """A webhook's observation of the booking as it is now, written to its mailbox's partition beside (older or
        newer than) what collect wrote there."""
        b = self._current(booking_id)
        if b is not None:
            run(self.w.store.partitions.observe({b.mailbox: {b.id: booking_to_dict(b)}}))

    @rule()
    def acknowledgements_lost(self):
        """The next cycle's status merges (each naming the pending mark its sync covered) are lost (a host dies after
        the commit): the mailboxes keep showing work their syncs already did."""
        self.lose_acknowledgements = True

    # -- syncing and the invariants ------------------------------------------------------------------------------------------
    @rule(point=st.sampled_from(CRASH_POINTS))
    def sync(self, point):
        before = self._tagged()
        fired = []
        merge = self.w.store.mailboxes.update

        async def maybe_lost(address, **fields):
            if "consumed_mark" not in fields:
                await merge(address, **fields)

        if self.lose_acknowledgements:
            self.w.store.mailboxes.update = maybe_lost

        async def crash(where: str) -> None:
            if where == point and not fired:
                fired.append(where)
                raise Crash(where)

        try:
            run(self.w.cycle(crash=crash, force=True))
        except Crash:
            pass
        self.w.store.mailboxes.update = merge
        self.lose_acknowledgements = False
        self._check_no_past_event_deleted(before)
        self.w.calendar.faults.clear()
        self.w.calendar.lose_answers.clear()
        before = self._tagged()
        run(self.w.cycle(force=True))                      # recovers what the last one left, with tag look-ups still lagging
        self.w.calendar.lagging_lookups = 0
        if self.dead_leases:                               # a dead holder's lease is free once its TTL ran out
            self.w.now += timedelta(seconds=MAILBOX_LEASE_S + 1)
            self.dead_leases = False
        run(self.w.cycle(force=True))                      # a clean cycle recovers whatever is left
        self._check_no_past_event_deleted(before)
        self._check_calendars_match_bookings()
        graph, links = self.w.calendar.writes, self.w.store.link_writes
        run(self.w.cycle(force=True))
        assert (self.w.calendar.writes, self.w.store.link_writes) == (graph, links), "a cycle with no change wrote something"

    def _tagged(self) -> dict[str, dict]:
        return {e["id"]: {**e, "mailbox": m} for m in MAILBOXES for e in self.w.calendar.mailbox(m).events.values() if e["tags"]}

    def _check_no_past_event_deleted(self, before: dict[str, dict]) -> None:
        after = self._tagged()
        for event_id, e in before.items():
            if event_id not in after:
                assert e["start"] > self.w.now, f"a past event was deleted ({e['start']} <= {self.w.now})"

    def _in_scope(self, b) -> bool:
        low, high = self.w.now - self.profile.window_past, self.w.now + self.profile.window_future
        return (b.work_order is not None and b.resource_type == 3 and b.active and not b.status.canceled
                and b.start < high and b.end > low)

    def _check_calendars_match_bookings(self) -> None:
        for mailbox in MAILBOXES:
            if mailbox in self.disabled:
                continue
            events = self.w.calendar.mailbox(mailbox).events.values()
            by_booking: dict[str, list[dict]] = {}
            for e in events:
                if e["tags"]:
                    by_booking.setdefault(e["tags"][TAG_BOOKING], []).append(e)
            for b in self.w.source.bookings.values():
                if b.mailbox != mailbox or not self._in_scope(b) or (b.id, mailbox) in self.owner_deleted:
                    continue
                found = by_booking.get(b.id, [])
                assert len(found) == 1, f"in-scope booking has {len(found)} events in its mailbox"
                assert (found[0]["start"], found[0]["end"]) == (b.start, b.end), "event does not match its booking"

    @invariant()
    def one_event_per_booking_per_mailbox(self):
        for mailbox in MAILBOXES:
            tags = [e["tags"][TAG_BOOKING] for e in self.w.calendar.mailbox(mailbox).events.values() if e["tags"]]
            assert len(tags) == len(set(tags)), "a booking has two events in one mailbox"

    @invariant()
    def personal_events_untouched(self):
        assert self.w.calendar.touched_untagged == 0
        for mailbox, event_id in self.personal.items():
            assert event_id in self.w.calendar.mailbox(mailbox).events


class EnhancedSyncMachine(SyncMachine):
    profile = SyncSettings().with_profile("enhanced")


class DeleteLogicalSyncMachine(SyncMachine):
    profile = SyncSettings(logical_deletes="delete", propagate_cancellations=True)


class Repeated409SyncMachine(SyncMachine):
    repeated_transaction = "409"


class Repeated201SyncMachine(SyncMachine):
    repeated_transaction = "201"


TestSyncMachine = SyncMachine.TestCase
TestRepeated409SyncMachine = Repeated409SyncMachine.TestCase
TestRepeated201SyncMachine = Repeated201SyncMachine.TestCase
TestEnhancedSyncMachine = EnhancedSyncMachine.TestCase
TestDeleteLogicalSyncMachine = DeleteLogicalSyncMachine.TestCase
