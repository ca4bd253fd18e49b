"""The engine on in-memory fakes: collect -> plan -> execute -> record, rule by rule, including crashes."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sync.core.domain import MailboxTestStatus
from sync.core.render import TAG_BOOKING
from sync.core.settings import SyncSettings
from sync.ports import Outcome
from tests.factories import CANCELED, NOW, booking, moved, with_work
from tests.world import World

A, B = "a@contoso.example", "b@contoso.example"


async def test_r_c1_first_cycle_creates_events_with_ownership_tag():
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)
    result = await w.cycle()
    assert result[A]["counts"]["created"] == 1
    (event,) = w.events(A)
    assert event["tags"][TAG_BOOKING] == b.id and event["start"] == b.start


async def test_r_c4_second_cycle_without_change_writes_nothing():
    w = World()
    await w.enable(A)
    w.put(*[booking(A, start=NOW + timedelta(hours=h)) for h in range(5)])
    await w.cycle()
    graph_before, links_before = w.calendar.writes, w.store.link_writes
    result = await w.cycle()
    assert result == {} and w.calendar.writes == graph_before and w.store.link_writes == links_before


async def test_r_c2_moved_booking_updates_in_place():
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await w.cycle()
    event_id = w.events(A)[0]["id"]
    w.put(moved(b, timedelta(hours=3)))
    result = await w.cycle()
    assert result[A]["counts"] == {"updated": 1}
    (event,) = w.events(A)
    assert event["id"] == event_id and event["start"] == b.start + timedelta(hours=3)


async def test_r_c5_event_deleted_by_owner_comes_back_on_next_booking_change_only():
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.calendar.mailbox(A).events.clear()
    await w.cycle()
    assert w.events(A) == []                       # C5: no read-back for drift
    w.put(moved(b, timedelta(hours=1)))
    result = await w.cycle()
    assert result[A]["counts"]["recreated"] == 1
    assert len(w.events(A)) == 1 and (await w.store.partitions.links(A))[b.id].generation == 1


async def test_r_c6_reassignment_creates_in_new_mailbox_and_unlinks_old():
    w = World()
    await w.enable(A)
    await w.enable(B)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.put(replace(b, mailbox=B))
    result = await w.cycle()
    assert result[A]["counts"] == {"unlinked": 1} and result[B]["counts"] == {"created": 1}
    assert len(w.events(A)) == 1 and len(w.events(B)) == 1        # fieldservice profile: old event stays (D3)
    assert [l.state.value for l in (await w.store.partitions.links(A)).values()] == ["unlinked"]


async def test_r_d3_booking_back_in_scope_takes_its_old_event_up_again_without_duplicate():
    w = World()
    await w.enable(A)
    await w.enable(B)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.put(replace(b, mailbox=B))
    await w.cycle()
    back = moved(replace(b, mailbox=A), timedelta(hours=2))
    w.put(back)
    result = await w.cycle()
    assert result[A]["counts"] == {"updated": 1}
    assert [(e["start"], e["tags"][TAG_BOOKING]) for e in w.tagged(A)] == [(back.start, b.id)]


async def test_r_d3_logical_delete_with_delete_setting_then_return_creates_with_next_generation():
    w = World(SyncSettings(logical_deletes="delete"))
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.put(replace(b, active=False))
    await w.cycle()
    assert w.events(A) == []
    w.put(b)
    await w.cycle()
    assert len(w.tagged(A)) == 1 and (await w.store.partitions.links(A))[b.id].generation == 1


async def test_r_c6_enhanced_removes_old_future_event():
    w = World(SyncSettings().with_profile("enhanced"))
    await w.enable(A)
    await w.enable(B)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.put(replace(b, mailbox=B))
    await w.cycle()
    assert w.events(A) == [] and len(w.events(B)) == 1


async def test_r_d1_deleted_future_booking_deletes_event_and_past_one_stays():
    w = World()
    await w.enable(A)
    future, past = booking(A), booking(A, start=NOW - timedelta(days=2))
    w.put(future, past)
    await w.cycle()
    assert len(w.events(A)) == 2
    w.source.delete(future.id)
    w.source.delete(past.id)
    result = await w.cycle()
    assert result[A]["counts"] == {"deleted": 1, "unlinked": 1}
    assert [e["start"] for e in w.events(A)] == [past.start]        # D4
    assert await w.store.partitions.links(A) == {}


async def test_r_d4_untagged_personal_events_are_never_touched():
    w = World(SyncSettings().with_profile("enhanced"))
    await w.enable(A)
    w.calendar.add_personal_event(A, NOW + timedelta(days=1), NOW + timedelta(days=1, hours=1))
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.source.delete(b.id)
    await w.cycle()
    assert [e["subject"] for e in w.events(A)] == ["Personal"] and w.calendar.touched_untagged == 0


async def test_r_x2_enhanced_cancels_future_canceled_booking():
    w = World(SyncSettings().with_profile("enhanced"))
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.put(replace(b, status=CANCELED))
    result = await w.cycle()
    assert result[A]["counts"] == {"deleted": 1} and w.events(A) == []


async def test_r_x1_a_cancellation_left_alone_wakes_no_mailbox_sync():
    """X1 leaves the event as it is whatever the link says, so the observation is not kept and the mailbox is not
    synced for it: no lease, no Graph request, no link write, the event untouched."""
    from sync.engine.collect import collect
    w = World()
    await w.enable(A)
    b, never_synced = booking(A), booking(A, start=NOW + timedelta(days=30))     # the second is outside the window
    w.put(b, never_synced)
    await w.cycle()
    (before,) = w.events(A)
    graph, links = w.calendar.writes, w.store.link_writes
    w.put(replace(b, status=CANCELED), replace(never_synced, status=CANCELED, start=NOW + timedelta(days=1)))
    collected = await collect(w.source, w.store, w.settings, w.now)
    assert (collected.left_alone, collected.mailboxes, collected.removal_candidates) == (2, [], 0)
    assert await w.cycle() == {}
    assert w.events(A) == [before] and (w.calendar.writes, w.store.link_writes) == (graph, links)
    w.put(replace(b, start=b.start + timedelta(hours=1)))          # no longer canceled, and moved: C2 as always
    assert (await w.cycle())[A]["counts"] == {"updated": 1}


@pytest.mark.parametrize("filters", ["the mailbox's", "the global ones"])
async def test_r_x1_s5_a_cancellation_within_the_filters_is_left_alone_too(filters):
    """Collect reads a mailbox's filters (its own, or else the global ones) from its row for a cancellation: one
    still in scope wakes no sync, as without filters."""
    from sync.core.domain import SyncFilter
    from sync.engine.collect import collect
    north = (SyncFilter("north", territories=frozenset({"North"})),)
    w = World()
    await w.enable(A, filters=north if filters == "the mailbox's" else ())
    if filters == "the global ones":
        await w.store.config.put_global_filters(north)
    b = booking(A)                                  # territory North
    w.put(b)
    await w.cycle()
    w.put(replace(b, status=CANCELED))
    collected = await collect(w.source, w.store, w.settings, w.now)
    assert (collected.left_alone, collected.mailboxes) == (1, [])


@pytest.mark.parametrize("case", ["work waiting", "filtered out", "out of the global filters", "reassigned", "propagated"])
async def test_r_x1_a_cancellation_still_reaches_a_mailbox_whose_sync_it_can_change(case):
    """Kept for the mailbox whenever its sync could decide otherwise than X1's skip: work waiting there (an older
    observation of the booking would be synced in its place), filters that now leave the booking out (its own or
    the global ones: a logical delete, D3), the booking moved to another resource (D3 for the holder),
    cancellations propagated (X2)."""
    from sync.core.domain import SyncFilter
    from sync.engine.collect import collect
    south = (SyncFilter("south", territories=frozenset({"South"})),)
    w = World(SyncSettings(propagate_cancellations=True) if case == "propagated" else None)
    mailbox = await w.enable(A)
    await w.enable(B)
    b, other = booking(A), booking(A, start=NOW + timedelta(hours=5))
    w.put(b, other)
    await w.cycle()
    if case == "work waiting":
        w.put(moved(b, timedelta(hours=2)), moved(other, timedelta(hours=1)))
        await collect(w.source, w.store, w.settings, w.now)        # waiting: the mailbox has not synced them yet
    if case == "filtered out":
        await w.store.mailboxes.put(replace(mailbox, filters=south))
    if case == "out of the global filters":
        await w.store.config.put_global_filters(south)
    canceled = replace(b, status=CANCELED, mailbox=B if case == "reassigned" else A)
    w.put(canceled)
    collected = await collect(w.source, w.store, w.settings, w.now)
    assert A in collected.mailboxes and collected.left_alone == (1 if case == "reassigned" else 0)   # B: nothing to do
    counts = (await w.cycle())[A]["counts"]
    assert counts == {"work waiting": {"skipped": 1, "updated": 1}, "filtered out": {"unlinked": 1},
                      "out of the global filters": {"unlinked": 1}, "reassigned": {"unlinked": 1},
                      "propagated": {"deleted": 1}}[case]


async def test_r_s3_booking_enters_window_with_time_and_syncs_unedited():
    w = World()
    await w.enable(A)
    far = booking(A, start=NOW + timedelta(days=16))
    w.put(far)
    await w.cycle()
    assert w.events(A) == []
    w.now = NOW + timedelta(days=3)
    await w.cycle()
    assert len(w.events(A)) == 1


async def test_r_m6_broken_mailbox_is_marked_and_others_go_on():
    w = World()
    await w.enable(A)
    await w.enable(B)
    w.put(booking(A), booking(B))
    w.calendar.mailbox(A).state = "denied"
    result = await w.cycle()
    assert result[A]["outcome"] == "failed" and "access_denied" in result[A]["error"]
    assert result[B]["counts"] == {"created": 1}
    mailbox = (await w.store.mailboxes.get(A)).mailbox
    assert mailbox.test_status == MailboxTestStatus.FAILURE and not mailbox.eligible
    assert len(await w.store.partitions.observations(A)) == 1                       # nothing lost: it waits for the mailbox to be fixed


async def test_r_m6_transient_failure_keeps_status_and_retries_next_cycle():
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)
    w.calendar.faults[b.id] = [Outcome.TRANSIENT]
    result = await w.cycle()
    assert result[A]["outcome"] == "transient"
    assert (await w.store.mailboxes.get(A)).mailbox.test_status == MailboxTestStatus.SUCCESS
    await w.cycle()
    assert len(w.events(A)) == 1 and (await w.store.partitions.observations(A)) == []


async def test_r_m5_disabled_mailbox_keeps_links_and_resumes_without_duplicates():
    w = World()
    mailbox = await w.enable(A)
    b1, b2 = booking(A), booking(A, start=NOW + timedelta(days=2))
    w.put(b1)
    await w.cycle()
    await w.store.mailboxes.put(replace(mailbox, enabled=False))
    w.put(b2, moved(b1, timedelta(hours=1)))
    await w.cycle()
    assert len(w.events(A)) == 1 and len(await w.store.partitions.links(A)) == 1
    await w.store.mailboxes.put(replace(mailbox, enabled=True))
    await w.cycle()
    assert len(w.events(A)) == 2 and w.events(A)[0]["start"] == b1.start + timedelta(hours=1)


async def test_r_d5_mass_delete_guard_blocks_and_keeps_pending():
    w = World()
    await w.enable(A)
    bookings = [booking(A, start=NOW + timedelta(hours=h + 1)) for h in range(12)]
    w.put(*bookings)
    await w.cycle()
    for b in bookings:
        w.source.delete(b.id)
    result = await w.cycle()
    assert result[A]["outcome"] == "blocked" and len(w.events(A)) == 12
    result = await w.cycle(force=True)
    assert result[A]["counts"]["deleted"] == 12 and w.events(A) == []


@pytest.mark.parametrize("point", ["after-intents", "after-graph", "after-links"])
async def test_r_c1_crash_between_side_effects_never_duplicates(point):
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)

    async def crash(where: str) -> None:
        if where == point:
            raise RuntimeError(f"crash {where}")

    with pytest.raises(RuntimeError):
        await w.cycle(crash=crash)
    await w.cycle()
    await w.cycle()
    assert len(w.tagged(A)) == 1
    link = (await w.store.partitions.links(A))[b.id]
    assert link.event_id == w.tagged(A)[0]["id"] and link.state.value == "linked"


async def test_r_e3_graph_rejected_item_is_skipped_with_reason_others_go_on():
    w = World()
    await w.enable(A)
    bad, good = booking(A), booking(A)
    w.put(bad, good)
    w.calendar.faults[bad.id] = [Outcome.INVALID]
    result = await w.cycle()
    assert result[A]["counts"]["created"] == 1 and result[A]["counts"]["invalid"] == 1
    assert "rejected" in (await w.store.partitions.last_error(A, bad.id))["error"]


async def test_r_t4_expired_token_full_read_gives_same_calendar():
    w1, w2 = World(), World()
    for w in (w1, w2):
        await w.enable(A)
    bookings = [booking(A, start=NOW + timedelta(hours=h + 1)) for h in range(4)]
    for w in (w1, w2):
        w.put(*bookings)
        await w.cycle()
        w.put(moved(bookings[0], timedelta(hours=2)))
        w.source.delete(bookings[1].id)
        w.put(booking(A, id="00000000-0000-0000-0000-00000000000a"))
    w2.source.expire_tokens()
    await w1.cycle()
    await w2.cycle()
    def shape(w: World) -> list:
        return sorted((e["start"], e["tags"][TAG_BOOKING]) for e in w.tagged(A))

    assert shape(w1) == shape(w2) and len(shape(w1)) == 4


async def test_dry_run_returns_the_plan_and_writes_nothing():
    from sync.engine.collect import collect
    from sync.engine.mailbox import MailboxSync
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await collect(w.source, w.store, w.settings, w.now)
    writes_before = w.store.writes
    result = await MailboxSync(w.store, w.calendar, w.settings, w.now).run(A, dry_run=True)
    assert result.outcome == "dry-run" and result.plan == [{"booking": b.id, "action": "create", "reason": "new_in_scope"}]
    assert w.store.writes == writes_before and w.calendar.writes == 0 and len(await w.store.partitions.observations(A)) == 1


async def test_r_e1_m6_errors_of_the_recovery_look_up_leave_the_mailbox_retryable_or_failed_never_duplicated():
    from sync.ports import MailboxUnavailable, TransientError
    w = World()
    await w.enable(A)
    b = booking(A)
    w.put(b)

    async def crash(where: str) -> None:
        if where == "after-graph":
            raise RuntimeError("crash after-graph")

    with pytest.raises(RuntimeError):
        await w.cycle(crash=crash)                        # the create reached Graph; its link was never committed
    w.calendar.lookup_faults = [TransientError("Graph answered 429 after retries", code="http_429")]
    with pytest.raises(TransientError):                   # the activity reports it retryable (app/activities.py)
        await w.cycle()
    w.calendar.lookup_faults = [MailboxUnavailable("access_denied: outside the app's scope")]
    result = await w.cycle()
    assert result[A]["outcome"] == "failed" and result[A]["error"].startswith("access_denied")
    await w.enable(A)                                      # tested again
    await w.cycle()
    assert len(w.tagged(A)) == 1 and (await w.store.partitions.links(A))[b.id].state.value == "linked"


async def test_r_d5_only_observations_that_can_remove_open_the_deployment_guard():
    """collect counts, for D5's gate, the observations that can remove a holder's event: a linked booking that only
    moved in time cannot, so a cycle of moves never pays for the guard's reading of every mailbox."""
    from sync.engine.collect import collect
    w = World(SyncSettings(mass_delete_min=1))
    await w.enable(A)
    await w.enable(B)
    kept, gone, canceled, reassigned, filtered = (booking(A) for _ in range(5))
    w.put(kept, gone, canceled, reassigned, filtered, booking(B))
    await w.cycle()
    w.put(moved(kept, timedelta(hours=2)))
    assert (await collect(w.source, w.store, w.settings, w.now)).removal_candidates == 0
    w.source.delete(gone.id)
    w.put(replace(canceled, status=CANCELED), replace(reassigned, mailbox=B))
    assert (await collect(w.source, w.store, w.settings, w.now)).removal_candidates == 3
    from sync.core.domain import SyncFilter
    await w.store.config.put_global_filters((SyncFilter("north", territories=frozenset({"North"})),))
    w.put(moved(filtered, timedelta(hours=3)))                     # with filters, any observation may take a booking out of scope
    assert (await collect(w.source, w.store, w.settings, w.now)).removal_candidates == 1


async def _two_synced_calendars(settings: SyncSettings) -> tuple[World, dict[str, list]]:
    """A and B with 10 linked future bookings each: 20 links in the deployment."""
    w = World(settings)
    bookings = {m: [booking(m, start=NOW + timedelta(hours=h + 1)) for h in range(10)] for m in (A, B)}
    for m in bookings:
        await w.enable(m)
        w.put(*bookings[m])
    await w.cycle()
    return w, bookings


async def _guard_after_deleting(w: World, gone: list, listed_mailboxes: tuple[str, ...], reads: list[str] | None = None) -> dict:
    """Deletes `gone` in Dataverse, collects (no mailbox syncs), and asks the deployment-wide guard, as the cycle
    does; `reads` is emptied before the guard runs, so it holds only the guard's reads."""
    from sync.engine.collect import collect
    from sync.engine.removals import deployment_guard
    for b in gone:
        w.source.delete(b.id)
    collected = await collect(w.source, w.store, w.settings, w.now)
    listed = {m: entry for m in listed_mailboxes if (entry := await w.store.mailboxes.get(m)) is not None}
    if reads is not None:
        reads.clear()
    verdict = await deployment_guard(w.store, w.settings, w.now, collected.mailboxes, collected.removal_candidates, listed=listed,
                                     carried=collected.carried)
    return verdict.to_dict()


async def test_r_d5_under_the_share_the_deployment_guard_reads_only_the_mailboxes_whose_work_was_waiting():
    """Removals are at most collect's candidates plus what was already waiting: under the share of all links (from
    the listed rows' counts), the guard passes reading only the mailboxes with waiting work; over it, it counts every
    mailbox exactly and holds."""
    from sync.admin.mailboxes import MailboxAdmin
    w, bookings = await _two_synced_calendars(SyncSettings(mass_delete_min=2))
    await MailboxAdmin(w.store.mailboxes, w.calendar).register("new@contoso.example", "https://contoso.crm.dynamics.com")   # never synced
    reads: list[str] = []
    state_of = w.store.partitions.load

    async def counted(address: str):
        reads.append(address)
        return await state_of(address)

    w.store.partitions.load = counted                       # type: ignore[method-assign]
    everyone = (A, B, "new@contoso.example")

    few = await _guard_after_deleting(w, bookings[A][:3], everyone, reads)                 # 3 of 20 links
    assert few == {"removals": 3, "exact": False, "links": 20, "blocked": False, "message": None} and reads == []
    # A's 3 still wait (no sync ran): 2 new candidates, but with what waits in A, 5 of 20; only A is read.
    more = await _guard_after_deleting(w, bookings[B][:2], everyone, reads)
    assert more == {"removals": 5, "exact": False, "links": 20, "blocked": False, "message": None} and reads == [A]
    # 6 new candidates, 5 waiting: 11 of 20 could go, over the share; every mailbox is counted exactly, and held.
    many = await _guard_after_deleting(w, bookings[A][3:7] + bookings[B][2:4], everyone, reads)
    assert many["blocked"] and many["exact"] and many["removals"] == 11 and sorted(reads) == [A, A, B, B]


async def test_r_d5_removals_left_waiting_by_one_cycle_count_toward_the_deployment_guard_of_the_next():
    """9 removals (under the count of 10) pass a cycle's guard and wait (the mailbox's sync did not run); the next
    cycle's 2 new ones are under the count too, but with the 9 still waiting, 11 of 20 links would go: held."""
    w, bookings = await _two_synced_calendars(SyncSettings(mass_delete_min=10))
    assert not (await _guard_after_deleting(w, bookings[A][:9], (A, B)))["blocked"]
    held = await _guard_after_deleting(w, bookings[B][:2], (A, B))
    assert held["blocked"] and held["removals"] == 11 and held["links"] == 20


async def test_r_t2_a_sync_that_stops_before_its_commit_gives_its_lease_back():
    """An error between the Graph calls and the commit leaves the work for the next sync; that sync, under any
    holder, need not wait for the stopped one's lease to run out."""
    from sync.engine.mailbox import MailboxSync
    w = World()
    await w.enable(A)
    w.put(booking(A))

    async def crash(where: str) -> None:
        if where == "after-graph":
            raise RuntimeError("crash after-graph")

    with pytest.raises(RuntimeError):
        await w.cycle(crash=crash)
    state = await w.store.partitions.load(A)
    assert state.lease is not None and not state.lease.holder and len(await w.store.partitions.observations(A)) == 1
    other = MailboxSync(w.store, w.calendar, w.settings, w.now, holder="another-host", clock=lambda: w.now)
    result = await other.run(A)
    assert result.outcome == "synced" and result.counts.get("recovered") == 1 and len(w.tagged(A)) == 1


async def test_r_d1_a_booking_deleted_while_its_mailbox_waited_is_never_created():
    """A booking observed for a mailbox that has not synced it yet (disabled here, M5; or failing) has no link there,
    only a waiting observation. Its deletion must reach that mailbox too, or the mailbox's next sync would create an
    event for a booking that no longer exists, and nothing would remove it until a full read."""
    w = World()
    mailbox = await w.enable(A)
    await w.store.mailboxes.put(replace(mailbox, enabled=False))
    b = booking(A)
    w.put(b)
    await w.cycle()                                                  # observed for A, which does not sync while disabled
    assert w.events(A) == [] and [p.booking_id for p in await w.store.partitions.observations(A)] == [b.id]
    w.source.delete(b.id)
    await w.cycle()
    await w.store.mailboxes.put(replace(mailbox, enabled=True))
    await w.cycle()
    assert w.events(A) == [] and await w.store.partitions.links(A) == {} and await w.store.partitions.observations(A) == []


async def test_r_d1_a_deletion_webhook_reaches_a_mailbox_still_waiting_to_create_the_event():
    """The webhook path routes a deletion as collect does: to the mailboxes holding a link and to those whose
    waiting observation names the booking (T3 with D1)."""
    from sync.app.webhook import Notification, route

    w = World()
    mailbox = await w.enable(A)
    await w.store.mailboxes.put(replace(mailbox, enabled=False))
    b = booking(A)
    w.put(b)
    await w.cycle()
    w.source.delete(b.id)
    assert await route(Notification("Delete", b.id, None), w.source, w.store, w.settings, w.now) == {A: None}
    assert [(p.booking_id, p.deleted) for p in await w.store.partitions.observations(A)] == [(b.id, True)]


@pytest.mark.parametrize("case", ["left alone", "work waiting", "propagated", "out of the global filters"])
async def test_r_x1_t3_a_cancellation_webhook_wakes_a_mailbox_only_when_its_sync_could_change_something(case):
    """The webhook routes a change as collect does: a cancellation X1 leaves alone is kept for no mailbox and wakes
    none, unless work waits there, cancellations are propagated (X2), or the global filters take the booking out of
    the mailbox's scope (a logical delete: read only for a cancellation that could be left alone)."""
    from sync.app.webhook import Notification, route
    from sync.core.domain import SyncFilter
    from sync.core.serialize import booking_to_dict
    from sync.engine.collect import collect
    w = World(SyncSettings(propagate_cancellations=True) if case == "propagated" else None)
    await w.enable(A)
    b = booking(A)
    w.put(b)
    await w.cycle()
    if case == "work waiting":
        w.put(booking(A, start=NOW + timedelta(hours=5)))
        await collect(w.source, w.store, w.settings, w.now)
    if case == "out of the global filters":
        await w.store.config.put_global_filters((SyncFilter("south", territories=frozenset({"South"})),))
    canceled = replace(b, status=CANCELED)
    w.put(canceled)
    routed = await route(Notification("Update", b.id, None), w.source, w.store, w.settings, w.now)
    assert routed == ({} if case == "left alone" else {A: booking_to_dict(canceled)})
    assert (b.id in {p.booking_id for p in await w.store.partitions.observations(A)}) == (case != "left alone")


async def test_r_t2_a_renewal_in_flight_when_the_sync_ends_leaves_the_mailbox_free():
    """The lease's renewal has reached the store but its answer has not come back when the sync hands the lease
    back. Cancelled there, the claim would keep the old ETag, the commit's release would fail on it, and the mailbox
    would stay busy for a whole TTL; the claim waits for the answer instead, and the next sync can claim at once."""
    import asyncio

    from sync.engine.claim import HeldClaim
    from sync.ports import LeaseHeld, MailboxCommit
    w = World()
    await w.enable(A)
    lease, _ = await w.store.partitions.claim(A, "first", NOW, 0.3, (await w.store.partitions.load(A)).lease)
    landed = asyncio.Event()
    renew = w.store.partitions.renew

    async def answer_late(*args, **kwargs):
        renewed = await renew(*args, **kwargs)
        landed.set()
        await asyncio.sleep(0.05)               # the answer on its way back
        return renewed

    w.store.partitions.renew = answer_late
    claim = HeldClaim(w.store.partitions, A, lease, 0.3, lambda: NOW)
    await landed.wait()
    held = await claim.hand_back()
    assert held is not None and held.etag != lease.etag
    await w.store.partitions.commit(A, MailboxCommit(LeaseHeld(held)))
    assert await w.store.partitions.claim(A, "next", NOW, 30, (await w.store.partitions.load(A)).lease) is not None


def _counting_claims(w: World) -> list[str]:
    claims: list[str] = []
    claim = w.store.partitions.claim

    async def counted(mailbox, holder, *args, **kwargs):
        claims.append(holder)
        return await claim(mailbox, holder, *args, **kwargs)

    w.store.partitions.claim = counted
    return claims


async def test_r_t2_a_sync_that_calls_nothing_commits_without_claiming_and_one_that_calls_claims():
    """D2's unlink calls no service: its sync commits in one transaction conditioned on the lease as read, without a
    claim first. A sync with a Graph call (D1's delete) still claims before it."""
    w = World()
    await w.enable(A)
    future, past = booking(A), booking(A, start=NOW - timedelta(days=2))
    w.put(future, past)
    await w.cycle()
    claims = _counting_claims(w)
    w.source.delete(past.id)
    result = await w.cycle()
    assert result[A]["outcome"] == "synced" and result[A]["counts"] == {"unlinked": 1} and claims == []
    state = await w.store.partitions.load(A)
    assert set(state.links) == {future.id} and state.pending == [] and not state.lease.holder
    assert await with_work(w.store) == set()
    w.source.delete(future.id)
    result = await w.cycle()
    assert result[A]["counts"] == {"deleted": 1} and claims == ["world"]


@pytest.mark.parametrize("meanwhile", ["another sync claims", "a newer observation arrives"])
async def test_r_t2_a_sync_that_calls_nothing_goes_the_claimed_way_when_the_mailbox_changed_since_its_read(meanwhile):
    """Between the read and the unclaimed commit, another sync claims the mailbox (this one is then busy and its work
    waits), or a newer observation of the booking replaces the row read (this one reads again and settles that
    instead); either way the unclaimed commit writes nothing."""
    from sync.core.serialize import booking_to_dict
    from sync.engine.collect import collect
    from sync.engine.mailbox import MailboxSync
    from sync.ports import LeaseAsRead, LeaseHeld, MailboxCommit
    w = World()
    await w.enable(A)
    past, ahead = booking(A, start=NOW - timedelta(days=2)), booking(A)
    w.put(past, ahead)
    await w.cycle()
    if meanwhile == "another sync claims":
        w.source.delete(past.id)                                 # D2: an unlink
        await collect(w.source, w.store, w.settings, w.now)
    else:
        await w.store.partitions.observe({A: {ahead.id: booking_to_dict(ahead)}})    # observed again, unchanged (C4): a skip
    claims = _counting_claims(w)
    commit = w.store.partitions.commit
    other, tried = [], []

    async def changed_first(mailbox, the_commit):
        if not isinstance(the_commit.lease, LeaseAsRead):
            return await commit(mailbox, the_commit)
        tried.append(mailbox)
        if meanwhile == "another sync claims":
            other.append(await w.store.partitions.claim(A, "other", NOW, 30, the_commit.lease.seen))
        else:
            w.put(moved(ahead, timedelta(hours=3)))
            await w.store.partitions.observe({A: {ahead.id: booking_to_dict(w.source.bookings[ahead.id])}})
        written = await commit(mailbox, the_commit)
        assert not written
        return written

    w.store.partitions.commit = changed_first
    sync = MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world", clock=lambda: w.now)
    result = (await sync.run(A)).to_dict()
    assert tried == [A]
    if meanwhile == "another sync claims":
        assert result["outcome"] == "busy" and claims == ["other", "world"]
        assert (await w.store.partitions.links(A)).keys() == {past.id, ahead.id}
        assert len(await w.store.partitions.observations(A)) == 1    # the work waits
        w.store.partitions.commit = commit
        await w.store.partitions.commit(A, MailboxCommit(LeaseHeld(other[0][0])))
        assert (await MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world").run(A)).counts == {"unlinked": 1}
    else:
        assert result["outcome"] == "synced" and result["counts"] == {"updated": 1} and claims == ["world"]
        assert [e["start"] for e in w.events(A)] == [past.start, ahead.start + timedelta(hours=3)]
    assert await w.store.partitions.observations(A) == []


async def test_r_t3_a_sync_whose_status_is_lost_leaves_work_that_applies_nothing_twice():
    """The sync's commit consumed its observations; if its status merge (the consumed mark) is lost, the mailbox still
    shows work. The next sync reads the partition, finds nothing waiting but what came since, and never moves the
    event back to an older observation."""
    from sync.core.serialize import booking_to_dict
    from sync.engine.mailbox import MailboxSync
    w, first = await _synced_then_moved_by_an_hour()
    update = w.store.mailboxes.update

    async def lost(address, **fields):
        return None

    w.store.mailboxes.update = lost
    result = await MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world", clock=lambda: w.now).run(A)
    w.store.mailboxes.update = update
    assert result.counts == {"updated": 1} and w.events(A)[0]["start"] == first.start + timedelta(hours=1)
    assert await with_work(w.store) == {A}                              # the status never came: work still shows
    latest = moved(first, timedelta(hours=2))
    w.put(latest)
    await w.store.partitions.observe({A: {first.id: booking_to_dict(latest)}})    # a webhook's observation, newer
    for _ in range(2):
        result = await MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world", clock=lambda: w.now).run(A)
        assert w.events(A)[0]["start"] == latest.start
    assert result.counts == {}
    assert await with_work(w.store) == set()


async def test_r_t3_a_newer_observation_written_during_a_commit_is_applied_after_it():
    """A webhook observation written while a sync commits is newer: the sync's commit leaves it (its ETag changed), and
    the next sync applies it; nothing is lost and nothing older wins."""
    from sync.core.serialize import booking_to_dict
    from sync.engine.mailbox import MailboxSync
    w, first = await _synced_then_moved_by_an_hour()
    latest = moved(first, timedelta(hours=3))
    commit = w.store.partitions.commit

    async def webhook_meanwhile(mailbox, the_commit):
        w.put(latest)
        await w.store.partitions.observe({A: {first.id: booking_to_dict(latest)}})
        return await commit(mailbox, the_commit)

    w.store.partitions.commit = webhook_meanwhile
    result = await MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world", clock=lambda: w.now).run(A)
    w.store.partitions.commit = commit
    assert result.counts == {"updated": 1} and w.events(A)[0]["start"] == first.start + timedelta(hours=1)
    assert await with_work(w.store) == {A}
    assert (await w.cycle())[A]["counts"] == {"updated": 1}
    assert w.events(A)[0]["start"] == latest.start and await with_work(w.store) == set()


async def test_r_t2_a_sync_that_lost_its_lease_still_commits_what_graph_did():
    """A sync whose lease ran out and was taken during its Graph calls still commits its links (Graph did it), and
    leaves the lease to its new holder; the next sync, once that lease ran out, changes nothing."""
    from sync.engine.mailbox import MailboxSync
    w, first = await _synced_then_moved_by_an_hour()

    async def taken_meanwhile(where: str) -> None:
        if where == "after-graph":
            seen = (await w.store.partitions.load(A)).lease
            assert await w.store.partitions.claim(A, "other", w.now + timedelta(minutes=5), 30, seen) is not None

    result = await MailboxSync(w.store, w.calendar, w.settings, w.now, holder="world", clock=lambda: w.now, crash=taken_meanwhile).run(A)
    assert result.counts == {"updated": 1} and w.events(A)[0]["start"] == first.start + timedelta(hours=1)
    assert (await w.store.partitions.load(A)).lease.holder == "other"
    writes = w.calendar.writes
    later = w.now + timedelta(minutes=10)                                  # the other holder's lease has run out
    await MailboxSync(w.store, w.calendar, w.settings, later, holder="world", clock=lambda: later).run(A)
    assert w.calendar.writes == writes


async def _synced_then_moved_by_an_hour():
    """A mailbox whose one booking is synced, then moved by an hour and collected: the move waits in its partition."""
    from sync.engine.collect import collect
    w = World()
    await w.enable(A)
    first = booking(A)
    w.put(first)
    await w.cycle()
    w.put(moved(first, timedelta(hours=1)))
    await collect(w.source, w.store, w.settings, w.now)
    return w, first
