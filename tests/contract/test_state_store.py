"""The state ports' contract: the fakes, Table Storage on Azurite and the Table double behave the same."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sync.adapters.tables import key, unkey
from sync.core.domain import Link, LinkState, Mailbox, MailboxTestStatus, SyncFilter
from sync.ports import LeaseAsRead, LeaseHeld, MailboxCommit, StoreConflict
from tests.factories import with_work

ENV = "https://contoso.crm.dynamics.com"
NO_LEASE = LeaseHeld(None, release=False)      # a commit of rows only (its sync's lease is not this test's subject)
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
HOSTILE_IDS = ["a/b\\c#d?e", "tab\there\x01", "ünïcødé@例え.jp", "%2F already escaped", "O'Brien|x"]


def link(booking_id: str, mailbox: str = "tech@contoso.example", **kw) -> Link:
    base = dict(booking_id=booking_id, mailbox=mailbox, environment=ENV, event_id="evt-1", generation=0, trigger_fingerprint="t",
                content_fingerprint="c", event_start=NOW, event_end=NOW + timedelta(hours=1), state=LinkState.LINKED)
    base.update(kw)
    return Link(**base)


def test_keys_escape_forbidden_characters_and_round_trip():
    for value in HOSTILE_IDS:
        k = key(value)
        assert not any(ch in k for ch in "/\\#?") and all(ord(ch) >= 32 for ch in k)
        assert unkey(k) == value.lower()


async def test_mailbox_round_trip_and_field_merge(state_store):
    m = Mailbox("tech@contoso.example", ENV, approved=True, test_status=MailboxTestStatus.SUCCESS, time_zone="Pacific Standard Time",
                filters=(SyncFilter("north", territories=frozenset({"North"})),))
    await state_store.mailboxes.put(m)
    await state_store.mailboxes.update(m.address, last_outcome="synced", counts={"created": 3})
    record = await state_store.mailboxes.get(m.address)
    assert record.mailbox == m and record.last_outcome == "synced" and record.counts["created"] == 3 and not record.unreadable
    await state_store.mailboxes.put(replace(m, approved=False))
    record = await state_store.mailboxes.get(m.address)
    assert record.last_outcome == "synced" and not record.mailbox.approved       # a status change keeps the cycle fields
    assert [r.address for r in await state_store.mailboxes.all()] == [m.address]
    with pytest.raises(TypeError):                                                 # only a record's own fields are written
        await state_store.mailboxes.update(m.address, last_outcom="typo")


async def test_concurrent_field_merges_all_land_in_order_and_a_missing_mailbox_stays_missing(state_store):
    """Many syncs end together (Table Storage sends their merges in shared transactions): each lands, two merges into
    one row land in the order made, and a merge into a mailbox removed meanwhile brings back no fragment."""
    addresses = [f"tech{i:03d}@contoso.example" for i in range(130)]
    for a in addresses:
        await state_store.mailboxes.put(Mailbox(a, ENV, approved=True))
    merges = [state_store.mailboxes.update(a, last_outcome=f"synced {i}") for i, a in enumerate(addresses)]
    merges.insert(60, state_store.mailboxes.update("gone@contoso.example", last_outcome="synced"))
    merges.append(state_store.mailboxes.update(addresses[0], last_outcome="second", linked_count=3))
    await asyncio.gather(*merges)
    rows = {r.address: r for r in await state_store.mailboxes.all()}
    assert sorted(rows) == addresses
    assert [rows[a].last_outcome for a in addresses[1:]] == [f"synced {i}" for i in range(1, 130)]
    assert rows[addresses[0]].last_outcome == "second" and rows[addresses[0]].linked_count == 3


@pytest.mark.parametrize("booking_id", HOSTILE_IDS)
async def test_links_with_any_id_round_trip(state_store, booking_id):
    saved = (await state_store.partitions.write_links([link(booking_id, mailbox="odd/mail#box@x.example")]))[0]
    got = await state_store.partitions.links("odd/mail#box@x.example")
    assert list(got) == [booking_id.lower()] and got[booking_id.lower()].event_id == "evt-1"
    assert saved.etag


async def test_link_writes_are_guarded_by_etag(state_store):
    first = (await state_store.partitions.write_links([link("b1")]))[0]
    with pytest.raises(StoreConflict):
        await state_store.partitions.write_links([link("b1")])            # a second create of the same link
    updated = (await state_store.partitions.write_links([replace(first, generation=1)]))[0]
    with pytest.raises(StoreConflict):
        await state_store.partitions.write_links([replace(first, generation=2)])   # stale etag: someone else wrote since
    with pytest.raises(StoreConflict):
        await state_store.partitions.delete_link(first)
    await state_store.partitions.delete_link(updated)
    assert await state_store.partitions.links("tech@contoso.example") == {}


async def test_put_links_chunks_over_100_in_one_partition(state_store):
    await state_store.partitions.write_links([link(f"b{i:03d}") for i in range(130)])
    saved = await state_store.partitions.links("tech@contoso.example")
    assert len(saved) == 130 and all(l.etag for l in saved.values())
    await state_store.partitions.write_links([replace(l, generation=1) for l in saved.values()])
    assert {l.generation for l in (await state_store.partitions.links("tech@contoso.example")).values()} == {1}
    with pytest.raises(StoreConflict):                                           # the etags moved on
        await state_store.partitions.write_links([replace(l, generation=2) for l in saved.values()])
    assert len(await state_store.index.holders(ENV, [f"b{i:03d}" for i in range(130)])) == 130


async def test_booking_index_routes_by_booking(state_store):
    (await state_store.partitions.write_links([link("b1", "a@x.example")]))[0]
    (await state_store.partitions.write_links([link("b1", "b@x.example")]))[0]
    (await state_store.partitions.write_links([link("b2", "a@x.example")]))[0]
    assert await state_store.index.holders(ENV, ["b1", "b3"]) == {"b1": {"a@x.example", "b@x.example"}}
    assert await state_store.index.all_holders(ENV) == {"b1": {"a@x.example", "b@x.example"}, "b2": {"a@x.example"}}
    await state_store.partitions.delete_link((await state_store.partitions.links("b@x.example"))["b1"])
    assert await state_store.index.holders(ENV, ["b1"]) == {"b1": {"a@x.example"}}


async def test_pending_latest_wins_and_clear_keeps_newer(state_store):
    await state_store.mailboxes.put(Mailbox("a@x.example", ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
    await state_store.partitions.observe({"a@x.example": {"b1": {"v": 1}, "b2": None}})
    first = await state_store.partitions.observations("a@x.example")
    assert {p.booking_id: p.deleted for p in first} == {"b1": False, "b2": True}
    await state_store.partitions.observe({"a@x.example": {"b1": {"v": 2}}})      # arrives while the sync works
    await state_store.partitions.commit("a@x.example", MailboxCommit(NO_LEASE, consumed=first))
    left = await state_store.partitions.observations("a@x.example")
    assert [(p.booking_id, p.booking) for p in left] == [("b1", {"v": 2})]
    assert await with_work(state_store) == {"a@x.example"}
    assert await state_store.partitions.links("a@x.example") == {}                 # observations are not links


async def test_pending_marks_say_which_mailboxes_have_work(state_store):
    """A sync records the mark it read before its observations: the mailbox has work again only when a later
    observation came (a new mark) or the sync left some behind."""
    for address in ("a@x.example", "b@x.example"):
        await state_store.mailboxes.put(Mailbox(address, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
    await state_store.partitions.observe({"a@x.example": {"b1": {"v": 1}}, "b@x.example": {"b2": None}, "c@x.example": {}})
    assert await with_work(state_store) == {"a@x.example", "b@x.example"}
    seen = (await state_store.mailboxes.get("a@x.example")).pending_mark
    await state_store.partitions.observe({"a@x.example": {"b3": {"v": 3}}})      # after the sync read the row
    await state_store.mailboxes.update("a@x.example", consumed_mark=seen, pending_left=0)
    assert "a@x.example" in await with_work(state_store)       # b3 came after the mark it read
    seen = (await state_store.mailboxes.get("b@x.example")).pending_mark
    await state_store.mailboxes.update("b@x.example", consumed_mark=seen, pending_left=1)
    assert "b@x.example" in await with_work(state_store)       # it left one behind
    await state_store.mailboxes.update("b@x.example", pending_left=0)
    assert await with_work(state_store) == {"a@x.example"}
    await state_store.mailboxes.update_many(["a@x.example", "gone@x.example"], needs_initial_read=True)
    await state_store.mailboxes.update("gone2@x.example", last_outcome="synced")
    assert (await state_store.mailboxes.get("a@x.example")).needs_initial_read is True
    assert [r.address for r in await state_store.mailboxes.all()] == ["a@x.example", "b@x.example"]   # no fragment rows


async def test_mailbox_state_reads_links_observations_errors_and_lease_together(state_store):
    box = "tech@contoso.example"
    await state_store.partitions.write_links([link("b1"), link("b2")])
    await state_store.partitions.observe({box: {"b1": {"v": 1}, "b3": None}})
    await state_store.partitions.commit(box, MailboxCommit(NO_LEASE, errors={"b2": {"action": "update", "reason": "changed", "error": "rejected by Graph: 400"}}))
    state = await state_store.partitions.load(box)
    assert set(state.links) == {"b1", "b2"} and {p.booking_id for p in state.pending} == {"b1", "b3"}
    assert state.errors == {"b2"} and state.lease is None
    assert (await state_store.partitions.last_error(box, "b2"))["error"] == "rejected by Graph: 400"


async def test_a_claim_holds_against_others_and_against_a_read_made_before_a_commit(state_store):
    box = "tech@contoso.example"
    first = await state_store.partitions.load(box)
    claimed = await state_store.partitions.claim(box, "h1", NOW, 30, first.lease, [replace(link("b1"), state=LinkState.CREATING, event_id=None)])
    assert claimed is not None
    lease, intents = claimed
    assert intents[0].etag and await state_store.index.holders(ENV, ["b1"]) == {"b1": {box}}
    assert await state_store.partitions.claim(box, "h2", NOW, 30, (await state_store.partitions.load(box)).lease) is None     # held
    stale = await state_store.partitions.load(box)
    await state_store.partitions.commit(box, MailboxCommit(LeaseHeld(lease), puts=[replace(intents[0], state=LinkState.LINKED, event_id="e1")]))
    # released, but h2's read came before that commit: its claim must fail, or it would plan against old links
    assert await state_store.partitions.claim(box, "h2", NOW, 30, stale.lease) is None
    fresh = await state_store.partitions.load(box)
    assert fresh.links["b1"].state == LinkState.LINKED and fresh.lease is not None and not fresh.lease.holder
    again = await state_store.partitions.claim(box, "h2", NOW, 30, fresh.lease)
    assert again is not None
    assert await state_store.partitions.claim(box, "h3", NOW + timedelta(seconds=10), 30, again[0]) is None    # h2 holds it
    assert await state_store.partitions.claim(box, "h3", NOW + timedelta(seconds=31), 30, again[0]) is not None  # expired: free


async def test_a_commit_keeps_newer_observations_and_records_errors(state_store):
    box = "tech@contoso.example"
    await state_store.partitions.write_links([link("b1"), link("b2")])
    await state_store.partitions.observe({box: {"b1": {"v": 1}, "b2": {"v": 1}}})
    await state_store.partitions.commit(box, MailboxCommit(NO_LEASE, errors={"b1": {"action": "update", "reason": "changed", "error": "transient: 503"}}))
    state = await state_store.partitions.load(box)
    lease, _ = await state_store.partitions.claim(box, "h1", NOW, 30, state.lease)
    await state_store.partitions.observe({box: {"b2": {"v": 2}}})               # a newer observation while Graph works
    await state_store.partitions.commit(box, MailboxCommit(LeaseHeld(lease),
        puts=[replace(state.links["b1"], generation=1)], deletes=[state.links["b2"]], unindex=[state.links["b2"]],
        consumed=state.pending, errors={"b1": {"action": "update", "reason": "changed", "error": None},
                                          "b2": {"action": "delete", "reason": "deleted", "error": "rejected by Graph: 400"}},
        known_errors=state.errors))
    after = await state_store.partitions.load(box)
    assert set(after.links) == {"b1"} and after.links["b1"].generation == 1
    assert [(p.booking_id, p.booking) for p in after.pending] == [("b2", {"v": 2})]
    assert after.errors == {"b2"} and after.lease is not None and not after.lease.holder
    assert await state_store.index.holders(ENV, ["b1", "b2"]) == {"b1": {box}}
    with pytest.raises(StoreConflict):                                  # a link written since the read: nothing of it
        await state_store.partitions.commit(box, MailboxCommit(NO_LEASE, puts=[replace(state.links["b1"], generation=2)]))


async def test_an_unclaimed_commit_holds_only_against_the_lease_as_read_and_leaves_it_changed(state_store):
    """A sync that calls no service commits without a claim (LeaseAsRead): one transaction conditioned on the lease
    row as read. Written, it moves the lease's ETag, so a claim from an earlier read fails as after a claimed commit."""
    box = "tech@contoso.example"
    await state_store.partitions.write_links([link("b1"), link("b2")])
    await state_store.partitions.observe({box: {"b1": None, "b2": {"v": 1}}})
    never_leased = await state_store.partitions.load(box)
    assert never_leased.lease is None
    assert await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(never_leased.lease, "h9", NOW), deletes=[never_leased.links["b1"]], consumed=never_leased.pending))
    after = await state_store.partitions.load(box)
    assert set(after.links) == {"b2"} and after.pending == [] and after.lease is not None and not after.lease.holder
    assert await state_store.partitions.claim(box, "h2", NOW, 30, never_leased.lease) is None     # its read came before the commit
    # with a lease row: a claim made since the read, or a newer observation, leaves the commit unwritten
    await state_store.partitions.observe({box: {"b2": {"v": 2}}})
    read = await state_store.partitions.load(box)
    lease, _ = await state_store.partitions.claim(box, "h1", NOW, 30, read.lease)
    assert not await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(read.lease, "h9", NOW), deletes=[read.links["b2"]], consumed=read.pending))
    await state_store.partitions.commit(box, MailboxCommit(LeaseHeld(lease)))
    read = await state_store.partitions.load(box)
    await state_store.partitions.observe({box: {"b2": {"v": 3}}})
    assert not await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(read.lease, "h9", NOW), deletes=[read.links["b2"]], consumed=read.pending))
    unchanged = await state_store.partitions.load(box)
    assert set(unchanged.links) == {"b2"} and [p.booking for p in unchanged.pending] == [{"v": 3}]
    assert unchanged.lease == read.lease
    # as read, it is written: the lease stays free under a new ETag
    assert await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(unchanged.lease, "h9", NOW), deletes=[unchanged.links["b2"]], consumed=unchanged.pending))
    done = await state_store.partitions.load(box)
    assert done.links == {} and done.pending == [] and not done.lease.holder and done.lease.etag != unchanged.lease.etag
    assert await state_store.partitions.claim(box, "h3", NOW, 30, unchanged.lease) is None
    assert await state_store.partitions.claim(box, "h3", NOW, 30, done.lease) is not None


async def test_an_unclaimed_commit_too_large_for_one_transaction_is_made_all_the_same(state_store):
    """How many transactions a commit takes is the adapter's (Table Storage's take 100 rows): a commit conditioned on the
    lease as read is made whole, or not at all, whatever its size."""
    box = "tech@contoso.example"
    await state_store.partitions.observe({box: {f"b{i:03d}": None for i in range(150)}})
    state = await state_store.partitions.load(box)
    assert await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(state.lease, "h9", NOW), consumed=state.pending))
    after = await state_store.partitions.load(box)
    assert after.pending == [] and after.lease is not None and not after.lease.holder
    assert await state_store.partitions.claim(box, "h1", NOW, 30, state.lease) is None           # read before that commit
    await state_store.partitions.observe({box: {"b000": None}})
    read = await state_store.partitions.load(box)
    assert await state_store.partitions.claim(box, "h1", NOW, 30, read.lease) is not None
    assert not await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(read.lease, "h9", NOW), consumed=read.pending))


async def test_an_unclaimed_commit_never_frees_a_lease_another_holder_still_holds(state_store):
    """As a claim is refused, so is an unclaimed commit against a lease another holder holds and has not let expire,
    even when the read is the current row: it writes nothing. Expired, the lease is free to release."""
    box = "tech@contoso.example"
    await state_store.partitions.observe({box: {"b1": None}})
    assert await state_store.partitions.claim(box, "h1", NOW, 30, (await state_store.partitions.load(box)).lease) is not None
    read = await state_store.partitions.load(box)
    assert read.lease.holder == "h1"
    assert not await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(read.lease, "h2", NOW), consumed=read.pending))
    held = await state_store.partitions.load(box)
    assert held.lease == read.lease and len(held.pending) == 1
    assert await state_store.partitions.commit(box, MailboxCommit(LeaseAsRead(read.lease, "h2", NOW + timedelta(seconds=31)), consumed=read.pending))
    after = await state_store.partitions.load(box)
    assert after.pending == [] and not after.lease.holder


async def test_a_large_commit_goes_in_several_transactions(state_store):
    box = "tech@contoso.example"
    saved = await state_store.partitions.write_links([link(f"b{i:03d}") for i in range(120)])
    await state_store.partitions.observe({box: {f"b{i:03d}": {"i": i} for i in range(120)}})
    state = await state_store.partitions.load(box)
    lease, _ = await state_store.partitions.claim(box, "h1", NOW, 30, state.lease)
    await state_store.partitions.commit(box, MailboxCommit(LeaseHeld(lease), puts=[replace(x, generation=5) for x in saved], consumed=state.pending))
    after = await state_store.partitions.load(box)
    assert {x.generation for x in after.links.values()} == {5} and after.pending == [] and not after.lease.holder


async def test_index_rows_of_deleted_bookings_go(state_store):
    (await state_store.partitions.write_links([link("b1", "a@x.example")]))[0]
    (await state_store.partitions.write_links([link("b1", "b@x.example")]))[0]
    (await state_store.partitions.write_links([link("b2", "a@x.example")]))[0]
    await state_store.index.remove(ENV, {"b1": {"a@x.example", "b@x.example"}, "b9": {"a@x.example"}})
    assert await state_store.index.all_holders(ENV) == {"b2": {"a@x.example"}}


async def test_index_and_mailbox_writes_over_100_rows_with_a_row_gone(state_store):
    """Several ≤100-row transactions of one call go together; the one holding a missing row falls back row by row
    without touching the others."""
    boxes = [f"t{i:03d}@x.example" for i in range(230)]
    await state_store.partitions.write_links([link(f"b{i:03d}", m) for i, m in enumerate(boxes)])
    for m in boxes:
        await state_store.mailboxes.put(Mailbox(m, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
    await state_store.index.remove(ENV, {f"b{i:03d}": {m, "never@x.example"} if i == 150 else {m}
                                            for i, m in enumerate(boxes) if i % 2 == 0})
    assert await state_store.index.all_holders(ENV) == {f"b{i:03d}": {m} for i, m in enumerate(boxes) if i % 2}
    await state_store.mailboxes.update_many([*boxes, "gone@x.example"], needs_initial_read=True)
    rows = await state_store.mailboxes.all()
    assert [r.address for r in rows] == boxes and all(r.needs_initial_read is True for r in rows)


async def test_pending_transactions_over_100(state_store):
    await state_store.partitions.observe({"a@x.example": {f"b{i}": {"i": i} for i in range(250)}})
    rows = await state_store.partitions.observations("a@x.example")
    assert len(rows) == 250
    await state_store.partitions.commit("a@x.example", MailboxCommit(NO_LEASE, consumed=rows))
    assert await state_store.partitions.observations("a@x.example") == []


async def test_cursor_is_guarded(state_store):
    await state_store.cursors.put(ENV, {"bookableresourcebookings": "d1"}, NOW, None)
    cursor = await state_store.cursors.get(ENV)
    assert cursor.delta_links == {"bookableresourcebookings": "d1"} and cursor.horizon == NOW
    await state_store.cursors.put(ENV, {"bookableresourcebookings": "d2"}, NOW, cursor.etag)
    with pytest.raises(StoreConflict):
        await state_store.cursors.put(ENV, {"bookableresourcebookings": "d3"}, NOW, cursor.etag)
    with pytest.raises(StoreConflict):
        await state_store.cursors.put(ENV, {}, NOW, None)
    assert (await state_store.cursors.get(ENV)).delta_links == {"bookableresourcebookings": "d2"}


async def test_lease_has_one_holder_at_a_time(state_store):
    results = await asyncio.gather(*(state_store.leases.acquire("cycle", f"h{i}", NOW, 60) for i in range(5)))
    assert sum(results) == 1
    holder = next(f"h{i}" for i, ok in enumerate(results) if ok)
    other = "h9"
    assert not await state_store.leases.acquire("cycle", other, NOW + timedelta(seconds=30), 60)
    assert await state_store.leases.acquire("cycle", other, NOW + timedelta(seconds=61), 60)     # expired
    await state_store.leases.release("cycle", holder)                                               # not the holder any more
    assert not await state_store.leases.acquire("cycle", holder, NOW + timedelta(seconds=62), 60)


async def test_r_t1_a_lease_is_released_even_when_its_last_renewal_landed_unseen(state_store):
    """KeptLease stops its keeper before it releases; a renewal cancelled in flight may still have reached the store,
    so the holder's last known ETag is stale. The release must free the lease all the same (the row names this
    holder), or the next cycle is refused for a whole TTL."""
    from sync.adapters.tables import TableState
    unseen = TableState(state_store.access.service, state_store.access.prefix) if isinstance(state_store, TableState) else state_store
    for name in ("cycle", "another"):
        assert await state_store.leases.acquire(name, "h1", NOW, 60)
        assert await unseen.leases.renew(name, "h1", NOW + timedelta(seconds=20), 60)    # the renewal whose answer was lost
        await state_store.leases.release(name, "h1")
        assert await state_store.leases.acquire(name, "h2", NOW + timedelta(seconds=21), 60), name
        await state_store.leases.release(name, "h2")


async def test_runs_newest_first(state_store):
    for i in range(3):
        await state_store.runs.record({"id": f"r{i}", "started": (NOW + timedelta(minutes=15 * i)).isoformat(), "outcome": "ok"})
    assert [r["id"] for r in await state_store.runs.recent(2)] == ["r2", "r1"]


async def test_r_t3_wake_rows_never_lose_a_change_recorded_while_a_sync_decides_to_stop(state_store):
    """WakeStore: a change during a running sync marks it dirty; the sync ends only when nothing was marked."""
    box = "tech@contoso.example"
    assert await state_store.wakes.request(box, NOW, 600) == 1                   # nothing runs: claim generation 1
    assert await state_store.wakes.request(box, NOW, 600) is None                # runs: marked dirty, nothing to start
    assert await state_store.wakes.request(box, NOW, 600) is None
    assert await state_store.wakes.finish(box, 1, NOW) is False                  # a change came in: go round again
    assert await state_store.wakes.finish(box, 1, NOW) is True                   # nothing since: ended
    assert await state_store.wakes.request(box, NOW, 600) == 2                   # the next change starts a new one
    assert await state_store.wakes.request(box, NOW, 600) is None
    assert await state_store.wakes.finish(box, 2, NOW, release=True) is True     # a failed sync hands over
    assert await state_store.wakes.request(box, NOW, 600) == 3


async def test_r_t3_a_wake_claim_left_by_a_dead_sync_is_taken_over(state_store):
    box = "tech@contoso.example"
    assert await state_store.wakes.request(box, NOW, 600) == 1
    assert await state_store.wakes.request(box, NOW + timedelta(seconds=601), 600) == 2   # stale: taken over
    assert await state_store.wakes.finish(box, 1, NOW + timedelta(seconds=602)) is True   # the old one is simply done
    assert await state_store.wakes.request(box, NOW + timedelta(seconds=603), 600) is None  # generation 2 still runs


async def test_audit_and_runs_list_newest_first_even_within_one_millisecond(state_store):
    base = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for i in range(5):
        at = base + timedelta(microseconds=100 * i)                       # five operations inside one millisecond
        await state_store.audit.record({"at": at.isoformat(), "operation": f"op{i}", "result": "ok"})
        await state_store.runs.record({"id": f"run{i}", "started": at.isoformat(), "finished": at.isoformat(), "outcome": "succeeded"})
    assert [e["operation"] for e in await state_store.audit.recent(5)] == ["op4", "op3", "op2", "op1", "op0"]
    assert [r["id"] for r in await state_store.runs.recent(5)] == ["run4", "run3", "run2", "run1", "run0"]


async def test_pending_holders_name_the_mailboxes_whose_waiting_observations_hold_a_booking(state_store):
    for address in ("a@x.example", "b@x.example", "c@x.example"):
        await state_store.mailboxes.put(Mailbox(address, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
    await state_store.partitions.observe({"a@x.example": {"b1": {"v": 1}, "b2": None}, "b@x.example": {"b1": {"v": 1}},
                                         "c@x.example": {"b3": {"v": 3}}})
    await state_store.partitions.write_links([link("b9", "c@x.example")])         # a link is not a waiting observation
    assert await state_store.partitions.waiting_holders(await with_work(state_store), ["B1", "b2", "b9", "nope"]) == {"b1": {"a@x.example", "b@x.example"}, "b2": {"a@x.example"}}
    seen = (await state_store.mailboxes.get("b@x.example")).pending_mark
    await state_store.partitions.commit("b@x.example", MailboxCommit(NO_LEASE, consumed=await state_store.partitions.observations("b@x.example")))
    await state_store.mailboxes.update("b@x.example", consumed_mark=seen, pending_left=0)
    assert await state_store.partitions.waiting_holders(await with_work(state_store), ["b1"]) == {"b1": {"a@x.example"}}
    assert await state_store.partitions.waiting_holders(["a@x.example"], []) == {}
