"""PendingStore's inline sets: collect's observations carried on the mailbox row, in the merge that marks it, instead
of rows of the mailbox's partition. The fake, the Table double and Azurite behave the same (the `state_store`
fixture runs each test against all three)."""
from __future__ import annotations

from datetime import UTC, datetime

from sync.core.domain import Mailbox, MailboxTestStatus
from sync.ports import MailboxCommit, has_pending_work, inline_set, with_inline

ENV = "https://contoso.crm.dynamics.com"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
A, B = "a@x.example", "b@x.example"


async def _enabled(store, *addresses: str) -> None:
    for address in addresses:
        await store.put_mailbox(Mailbox(address, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))


async def _listed(store) -> dict:
    return {r["address"]: r for r in await store.list_mailboxes()}


async def _rows_of(store, address: str) -> list[str]:
    """The observations kept as rows of the mailbox's partition (not those its row carries)."""
    return sorted(p["booking_id"] for p in (await store.mailbox_state(address)).pending)


async def _acknowledge(store, address: str, holder: str = "sync-1") -> MailboxCommit:
    """What a sync does with a mailbox's inline set: claims, commits it as applied, and acknowledges it on the row."""
    row = await store.get_mailbox_row(address)
    state = with_inline(await store.mailbox_state(address), row)
    lease, _ = await store.claim_mailbox(address, holder, NOW, 30, state.lease)
    commit = MailboxCommit(consumed=list(state.pending), inline_done=state.inline_mark, release=lease)
    await store.commit_mailbox(address, commit)
    await store.update_mailbox_fields(address, consumed_mark=row["pending_mark"], pending_left=0, consumed_inline=state.inline_mark)
    return commit


async def test_observations_ride_on_the_listed_row_and_are_found_as_work(state_store):
    await _enabled(state_store, A, B)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}, "b2": None}, B: {"b3": {"v": 3}}}, await _listed(state_store))
    assert await _rows_of(state_store, A) == [] and await _rows_of(state_store, B) == []       # no row written
    assert await state_store.pending_mailboxes() == {A, B}
    assert sorted((p["booking_id"], p["deleted"], p["booking"]) for p in await state_store.pending(A)) == [
        ("b1", False, {"v": 1}), ("b2", True, None)]
    assert await state_store.pending_holders([A, B], ["b2", "b3"]) == {"b2": {A}, "b3": {B}}


async def test_a_row_changed_since_it_was_listed_gets_rows_instead(state_store):
    """The inline merge is conditioned on the row as listed: a status merge landing in between (a webhook's sync)
    sends that mailbox's observations to its partition, and nothing is lost."""
    await _enabled(state_store, A, B)
    listed = await _listed(state_store)
    await state_store.update_mailbox_fields(A, last_outcome="synced")
    await state_store.add_pending_batch({A: {"b1": {"v": 1}}, B: {"b3": {"v": 3}}}, listed)
    assert await _rows_of(state_store, A) == ["b1"] and inline_set(await state_store.get_mailbox_row(A)) is None
    assert await _rows_of(state_store, B) == [] and inline_set(await state_store.get_mailbox_row(B)) is not None
    assert await state_store.pending_mailboxes() == {A, B}


async def test_a_set_not_yet_acknowledged_is_never_overwritten(state_store):
    """Until a sync acknowledges a row's inline set, collect's next observations go to rows; once it has, the next
    set rides on the row again, and an acknowledged set on a mailbox with nothing new is cleared."""
    await _enabled(state_store, A, B)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}}, B: {"b3": {"v": 3}}}, await _listed(state_store))
    await state_store.add_pending_batch({A: {"b2": {"v": 2}}}, await _listed(state_store))
    assert await _rows_of(state_store, A) == ["b2"]
    assert [p["booking_id"] for p in inline_set(await state_store.get_mailbox_row(A))[1]] == ["b1"]     # still there
    await _acknowledge(state_store, A)
    await _acknowledge(state_store, B)
    assert await state_store.pending(A) == [] and await state_store.pending(B) == []
    assert await state_store.pending_mailboxes() == set()
    await state_store.add_pending_batch({A: {"b4": {"v": 4}}}, await _listed(state_store))
    assert await _rows_of(state_store, A) == [] and [p["booking_id"] for p in await state_store.pending(A)] == ["b4"]
    assert inline_set(await state_store.get_mailbox_row(B)) is None                     # B's acknowledged set, cleared


async def test_the_lease_row_records_the_applied_set_through_every_write(state_store):
    """Applied once: the commit records the set's mark on the lease row with the links; a claim, a renewal and a
    release carry it on, so a sync that reads the row before its acknowledgement lands ignores the set."""
    await _enabled(state_store, A)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}}}, await _listed(state_store))
    row = await state_store.get_mailbox_row(A)
    mark = row["inline_mark"]
    state = with_inline(await state_store.mailbox_state(A), row)
    lease, _ = await state_store.claim_mailbox(A, "sync-1", NOW, 30, state.lease)
    await state_store.commit_mailbox(A, MailboxCommit(consumed=list(state.pending), inline_done=mark, release=lease))
    after = await state_store.mailbox_state(A)
    assert after.lease.inline_done == mark and with_inline(after, row).pending == []
    lease, _ = await state_store.claim_mailbox(A, "sync-2", NOW, 30, after.lease)
    lease = await state_store.renew_mailbox(A, lease, NOW, 30)
    await state_store.commit_mailbox(A, MailboxCommit(release=lease))
    assert (await state_store.mailbox_state(A)).lease.inline_done == mark
    again = await state_store.mailbox_state(A)
    assert await state_store.commit_unclaimed(A, MailboxCommit(), again.lease, "sync-3", NOW)
    assert (await state_store.mailbox_state(A)).lease.inline_done == mark
    assert has_pending_work(await state_store.get_mailbox_row(A))        # never acknowledged: still work, and harmless


async def test_a_kept_inline_observation_becomes_a_row_unless_a_newer_one_came(state_store):
    """What a sync keeps of an inline set (a failed call) is written into the partition in its commit; an observation
    written there since the sync's read is newer, and stays."""
    await _enabled(state_store, A)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}, "b2": {"v": 2}}}, await _listed(state_store))
    row = await state_store.get_mailbox_row(A)
    state = with_inline(await state_store.mailbox_state(A), row)
    await state_store.add_pending(A, {"b2": {"v": "webhook"}})                   # after the sync's read
    lease, _ = await state_store.claim_mailbox(A, "sync-1", NOW, 30, state.lease)
    kept = list(state.pending)
    await state_store.commit_mailbox(A, MailboxCommit(inline_done=state.inline_mark, kept_inline=kept, release=lease))
    rows = {p["booking_id"]: p["booking"] for p in (await state_store.mailbox_state(A)).pending}
    assert rows == {"b1": {"v": 1}, "b2": {"v": "webhook"}}


async def test_of_an_inline_and_a_row_observation_of_one_booking_the_later_stands(state_store):
    """A webhook's row written before collect's inline set is older and goes with the set when it is applied; one
    written after is newer and stands."""
    await _enabled(state_store, A)
    await state_store.add_pending(A, {"b1": {"v": "before"}})
    await state_store.update_mailbox_fields(A, consumed_mark=(await state_store.get_mailbox_row(A))["pending_mark"])
    await state_store.add_pending_batch({A: {"b1": {"v": "inline"}, "b2": {"v": "inline"}}}, await _listed(state_store))
    assert {p["booking_id"]: p["booking"] for p in await state_store.pending(A)} == {"b1": {"v": "inline"}, "b2": {"v": "inline"}}
    await state_store.add_pending(A, {"b2": {"v": "after"}})
    assert {p["booking_id"]: p["booking"] for p in await state_store.pending(A)} == {"b1": {"v": "inline"}, "b2": {"v": "after"}}
    await _acknowledge(state_store, A)
    assert await state_store.pending(A) == [] and await _rows_of(state_store, A) == []


async def test_the_generic_lease_calls_on_a_mailbox_lease_keep_the_applied_set(state_store):
    """LeaseStore's acquire, renew and release of `mailbox:<address>` write the same lease row: they keep its record."""
    await _enabled(state_store, A)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}}}, await _listed(state_store))
    mark = (await _acknowledge(state_store, A)).inline_done
    assert await state_store.acquire_lease(f"mailbox:{A}", "other-host", NOW, 30)
    assert await state_store.renew_lease(f"mailbox:{A}", "other-host", NOW, 30)
    assert (await state_store.mailbox_state(A)).lease.inline_done == mark
    await state_store.release_lease(f"mailbox:{A}", "other-host")
    lease = (await state_store.mailbox_state(A)).lease
    assert lease.inline_done == mark and not lease.holder


async def test_a_commit_tells_whether_its_release_recorded_the_applied_set(state_store):
    """Only a commit whose release lands records `inline_done`: one whose lease was taken meanwhile says so."""
    await _enabled(state_store, A)
    await state_store.add_pending_batch({A: {"b1": {"v": 1}}}, await _listed(state_store))
    row = await state_store.get_mailbox_row(A)
    state = with_inline(await state_store.mailbox_state(A), row)
    lease, _ = await state_store.claim_mailbox(A, "sync-1", NOW, 30, state.lease)
    taken, _ = await state_store.claim_mailbox(A, "sync-2", NOW.replace(hour=13), 30, (await state_store.mailbox_state(A)).lease)
    commit = MailboxCommit(consumed=list(state.pending), inline_done=state.inline_mark, release=lease)
    assert await state_store.commit_mailbox(A, commit) is False
    assert (await state_store.mailbox_state(A)).lease.inline_done == ""
    assert await state_store.commit_mailbox(A, MailboxCommit(consumed=list(state.pending), inline_done=state.inline_mark,
                                                             release=taken)) is True
    assert (await state_store.mailbox_state(A)).lease.inline_done == state.inline_mark


async def test_a_set_too_large_to_ride_on_the_row_gets_rows(state_store):
    """Every listing of the mailbox rows carries their sets, so a large one (a newly enabled mailbox's window) goes to
    the mailbox's partition, and the row stays small."""
    from sync.ports import INLINE_LIMIT
    await _enabled(state_store, A, B)
    large = {f"b{i}": {"summary": "x" * 1000} for i in range(INLINE_LIMIT // 1000 + 1)}
    await state_store.add_pending_batch({A: large, B: {"b1": {"v": 1}}}, await _listed(state_store))
    assert await _rows_of(state_store, A) == sorted(large) and inline_set(await state_store.get_mailbox_row(A)) is None
    assert await _rows_of(state_store, B) == [] and await state_store.pending_mailboxes() == {A, B}
